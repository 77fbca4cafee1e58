package records

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// FuzzRewrite: Rewrite never panics; when fn changes nothing the output is
// the input; when fn changes records the output is well formed (CRCs verify,
// it parses and rewrites again with the same record counts).
func FuzzRewrite(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	rw := &Rewriter{MaxDecompressedBytes: 4 << 20}
	f.Fuzz(func(t *testing.T, in []byte) {
		inCopy := bytes.Clone(in)
		_ = Walk(in, func(b *Batch) error { // must not panic either
			b.IsControl()
			b.CRCValid()
			b.Codec()
			return rw.Records(b, func(r *Record) error { r.Offset(); r.Timestamp(); r.Header("idx"); return nil })
		})

		n1 := 0
		out, changed, err := rw.Rewrite(nil, in, func(r *Record) (bool, error) { n1++; return false, nil })
		if err == nil && (changed || !bytes.Equal(out, in) || (len(in) > 0 && &out[0] != &in[0])) {
			t.Fatalf("nothing changed but output differs from input")
		}
		errUnchanged := err

		n2 := 0
		out, changed, err = rw.Rewrite([]byte("dst"), in, func(r *Record) (bool, error) {
			n2++
			if r.OffsetDelta()%2 == 1 {
				return false, nil
			}
			if r.Value != nil {
				r.Value = append(bytes.Clone(r.Value), '!')
			}
			r.AddHeader("strait", nil)
			return true, nil
		})
		if !bytes.Equal(in, inCopy) {
			t.Fatal("input modified")
		}
		if (err == nil) != (errUnchanged == nil) {
			t.Fatalf("errors differ: unchanged fn %v, changing fn %v", errUnchanged, err)
		}
		if err != nil {
			return
		}
		if n1 != n2 {
			t.Fatalf("fn called %d then %d times", n1, n2)
		}
		if !changed {
			if !bytes.Equal(out, in) {
				t.Fatal("changed=false but output differs")
			}
			return
		}
		if !bytes.HasPrefix(out, []byte("dst")) {
			t.Fatal("dst lost")
		}
		out = out[3:]
		// The output must be well formed: CRCs, records, counts.
		n3 := 0
		if err := Walk(out, func(b *Batch) error {
			if b.Partial || b.Magic != 2 || b.IsControl() {
				return nil
			}
			if !b.CRCValid() {
				t.Fatal("output batch CRC does not verify")
			}
			return rw.Records(b, func(r *Record) error { n3++; return nil })
		}); err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
		out2, changed2, err := rw.Rewrite(nil, out, func(r *Record) (bool, error) { n3--; return false, nil })
		if err != nil || changed2 || &out2[0] != &out[0] {
			t.Fatalf("rewriting the output: %v", err)
		}
		if n3 != 0 {
			t.Fatal("record count changed")
		}
	})
}

// fuzzSeeds returns the batches in testdata/fuzz/FuzzRewrite (added by
// go test itself) plus ones built here, so that the corpus also works when
// the directory is missing.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for codec := int16(0); codec <= 4; codec++ {
		seeds = append(seeds, buildBatch(t, codec, sampleRecords(3, 20), 0))
	}
	seeds = append(seeds, buildBatchX(t, 2, true, sampleRecords(3, 20), 0))
	two := append(buildBatch(t, 1, sampleRecords(2, 5), 0), buildBatch(t, 3, sampleRecords(2, 5), 2)...)
	seeds = append(seeds, two, two[:len(two)-7])
	ctrl := buildBatch(t, 0, []kmsg.Record{{Key: []byte{0, 0, 0, 0}, Value: []byte{0, 0, 0, 0, 0, 0}}}, 0)
	ctrl[22] |= 0x30
	fixCRC(ctrl)
	seeds = append(seeds, ctrl)
	m := kmsg.MessageV1{Magic: 1, Key: []byte("k"), Value: []byte("v")}
	legacy := m.AppendTo(nil)
	putLen(legacy, len(legacy)-12)
	seeds = append(seeds, legacy)
	nulls := []kmsg.Record{{Key: nil, Value: nil}, {Key: []byte{}, Value: []byte{}, Headers: []kmsg.Header{{Key: "h", Value: nil}}}}
	seeds = append(seeds, buildBatch(t, 0, nulls, 0), buildBatch(t, 4, nulls, 0))
	return seeds
}

// TestWriteFuzzCorpus writes the seeds to testdata/fuzz/FuzzRewrite when
// STRAIT_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("STRAIT_WRITE_CORPUS") != "1" {
		t.Skip("set STRAIT_WRITE_CORPUS=1 to regenerate")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzRewrite")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
