package records

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func sampleRecords(n, size int) []kmsg.Record {
	recs := make([]kmsg.Record, n)
	for i := range recs {
		recs[i] = kmsg.Record{
			TimestampDelta64: int64(i),
			TimestampDelta:   int32(i),
			Key:              []byte(fmt.Sprintf("key-%d", i)),
			Value:            []byte(fmt.Sprintf("%05d-%s", i, strings.Repeat("v", max(size-6, 0)))),
			Headers:          []kmsg.Header{{Key: "idx", Value: []byte(fmt.Sprintf("%02d", i))}},
		}
	}
	return recs
}

func appendBang(r *Record) (bool, error) {
	r.Value = append(bytes.Clone(r.Value), '!')
	return true, nil
}

func unchangedFn(*Record) (bool, error) { return false, nil }

// Snappy in both framings: the rewritten batch keeps the framing it came
// with, and kgo's decompressor reads it.
func TestSnappyFramings(t *testing.T) {
	for _, xerial := range []bool{false, true} {
		t.Run(fmt.Sprint("xerial=", xerial), func(t *testing.T) {
			in := buildBatchX(t, 2, xerial, sampleRecords(50, 200), 100)
			if isXerial(in[61:]) != xerial {
				t.Fatal("test batch framing")
			}
			out, changed, err := Rewrite(nil, in, appendBang)
			if err != nil || !changed {
				t.Fatal(changed, err)
			}
			if isXerial(out[61:]) != xerial {
				t.Fatalf("output framing xerial=%v, want %v", !xerial, xerial)
			}
			ob := splitBatches(t, out)
			for i, r := range ob[0].recs {
				if want := fmt.Sprintf("%05d-%s!", i, strings.Repeat("v", 194)); string(r.Value) != want {
					t.Fatalf("record %d: %q", i, r.Value)
				}
			}
		})
	}
}

func TestAllCodecsHandBuilt(t *testing.T) {
	for codec := int16(0); codec <= 4; codec++ {
		t.Run(Codec(codec), func(t *testing.T) {
			a := buildBatch(t, codec, sampleRecords(30, 100), 0)
			b := buildBatch(t, codec, sampleRecords(30, 100), 30)
			in := append(bytes.Clone(a), b...)
			dst := []byte("prefix")
			out, changed, err := Rewrite(dst, in, func(r *Record) (bool, error) {
				if r.Offset() >= 30 || r.Offset()%3 != 0 {
					return false, nil
				}
				r.Value = bytes.Repeat([]byte{'x'}, int(r.Offset())) // shrink and grow
				r.SetHeader("idx", nil)                              // null header value
				r.AddHeader("enc", []byte("v1"))
				return true, nil
			})
			if err != nil || !changed {
				t.Fatal(changed, err)
			}
			if !bytes.HasPrefix(out, []byte("prefix")) {
				t.Fatal("dst not kept")
			}
			ob := splitBatches(t, out[6:])
			if len(ob) != 2 || !bytes.Equal(ob[1].raw, b) {
				t.Fatal("second batch not byte-identical")
			}
			ib := splitBatches(t, a)
			sameHeader(t, &ib[0].hdr, &ob[0].hdr)
			for i, r := range ob[0].recs {
				if i%3 != 0 {
					if !bytes.Equal(r.Value, ib[0].recs[i].Value) {
						t.Fatalf("record %d changed", i)
					}
					continue
				}
				if !bytes.Equal(r.Value, bytes.Repeat([]byte{'x'}, i)) || r.Value == nil {
					t.Fatalf("record %d: %q", i, r.Value)
				}
				if len(r.Headers) != 2 || r.Headers[0].Value != nil || r.Headers[1].Key != "enc" {
					t.Fatalf("record %d headers %+v", i, r.Headers)
				}
			}
		})
	}
}

func TestNothingChangedReturnsInputWithoutAllocating(t *testing.T) {
	for codec := int16(0); codec <= 4; codec++ {
		in := append(buildBatch(t, codec, sampleRecords(100, 1000), 0), buildBatch(t, codec, sampleRecords(10, 10), 100)...)
		dst := make([]byte, 0, 10)
		var out []byte
		var changed bool
		var err error
		calls := 0
		fn := func(r *Record) (bool, error) { calls++; return false, nil }
		allocs := testing.AllocsPerRun(50, func() {
			out, changed, err = Rewrite(dst, in, fn)
		})
		if err != nil || changed || &out[0] != &in[0] || len(out) != len(in) {
			t.Fatalf("%s: changed=%v err=%v, output not the input", Codec(codec), changed, err)
		}
		if calls != 51*110 {
			t.Fatalf("fn called %d times", calls)
		}
		t.Logf("%s: %.1f allocs per Rewrite with no change", Codec(codec), allocs)
		if codec == 0 && allocs != 0 && !raceEnabled {
			t.Fatalf("uncompressed: %v allocs, want 0", allocs)
		}
	}
}

func TestControlAndLegacyPassUntouched(t *testing.T) {
	// A control batch (commit marker) as a broker writes it.
	ctrl := buildBatch(t, 0, []kmsg.Record{{Key: []byte{0, 0, 0, 1}, Value: []byte{0, 0, 0, 0, 0, 0}}}, 5)
	ctrl[22] |= 0x20 | 0x10 // attributes low byte: control + transactional
	fixCRC(ctrl)
	// A magic 1 message.
	m := kmsg.MessageV1{Magic: 1, Key: []byte("k"), Value: []byte("legacy")}
	legacy := m.AppendTo(nil)
	putLen(legacy, len(legacy)-12)

	data := buildBatch(t, 1, sampleRecords(5, 10), 6)
	in := append(append(append([]byte(nil), legacy...), data...), ctrl...)
	calls := 0
	out, changed, err := Rewrite(nil, in, func(r *Record) (bool, error) { calls++; return appendBang(r) })
	if err != nil || !changed || calls != 5 {
		t.Fatal(err, changed, calls)
	}
	if !bytes.HasPrefix(out, legacy) || !bytes.HasSuffix(out, ctrl) {
		t.Fatal("legacy or control batch not passed through")
	}
	n := 0
	if err := Walk(out, func(b *Batch) error {
		switch n {
		case 0:
			if b.Magic != 1 {
				t.Fatalf("first is magic %d", b.Magic)
			}
		case 1:
			if b.Codec() != "gzip" || !b.CRCValid() || b.IsControl() {
				t.Fatal("data batch")
			}
		case 2:
			if !b.IsControl() || !b.IsTransactional() {
				t.Fatal("control batch")
			}
		}
		n++
		return nil
	}); err != nil || n != 3 {
		t.Fatal(err, n)
	}
	if _, _, err := (&Rewriter{Strict: true}).Rewrite(nil, in, appendBang); !errors.Is(err, ErrLegacyFormat) {
		t.Fatalf("strict: %v", err)
	}
}

func TestPartialTrailingBatch(t *testing.T) {
	a := buildBatch(t, 3, sampleRecords(10, 100), 0)
	b := buildBatch(t, 3, sampleRecords(10, 100), 10)
	for _, cut := range []int{1, 11, 12, 17, 40, 61, len(b) - 1} {
		in := append(bytes.Clone(a), b[:cut]...)
		calls := 0
		out, changed, err := Rewrite(nil, in, func(r *Record) (bool, error) { calls++; return appendBang(r) })
		if err != nil || !changed || calls != 10 {
			t.Fatalf("cut %d: %v %v %d", cut, err, changed, calls)
		}
		if !bytes.HasSuffix(out, b[:cut]) {
			t.Fatalf("cut %d: partial batch not passed through", cut)
		}
		splitBatches(t, out[:len(out)-cut])
		var partial bool
		Walk(out, func(b *Batch) error { partial = b.Partial; return nil })
		if !partial {
			t.Fatalf("cut %d: Walk does not report the partial batch", cut)
		}
		if _, _, err := (&Rewriter{Strict: true}).Rewrite(nil, in, appendBang); !errors.Is(err, ErrPartial) {
			t.Fatalf("cut %d strict: %v", cut, err)
		}
		// Unchanged: input as is, partial included.
		out, changed, err = Rewrite(nil, in, unchangedFn)
		if err != nil || changed || !bytes.Equal(out, in) {
			t.Fatal("unchanged with partial batch")
		}
	}
}

func TestCRCMismatchIsAnError(t *testing.T) {
	for codec := int16(0); codec <= 4; codec++ {
		in := buildBatch(t, codec, sampleRecords(10, 100), 0)
		in[len(in)-3] ^= 0x40
		calls := 0
		_, _, err := Rewrite(nil, in, func(r *Record) (bool, error) { calls++; return false, nil })
		var be *BatchError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &be) || be.Pos != 0 || calls != 0 {
			t.Fatalf("%s: err %v, calls %d", Codec(codec), err, calls)
		}
		t.Log(err)
	}
}

func TestFnErrorIsReturned(t *testing.T) {
	in := buildBatch(t, 4, sampleRecords(10, 100), 0)
	boom := errors.New("kms down")
	out, changed, err := Rewrite(nil, in, func(r *Record) (bool, error) {
		if r.Offset() == 4 {
			return false, boom
		}
		return appendBang(r)
	})
	if !errors.Is(err, boom) || out != nil || changed {
		t.Fatal(err, changed)
	}
}

func TestCorruptInputs(t *testing.T) {
	good := buildBatch(t, 0, sampleRecords(3, 10), 0)
	cases := map[string]func(b []byte){
		"negative length": func(b []byte) { putLen(b, -5) },
		"short length":    func(b []byte) { putLen(b, 20) },
		"unknown magic":   func(b []byte) { b[16] = 3 },
		"unknown codec":   func(b []byte) { b[22] |= 6; fixCRC(b) },
		"too many records": func(b []byte) {
			b[60]++
			fixCRC(b)
		},
		"too few records": func(b []byte) {
			b[60]--
			fixCRC(b)
		},
		"negative count": func(b []byte) { b[57] = 0xff; fixCRC(b) },
	}
	for name, mut := range cases {
		b := bytes.Clone(good)
		mut(b)
		if name == "short length" {
			b = b[:32]
		}
		_, _, err := Rewrite(nil, b, appendBang)
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownCodec) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDecompressionLimit(t *testing.T) {
	in := buildBatch(t, 4, sampleRecords(100, 10000), 0) // ~1 MB, compresses well
	_, _, err := (&Rewriter{MaxDecompressedBytes: 100 << 10}).Rewrite(nil, in, unchangedFn)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatal(err)
	}
	for codec := int16(1); codec <= 3; codec++ {
		in := buildBatch(t, codec, sampleRecords(100, 10000), 0)
		if _, _, err := (&Rewriter{MaxDecompressedBytes: 100 << 10}).Rewrite(nil, in, unchangedFn); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s: %v", Codec(codec), err)
		}
	}
}

func TestBatchRecordsReadOnly(t *testing.T) {
	in := buildBatch(t, 2, sampleRecords(7, 50), 42)
	var offs []int64
	err := Walk(in, func(b *Batch) error {
		return b.Records(func(r *Record) error {
			if v, ok := r.Header("idx"); !ok || string(v) != fmt.Sprintf("%02d", r.OffsetDelta()) {
				t.Fatalf("header %q", v)
			}
			if r.Timestamp() != 1700000000000+r.TimestampDelta() {
				t.Fatal("timestamp")
			}
			offs = append(offs, r.Offset())
			return nil
		})
	})
	if err != nil || len(offs) != 7 || offs[0] != 42 || offs[6] != 48 {
		t.Fatal(err, offs)
	}
}

func TestCodecNames(t *testing.T) {
	for a, want := range map[int16]string{0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd", 5: "unknown(5)", 0x10 | 4: "zstd"} {
		if got := Codec(a); got != want {
			t.Errorf("Codec(%d) = %s", a, got)
		}
	}
}

func putLen(b []byte, n int) {
	b[8], b[9], b[10], b[11] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

func fixCRC(b []byte) {
	c := crcOf(b[21:])
	b[17], b[18], b[19], b[20] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
}

// Concurrent rewrites share the pools; run with -race.
func TestConcurrentRewrites(t *testing.T) {
	var inputs [][]byte
	for codec := int16(0); codec <= 4; codec++ {
		inputs = append(inputs, buildBatch(t, codec, sampleRecords(40, 300), 0))
	}
	want := make([][]byte, len(inputs))
	for i, in := range inputs {
		out, _, err := Rewrite(nil, in, appendBang)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = out
	}
	done := make(chan error)
	for g := range 8 {
		go func() {
			for k := range 20 {
				i := (g + k) % len(inputs)
				out, _, err := Rewrite(nil, inputs[i], appendBang)
				if err == nil && !bytes.Equal(out, want[i]) {
					err = fmt.Errorf("%s: output differs between runs", Codec(int16(i)))
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// Re-encoding a record as it was gives back the same bytes: an uncompressed
// batch rebuilt by an identity fn (that still reports a change) is equal
// to its input, CRC included.
func TestIdentityRebuildIsByteIdentical(t *testing.T) {
	recs := sampleRecords(20, 100)
	recs[3].Value = nil
	recs[4].Value = []byte{}
	recs[5].Key = nil
	recs[6].Headers = append(recs[6].Headers, kmsg.Header{Key: "null", Value: nil}, kmsg.Header{Key: "", Value: []byte{}})
	recs[7].TimestampDelta64, recs[7].TimestampDelta = -5, -5
	in := buildBatch(t, 0, recs, 1<<40)
	out, changed, err := Rewrite(nil, in, func(r *Record) (bool, error) { return true, nil })
	if err != nil || !changed {
		t.Fatal(err, changed)
	}
	if !bytes.Equal(out, in) {
		t.Fatal("identity rebuild differs from input")
	}
}
