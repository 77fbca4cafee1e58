package records

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestFilterDrop: dropping records keeps the batch header (base offset,
// last offset delta, producer state) and the surviving records' deltas, for
// every codec; the result is checked with kmsg and kgo's decompressor.
func TestFilterDrop(t *testing.T) {
	for codec := int16(0); codec <= 4; codec++ {
		t.Run(Codec(codec), func(t *testing.T) {
			in := buildBatch(t, codec, sampleRecords(6, 40), 100)
			inB := splitBatches(t, in)[0]
			out, changed, err := Filter(nil, in, func(r *Record) (Verdict, error) {
				switch r.OffsetDelta() {
				case 1, 4:
					return Drop, nil
				case 2:
					r.Value = []byte("changed")
					return Changed, nil
				}
				return Keep, nil
			})
			if err != nil || !changed {
				t.Fatalf("changed=%v err=%v", changed, err)
			}
			bs := splitBatches(t, out)
			if len(bs) != 1 {
				t.Fatalf("%d batches", len(bs))
			}
			b := bs[0]
			want := inB.hdr
			want.NumRecords = 4
			sameHeader(t, &want, &b.hdr)
			var got []string
			for _, r := range b.recs {
				got = append(got, fmt.Sprintf("%d:%s", r.OffsetDelta, r.Value))
			}
			wantRecs := fmt.Sprintf("[0:%s 2:changed 3:%s 5:%s]", inB.recs[0].Value, inB.recs[3].Value, inB.recs[5].Value)
			if fmt.Sprint(got) != wantRecs {
				t.Fatalf("records %v, want %v", got, wantRecs)
			}
		})
	}
}

// TestFilterEmptyBatch: a batch whose records are all dropped stays as an
// empty batch covering the same offsets, uncompressed; a control batch
// next to it is untouched; nothing dropped means the input comes back.
func TestFilterEmptyBatch(t *testing.T) {
	data := buildBatch(t, 3, sampleRecords(3, 20), 10)
	ctrl := buildBatch(t, 0, []kmsg.Record{{Key: []byte{0, 0, 0, 0}, Value: []byte{0, 0, 0, 0, 0, 0}}}, 13)
	ctrl[22] |= 0x30
	fixCRC(ctrl)
	in := append(append([]byte(nil), data...), ctrl...)
	calls := 0
	out, changed, err := Filter(nil, in, func(r *Record) (Verdict, error) { calls++; return Drop, nil })
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	if calls != 3 {
		t.Fatalf("callback ran %d times, want 3 (control batch must not be shown)", calls)
	}
	bs := splitBatches(t, out)
	if len(bs) != 2 {
		t.Fatalf("%d batches, want 2", len(bs))
	}
	e := bs[0].hdr
	if e.NumRecords != 0 || e.FirstOffset != 10 || e.LastOffsetDelta != 2 || len(e.Records) != 0 || e.Attributes&7 != 0 {
		t.Fatalf("empty batch header %+v", e)
	}
	if !bytes.Equal(bs[1].raw, ctrl) {
		t.Fatal("control batch changed")
	}
	// An empty batch passes through a second filter untouched.
	out2, changed, err := Filter(nil, out, func(r *Record) (Verdict, error) { t.Fatal("no record expected"); return Keep, nil })
	if err != nil || changed || !bytes.Equal(out2, out) {
		t.Fatalf("second pass: changed=%v err=%v", changed, err)
	}
	same, changed, err := Filter(nil, in, func(r *Record) (Verdict, error) { return Keep, nil })
	if err != nil || changed || &same[0] != &in[0] {
		t.Fatal("keeping everything must return the input")
	}
}

// FuzzFilter: Filter never panics, and whatever it drops, the output is
// well-formed batches covering the same offset ranges.
func FuzzFilter(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s, uint8(0x5a))
	}
	rw := &Rewriter{MaxDecompressedBytes: 4 << 20}
	f.Fuzz(func(t *testing.T, in []byte, mask uint8) {
		out, changed, err := rw.Filter(nil, in, func(r *Record) (Verdict, error) {
			return Verdict(mask>>(uint(r.OffsetDelta())%4*2)) % 3, nil
		})
		if err != nil || !changed {
			return
		}
		// A batch Filter passes on untouched (a control batch) may carry a
		// bad CRC from the input; every batch must be as valid as it was.
		var ranges, ranges2 []string
		_ = Walk(in, func(b *Batch) error {
			ranges = append(ranges, fmt.Sprint(b.Magic, b.Partial, b.Header.FirstOffset, b.Header.LastOffsetDelta, b.CRCValid()))
			return nil
		})
		if err := Walk(out, func(b *Batch) error {
			ranges2 = append(ranges2, fmt.Sprint(b.Magic, b.Partial, b.Header.FirstOffset, b.Header.LastOffsetDelta, b.CRCValid()))
			return rw.Records(b, func(*Record) error { return nil })
		}); err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
		if fmt.Sprint(ranges) != fmt.Sprint(ranges2) {
			t.Fatalf("offset ranges changed: %v -> %v", ranges, ranges2)
		}
	})
}
