package records

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// idempotent sets producer id, epoch and base sequence on a built batch and
// fixes its CRC.
func idempotent(raw []byte, pid int64, epoch int16, seq int32, txn bool) []byte {
	var h kmsg.RecordBatch
	if err := h.ReadFrom(raw); err != nil {
		panic(err)
	}
	h.ProducerID, h.ProducerEpoch, h.FirstSequence = pid, epoch, seq
	if txn {
		h.Attributes |= attrTxn
	}
	out := h.AppendTo(nil)
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], castagnoli))
	return out
}

// grow is a rewrite callback that adds a 120-byte header to every record,
// as encryption grows it.
func grow(r *Record) (bool, error) {
	r.AddHeader("grow", bytes.Repeat([]byte{0xa5}, 120))
	return true, nil
}

func TestSplitKeepsRecordsOrderSequencesAndLimit(t *testing.T) {
	for _, codec := range []int16{0, 1, 2, 3, 4} {
		t.Run(Codec(codec), func(t *testing.T) {
			recs := make([]kmsg.Record, 300)
			for i := range recs {
				recs[i] = kmsg.Record{Key: fmt.Appendf(nil, "k%04d", i), Value: bytes.Repeat([]byte{byte(i)}, 1000), TimestampDelta64: int64(i % 7)}
			}
			startSeq := int32(math.MaxInt32 - 100) // the split crosses the wrap
			in := idempotent(buildBatch(t, codec, recs, 0), 4242, 3, startSeq, true)
			const limit = 64 << 10
			rw := Rewriter{Strict: true, SplitBytes: limit}
			out, changed, err := rw.Rewrite(nil, in, grow)
			if err != nil || !changed {
				t.Fatalf("rewrite: changed %v, err %v", changed, err)
			}
			parts := splitBatches(t, out)
			if len(parts) < 5 {
				t.Fatalf("%d batches, want the ~330 KB of records split in at least 5", len(parts))
			}
			var orig kmsg.RecordBatch
			_ = orig.ReadFrom(in)
			n := 0
			seq := startSeq
			var counts []int32
			for pi, p := range parts {
				if len(p.raw) > limit {
					t.Fatalf("batch %d is %d bytes, over the %d limit", pi, len(p.raw), limit)
				}
				h := p.hdr
				if h.ProducerID != 4242 || h.ProducerEpoch != 3 || h.Attributes != orig.Attributes || h.FirstTimestamp != orig.FirstTimestamp || h.PartitionLeaderEpoch != orig.PartitionLeaderEpoch {
					t.Fatalf("batch %d header %+v lost the producer state or attributes of %+v", pi, h, orig)
				}
				if h.FirstSequence != seq {
					t.Fatalf("batch %d base sequence %d, want %d", pi, h.FirstSequence, seq)
				}
				if h.LastOffsetDelta != h.NumRecords-1 || int(h.NumRecords) != len(p.recs) {
					t.Fatalf("batch %d: last offset delta %d, %d records declared, %d found", pi, h.LastOffsetDelta, h.NumRecords, len(p.recs))
				}
				var maxTS int64
				for j, r := range p.recs {
					if r.OffsetDelta != int32(j) {
						t.Fatalf("batch %d record %d has offset delta %d", pi, j, r.OffsetDelta)
					}
					if want := fmt.Sprintf("k%04d", n); string(r.Key) != want || !bytes.Equal(r.Value, recs[n].Value) {
						t.Fatalf("batch %d record %d is %q, want %s", pi, j, r.Key, want)
					}
					if h.FirstTimestamp+r.TimestampDelta64 != orig.FirstTimestamp+int64(n%7) {
						t.Fatalf("record %d timestamp changed", n)
					}
					if len(r.Headers) != 1 || r.Headers[0].Key != "grow" {
						t.Fatalf("record %d lost the callback's change", n)
					}
					maxTS = max(maxTS, r.TimestampDelta64)
					n++
				}
				if h.MaxTimestamp != h.FirstTimestamp+maxTS {
					t.Fatalf("batch %d max timestamp %d, records reach %d", pi, h.MaxTimestamp, h.FirstTimestamp+maxTS)
				}
				seq = incrementSequence(seq, h.NumRecords)
				counts = append(counts, h.NumRecords)
			}
			if n != len(recs) {
				t.Fatalf("%d records out, %d in", n, len(recs))
			}
			if parts[len(parts)-1].hdr.FirstSequence > startSeq {
				t.Fatalf("the sequence did not wrap: last base %d", parts[len(parts)-1].hdr.FirstSequence)
			}
			// The same input splits at the same records (a retry must).
			again, _, err := rw.Rewrite(nil, in, grow)
			if err != nil {
				t.Fatal(err)
			}
			parts2 := splitBatches(t, again)
			if len(parts2) != len(counts) {
				t.Fatalf("second split: %d batches, first %d", len(parts2), len(counts))
			}
			for i, p := range parts2 {
				if p.hdr.NumRecords != counts[i] || p.hdr.FirstSequence != parts[i].hdr.FirstSequence {
					t.Fatalf("second split differs at batch %d", i)
				}
			}
		})
	}
}

func TestSplitOnlyWhenNeeded(t *testing.T) {
	recs := []kmsg.Record{{Value: []byte("a")}, {Value: []byte("b")}}
	in := buildBatch(t, 0, recs, 0)
	out, _, err := (&Rewriter{SplitBytes: 1 << 20}).Rewrite(nil, in, grow)
	if err != nil {
		t.Fatal(err)
	}
	if got := splitBatches(t, out); len(got) != 1 || got[0].hdr.FirstSequence != -1 || got[0].hdr.NumRecords != 2 {
		t.Fatalf("a batch within the limit was split or changed: %+v", got)
	}
}

func TestSplitRecordTooLargeAlone(t *testing.T) {
	recs := []kmsg.Record{{Value: []byte("small")}, {Value: bytes.Repeat([]byte{1}, 5000)}}
	in := buildBatch(t, 0, recs, 0)
	_, _, err := (&Rewriter{SplitBytes: 4096}).Rewrite(nil, in, grow)
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("err %v, want ErrTooLarge for a record that cannot fit alone", err)
	}
}

// TestSplitMatchesRebuiltWhole: a split batch is the batch rebuilt whole
// (Rewrite without SplitBytes) cut greedily by the size of its records as
// rebuilt, each part's offset deltas renumbered from its first record, for
// callbacks that change every record, some of them, or only later ones
// (the records before the first change, and the unchanged ones after it,
// are copied with only their offset delta renumbered), with gaps in the
// offsets, and with a first offset delta that is not 0.
func TestSplitMatchesRebuiltWhole(t *testing.T) {
	for _, codec := range []int16{0, 2, 4} {
		for _, first := range []int32{0, 3} {
			for name, change := range map[string]func(i int) bool{
				"all":   func(int) bool { return true },
				"some":  func(i int) bool { return i%3 != 1 },
				"later": func(i int) bool { return i >= 40 },
			} {
				t.Run(fmt.Sprintf("%s/first%d/%s", Codec(codec), first, name), func(t *testing.T) {
					recs := make([]kmsg.Record, 200)
					for i := range recs {
						recs[i] = kmsg.Record{Key: fmt.Appendf(nil, "k%d", i), Value: bytes.Repeat([]byte{byte(i)}, 300+i*7%500), TimestampDelta64: int64(i * 5 % 13)}
					}
					in := idempotent(buildGapped(t, codec, recs, first), 9, 1, 100, false)
					fn := func() func(*Record) (bool, error) {
						i := -1
						return func(r *Record) (bool, error) {
							i++
							if !change(i) {
								return false, nil
							}
							return grow(r)
						}
					}
					whole, _, err := Rewrite(nil, in, fn())
					if err != nil {
						t.Fatal(err)
					}
					wb := splitBatches(t, whole)[0]
					const limit = 24 << 10
					out, _, err := (&Rewriter{SplitBytes: limit}).Rewrite(nil, in, fn())
					if err != nil {
						t.Fatal(err)
					}
					parts := splitBatches(t, out)
					if len(parts) < 3 {
						t.Fatalf("%d parts", len(parts))
					}
					j := 0
					for pi, p := range parts {
						// Cut where the records as rebuilt whole reach the
						// bound: they fit, with the next one they would not.
						mine := wb.recs[j : j+len(p.recs)]
						if SplitBound(codec, encodedSize(mine)) > limit {
							t.Fatalf("part %d: %d bytes of records, over the bound", pi, encodedSize(mine))
						}
						if pi+1 < len(parts) && SplitBound(codec, encodedSize(wb.recs[j:j+len(p.recs)+1])) <= limit {
							t.Fatalf("part %d cut early: the next record fit", pi)
						}
						for k, r := range p.recs {
							w := wb.recs[j]
							w.OffsetDelta -= wb.recs[j-k].OffsetDelta
							r.Length, w.Length = 0, 0
							if !bytes.Equal(r.AppendTo(nil), w.AppendTo(nil)) {
								t.Fatalf("part %d record %d differs from the batch rebuilt whole", pi, k)
							}
							j++
						}
						h := p.hdr
						if want := incrementSequence(100, wb.recs[j-len(p.recs)].OffsetDelta); h.FirstSequence != want {
							t.Fatalf("part %d base sequence %d, want %d", pi, h.FirstSequence, want)
						}
						if h.LastOffsetDelta != p.recs[len(p.recs)-1].OffsetDelta {
							t.Fatalf("part %d last offset delta %d", pi, h.LastOffsetDelta)
						}
					}
					if j != len(recs) {
						t.Fatalf("%d records in the parts, want %d", j, len(recs))
					}
				})
			}
		}
	}
}

// encodedSize is the size of recs encoded, length prefixes included.
func encodedSize(recs []kmsg.Record) int {
	n := 0
	for _, r := range recs {
		n += len(r.AppendTo(nil))
	}
	return n
}

// buildGapped builds a batch of recs whose offset deltas start at first
// and leave a gap after every tenth record (as compaction leaves them),
// compressed with kgo's compressor.
func buildGapped(t *testing.T, codec int16, recs []kmsg.Record, first int32) []byte {
	t.Helper()
	var body []byte
	d := first
	for i := range recs {
		r := recs[i]
		r.OffsetDelta = d
		r.Length = 0
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		body = r.AppendTo(body)
		d++
		if i%10 == 9 {
			d += 2
		}
	}
	records := body
	if codec != 0 {
		cc := map[int16]kgo.CompressionCodec{2: kgo.SnappyCompression(), 4: kgo.ZstdCompression()}[codec]
		c, err := kgo.DefaultCompressor(cc)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := c.Compress(new(bytes.Buffer), body)
		records = append([]byte(nil), out...)
	}
	h := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1, Magic: 2, Attributes: codec, LastOffsetDelta: d - 1,
		FirstTimestamp: 1700000000000, MaxTimestamp: 1700000000000 + 12,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: int32(len(recs)), Records: records,
	}
	out := h.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], castagnoli))
	return out
}
