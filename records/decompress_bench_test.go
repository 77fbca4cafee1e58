package records

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// BenchmarkDecompressCompare compares the pooled decoders here with kgo's
// DefaultDecompressor on the same 1 MiB batches.
func BenchmarkDecompressCompare(b *testing.B) {
	for _, codec := range []int16{1, 3, 4} {
		raw, body := benchBatch(b, codec)
		var h kmsg.RecordBatch
		h.ReadFrom(raw)
		d := kgo.DefaultDecompressor()
		b.Run(Codec(codec)+"/kgo", func(b *testing.B) {
			b.SetBytes(int64(body))
			for b.Loop() {
				if _, err := d.Decompress(h.Records, kgo.CompressionCodecType(codec)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(Codec(codec)+"/ours", func(b *testing.B) {
			b.SetBytes(int64(body))
			var buf []byte
			for b.Loop() {
				var err error
				if buf, err = decompress(buf[:0], h.Records, codec, 1<<30); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
