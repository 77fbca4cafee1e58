package records

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"reflect"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The helpers here decode and build batches independently of the code
// under test where possible: decompression is kgo's, header and record
// parsing is kmsg's.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type decodedBatch struct {
	raw  []byte
	hdr  kmsg.RecordBatch
	recs []kmsg.Record // nil for control/legacy/partial
}

// splitBatches frames the input (length prefix) and decodes each complete
// magic 2 batch with kmsg and kgo's decompressor, failing on a bad CRC.
func splitBatches(t testing.TB, b []byte) []decodedBatch {
	t.Helper()
	var out []decodedBatch
	for len(b) > 0 {
		if len(b) < 12 {
			out = append(out, decodedBatch{raw: b})
			break
		}
		n := 12 + int(int32(binary.BigEndian.Uint32(b[8:])))
		if n > len(b) {
			out = append(out, decodedBatch{raw: b})
			break
		}
		d := decodedBatch{raw: b[:n]}
		b = b[n:]
		if d.raw[16] != 2 {
			out = append(out, d)
			continue
		}
		if err := d.hdr.ReadFrom(d.raw); err != nil {
			t.Fatalf("kmsg cannot read batch: %v", err)
		}
		if got := crc32.Checksum(d.raw[21:], castagnoli); got != uint32(d.hdr.CRC) {
			t.Fatalf("batch at offset %d: CRC %08x, computed %08x", d.hdr.FirstOffset, uint32(d.hdr.CRC), got)
		}
		if d.hdr.Attributes&0x20 == 0 {
			d.recs = decodeRecords(t, &d.hdr)
		}
		out = append(out, d)
	}
	return out
}

func decodeRecords(t testing.TB, hdr *kmsg.RecordBatch) []kmsg.Record {
	t.Helper()
	body, err := kgo.DefaultDecompressor().Decompress(hdr.Records, kgo.CompressionCodecType(hdr.Attributes&7))
	if err != nil {
		t.Fatalf("kgo cannot decompress %s batch: %v", Codec(hdr.Attributes), err)
	}
	var recs []kmsg.Record
	for len(body) > 0 {
		l, n := binary.Varint(body)
		if n <= 0 || int(l)+n > len(body) {
			t.Fatalf("bad record framing")
		}
		var r kmsg.Record
		if err := r.ReadFrom(body[:n+int(l)]); err != nil {
			t.Fatalf("kmsg cannot read record: %v", err)
		}
		// The length prefix must match the encoded record exactly.
		if got := len(r.AppendTo(nil)) - n; got != int(l) {
			t.Fatalf("record length prefix %d, record is %d bytes", l, got)
		}
		recs = append(recs, r)
		body = body[n+int(l):]
	}
	if len(recs) != int(hdr.NumRecords) {
		t.Fatalf("batch declares %d records, holds %d", hdr.NumRecords, len(recs))
	}
	return recs
}

// buildBatch builds a magic 2 batch of recs with codec (0-4), using kgo's
// compressor; xerial selects the xerial framing for snappy, built by hand.
func buildBatch(t testing.TB, codec int16, recs []kmsg.Record, base int64) []byte {
	return buildBatchX(t, codec, false, recs, base)
}

func buildBatchX(t testing.TB, codec int16, xerial bool, recs []kmsg.Record, base int64) []byte {
	t.Helper()
	var body []byte
	for i := range recs {
		r := recs[i]
		r.OffsetDelta = int32(i)
		r.Length = 0
		enc := r.AppendTo(nil)
		r.Length = int32(len(enc) - 1) // a 0 length prefix is one byte
		body = r.AppendTo(body)
	}
	records := body
	switch {
	case codec == 0:
	case codec == 2 && xerial:
		records = []byte{130, 83, 78, 65, 80, 80, 89, 0, 0, 0, 0, 1, 0, 0, 0, 1}
		for b := body; len(b) > 0; {
			n := min(len(b), 1000) // small blocks: several chunks
			blk := s2.EncodeSnappy(nil, b[:n])
			records = binary.BigEndian.AppendUint32(records, uint32(len(blk)))
			records = append(records, blk...)
			b = b[n:]
		}
	default:
		var cc kgo.CompressionCodec
		switch codec {
		case 1:
			cc = kgo.GzipCompression()
		case 2:
			cc = kgo.SnappyCompression()
		case 3:
			cc = kgo.Lz4Compression()
		case 4:
			cc = kgo.ZstdCompression()
		}
		c, err := kgo.DefaultCompressor(cc)
		if err != nil {
			t.Fatal(err)
		}
		out, used := c.Compress(new(bytes.Buffer), body)
		if int16(used) != codec {
			t.Fatalf("compressor used %d", used)
		}
		records = append([]byte(nil), out...)
	}
	b := kmsg.RecordBatch{
		FirstOffset:          base,
		PartitionLeaderEpoch: 7,
		Magic:                2,
		Attributes:           codec,
		LastOffsetDelta:      int32(len(recs) - 1),
		FirstTimestamp:       1700000000000,
		MaxTimestamp:         1700000000000 + int64(len(recs)),
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           int32(len(recs)),
		Records:              records,
	}
	b.Length = int32(49 + len(records))
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], castagnoli))
	return raw
}

func sameHeader(t testing.TB, in, out *kmsg.RecordBatch) {
	t.Helper()
	a, b := *in, *out
	a.Length, b.Length, a.CRC, b.CRC, a.Records, b.Records = 0, 0, 0, 0, nil, nil
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("batch header changed:\n in  %+v\n out %+v", a, b)
	}
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
