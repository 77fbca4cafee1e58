package records

import (
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// benchBatch is a 1 MiB batch of 1 KiB records (1024 records) with codec.
// Values are random text over a 64-letter alphabet, so compressing them
// does real work (about 6 bits of entropy per byte) without being trivial.
func benchBatch(b *testing.B, codec int16) (raw []byte, bodySize int) {
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
	recs := make([]kmsg.Record, 1024)
	for i := range recs {
		v := make([]byte, 1000)
		for j := range v {
			v[j] = alphabet[rng.IntN(64)]
		}
		recs[i] = kmsg.Record{TimestampDelta64: int64(i), TimestampDelta: int32(i), Key: []byte("key-00000"), Value: v,
			Headers: []kmsg.Header{{Key: "content-type", Value: []byte("text/plain")}}}
	}
	raw = buildBatch(b, codec, recs, 0)
	for _, r := range recs {
		bodySize += len(r.AppendTo(nil))
	}
	return raw, bodySize
}

func BenchmarkRewrite(b *testing.B) {
	for _, codec := range []int16{0, 1, 2, 3, 4} {
		raw, body := benchBatch(b, codec)
		// Same size, same statistics as the input values.
		rng := rand.New(rand.NewPCG(3, 4))
		repl := make([]byte, 1000)
		for i := range repl {
			repl[i] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"[rng.IntN(64)]
		}
		b.Run(Codec(codec)+"/replace", func(b *testing.B) {
			dst := make([]byte, 0, 2*len(raw))
			fn := func(r *Record) (bool, error) { r.Value = repl; return true, nil }
			b.SetBytes(int64(body))
			b.ReportAllocs()
			for b.Loop() {
				out, _, err := Rewrite(dst[:0], raw, fn)
				if err != nil {
					b.Fatal(err)
				}
				dst = out
			}
		})
		b.Run(Codec(codec)+"/unchanged", func(b *testing.B) {
			b.SetBytes(int64(body))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Rewrite(nil, raw, unchangedFn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
