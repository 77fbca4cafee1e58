package records

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Decompression, record-count and growth bombs (issue 12, point 2). Each is
// refused with an error for its batch, and the assertions are on heap bytes
// allocated while refusing it, not on time.

// bombBody encodes n empty records (null key, empty value, no headers);
// with sameDelta every record claims offset delta 0, so the body is one
// 7-byte pattern repeated and compresses to almost nothing.
func bombBody(n int, sameDelta bool) []byte {
	body := make([]byte, 0, n*8)
	for i := range n {
		r := kmsg.Record{Value: []byte{}}
		if !sameDelta {
			r.OffsetDelta = int32(i)
		}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		body = r.AppendTo(body)
	}
	return body
}

// rawBatch frames records (already compressed with codec) as a magic 2
// batch declaring n records in offsets [0, lastDelta].
func rawBatch(codec int16, records []byte, n, lastDelta int32) []byte {
	b := kmsg.RecordBatch{
		Magic: 2, Attributes: codec, LastOffsetDelta: lastDelta,
		FirstTimestamp: 1700000000000, MaxTimestamp: 1700000000000,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: n, Records: records,
	}
	b.Length = int32(49 + len(records))
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], castagnoli))
	return raw
}

func zstdBest(t testing.TB, b []byte) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// allocated returns the heap bytes fn allocates (all goroutines; the
// package's tests do not run in parallel). No GC is forced: it would empty
// the pools whose reuse is part of what is measured.
func allocated(fn func()) uint64 {
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	fn()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// warm runs one small zstd rewrite so that pooled decoders and buffers
// exist before an allocation is measured.
func warm(t *testing.T, rw *Rewriter) {
	t.Helper()
	in := buildBatch(t, 4, sampleRecords(10, 100), 0)
	if _, _, err := rw.Rewrite(nil, in, appendBang); err != nil {
		t.Fatal(err)
	}
}

const bombHeap = 8 << 20 // what refusing one bomb may allocate, at most

// TestZeroDeltaBombRefusedCheaply is the batch of issue 12: ~345 bytes of
// zstd holding 400,000 empty records, all at offset delta 0. It was
// rewritten record by record (145 MiB of heap); now the second record's
// offset delta refuses it, after one streaming decompression of 2.8 MB.
func TestZeroDeltaBombRefusedCheaply(t *testing.T) {
	const n = 400_000
	comp := zstdBest(t, bombBody(n, true))
	in := rawBatch(codecZstd, comp, n, n-1)
	t.Logf("bomb: %d bytes of batch, %d of zstd, %d records", len(in), len(comp), n)
	if len(in) > 1024 {
		t.Fatalf("the bomb is %d bytes: not the cheap one", len(in))
	}
	var rw Rewriter
	warm(t, &rw)
	// The first refusal grows the pooled buffer to the 2.8 MB the batch
	// decompresses to (doubling: 5.6 MB allocated in all) and the pooled
	// zstd decoder's window to the frame's; a repeat, what a client sending
	// bombs costs in steady state, allocates next to nothing (the least of
	// three repeats is taken: a GC may empty the pools at any time).
	for i, limit := range []uint64{2 * bombHeap, bombHeap / 8} {
		calls := 0
		var err error
		heap := uint64(math.MaxUint64)
		for range 1 + 2*i {
			calls = 0
			heap = min(heap, allocated(func() {
				_, _, err = rw.Rewrite(nil, in, func(r *Record) (bool, error) { calls++; return appendBang(r) })
			}))
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
		var be *BatchError
		if !errors.As(err, &be) || be.Pos != 0 {
			t.Fatalf("err %v is not a *BatchError at 0", err)
		}
		if calls > 1 {
			t.Errorf("the callback saw %d records of the bomb", calls)
		}
		t.Logf("refusal %d: after %d callback(s), %d KiB allocated: %v", i+1, calls, heap>>10, err)
		// The race detector makes sync.Pool drop items at random, so the
		// steady state (pooled buffers reused) is only measurable without it.
		if heap > limit && !(raceEnabled && i > 0) {
			t.Errorf("refusal %d allocated %d KiB, want < %d KiB", i+1, heap>>10, limit>>10)
		}
	}
}

// TestGrowthBomb: the same 400,000 records with honest offset deltas
// (~330 KB of zstd). With MinGrowth (what encryption adds per record at
// least), the header alone refuses it; without, MaxBatchBytes stops the
// rebuild as it grows past the bound.
func TestGrowthBomb(t *testing.T) {
	const n = 400_000
	in := rawBatch(codecZstd, zstdBest(t, bombBody(n, false)), n, n-1)
	t.Run("min growth refuses from the header", func(t *testing.T) {
		rw := Rewriter{MinGrowth: 64} // 400k x 64 B > 16 MiB
		warm(t, &rw)
		calls := 0
		var err error
		heap := allocated(func() {
			_, _, err = rw.Rewrite(nil, in, func(r *Record) (bool, error) { calls++; return appendBang(r) })
		})
		if !errors.Is(err, ErrTooLarge) || calls != 0 {
			t.Fatalf("err = %v after %d callbacks, want ErrTooLarge before any", err, calls)
		}
		t.Logf("%d KiB allocated: %v", heap>>10, err)
		if heap > bombHeap {
			t.Errorf("refusing allocated %d MiB, want < %d MiB", heap>>20, bombHeap>>20)
		}
	})
	t.Run("max batch bytes stops the rebuild", func(t *testing.T) {
		rw := Rewriter{MaxBatchBytes: 1 << 20}
		grow := func(r *Record) (bool, error) { r.Value = make([]byte, 100); return true, nil }
		calls := 0
		_, _, err := rw.Rewrite(nil, in, func(r *Record) (bool, error) { calls++; return grow(r) })
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
		if max := (1 << 20) / 100; calls > max+1 {
			t.Errorf("%d records rebuilt past the 1 MiB bound (at most %d fit)", calls, max)
		}
		// Within the bound the same rewrite succeeds.
		small := buildBatch(t, codecZstd, sampleRecords(100, 10), 0)
		if _, ch, err := rw.Rewrite(nil, small, grow); err != nil || !ch {
			t.Fatalf("small batch: changed %v, err %v", ch, err)
		}
	})
}

// TestRecordCountAndDeltas: the declared count must fit the batch's bytes
// and offset range, and offset deltas must increase within that range.
func TestRecordCountAndDeltas(t *testing.T) {
	body := bombBody(10, false)
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"count above the bytes", rawBatch(codecNone, body, 100, 99), ErrCorrupt},
		{"count above the offset range", rawBatch(codecNone, body, 10, 5), ErrCorrupt},
		{"count above what the cap can hold", rawBatch(codecZstd, zstdBest(t, body), 1<<30, 1<<30), ErrTooLarge},
		{"count above the decompressed bytes", rawBatch(codecZstd, zstdBest(t, body), 1000, 999), ErrCorrupt},
		{"repeated offset delta", rawBatch(codecNone, append(bombBody(1, true), bombBody(1, true)...), 2, 1), ErrCorrupt},
		{"delta past the last offset delta", rawBatch(codecNone, bombBody(3, false), 2, 1), ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := Rewrite(nil, c.in, appendBang); !errors.Is(err, c.want) {
				t.Errorf("Rewrite: %v, want %v", err, c.want)
			}
			err := Walk(c.in, func(b *Batch) error { return b.Records(func(*Record) error { return nil }) })
			if !errors.Is(err, c.want) {
				t.Errorf("Records: %v, want %v", err, c.want)
			}
		})
	}
	// Compaction leaves gaps: increasing deltas with holes are fine.
	var gappy []byte
	for _, d := range []int32{0, 3, 9} {
		r := kmsg.Record{OffsetDelta: d, Value: []byte("v")}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		gappy = r.AppendTo(gappy)
	}
	if _, _, err := Rewrite(nil, rawBatch(codecNone, gappy, 3, 9), appendBang); err != nil {
		t.Errorf("compacted batch: %v", err)
	}
}

// TestDeclaredSizesNotTrusted: a zstd frame declaring a 60 MiB content
// size and a snappy block declaring 60 MiB decoded, each holding a few
// bytes, are refused without allocating what they declare (DecodeAll and
// s2.Decode into a buffer of the declared size used to).
func TestDeclaredSizesNotTrusted(t *testing.T) {
	const declared = 60 << 20
	// zstd: frame header with an 8-byte content size, a 1 KiB window, then
	// one last raw block of 10 bytes.
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xc0, 0x00}
	frame = binary.LittleEndian.AppendUint64(frame, declared)
	frame = append(frame, 1|10<<3, 0, 0)
	frame = append(frame, make([]byte, 10)...)
	// snappy: the decoded-length varint, then a 4-byte literal.
	block := binary.AppendUvarint(nil, declared)
	block = append(block, 3<<2, 'a', 'b', 'c', 'd')
	var rw Rewriter
	warm(t, &rw)
	for _, c := range []struct {
		name  string
		codec int16
		data  []byte
	}{{"zstd", codecZstd, frame}, {"snappy", codecSnappy, block}} {
		t.Run(c.name, func(t *testing.T) {
			in := rawBatch(c.codec, c.data, 1, 0)
			var err error
			heap := allocated(func() { _, _, err = rw.Rewrite(nil, in, appendBang) })
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v", err)
			}
			t.Logf("%d KiB allocated: %v", heap>>10, err)
			if heap > bombHeap {
				t.Errorf("refusing allocated %d MiB, want < %d MiB", heap>>20, bombHeap>>20)
			}
		})
	}
}
