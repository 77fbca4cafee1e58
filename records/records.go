// Package records reads and rewrites the record batches that Produce
// requests carry (ProduceRequest...Partition.Records) and Fetch responses
// return (FetchResponse...Partition.RecordBatches), so that interceptors can
// change record keys, values and headers (encryption) without breaking the
// batch: lengths, CRC-32C, compression and the producer's idempotence and
// transaction state all stay right.
//
// The wire types come from kmsg: kmsg.RecordBatch reads and writes the batch
// header and kmsg.Record a record (its Length field is the record's varint
// length prefix). This package adds only the glue: batch framing inside a
// partition's bytes, the record framing inside a batch body, the codecs
// (mirroring franz-go's kgo), and the CRC.
//
// What passes through untouched, byte for byte:
//   - control batches (attribute bit 5: transaction markers);
//   - message sets of magic 0 and 1 (unless [Rewriter.Strict]);
//   - a trailing partial batch, as a Fetch response cut at max_bytes ends
//     with (unless [Rewriter.Strict]);
//   - every data batch in which the callback changed no record.
//
// A data batch whose CRC does not verify is an error ([ErrCorrupt], wrapped
// in a [*BatchError]): its records cannot be trusted, so they are not shown
// to the callback and the batch is not forwarded in a changed form. On the
// Produce path the caller should answer the partition with CORRUPT_MESSAGE
// (error code 2), which is what the broker would have answered; on the Fetch
// path with the same code (kgo, like the Java client, reports a corrupt batch
// to the application rather than retrying), or forward the partition as is
// if it does not need to look inside.
//
// Limits. Nothing read from a batch sizes an allocation unchecked (see
// bound.go): a batch's declared record count must fit its offset range and
// the bytes that hold it (a record is at least 7 bytes), offset deltas must
// increase within the range the header declares, decompression streams into
// a buffer that grows with the output and stops at
// [Rewriter.MaxDecompressedBytes], and a rebuilt batch stops at
// [Rewriter.MaxBatchBytes] (with [Rewriter.MinGrowth], a batch that could
// exceed it is refused from its header alone). Each failure is an error for
// that batch: ErrCorrupt or ErrTooLarge in a *BatchError.
//
// Compression. A rebuilt batch is recompressed with its own codec and kgo's
// settings (gzip default level; lz4 frame, fastest level, pierrec defaults;
// zstd default level, 64 KiB window). Snappy comes in two framings in
// Kafka: raw snappy blocks (librdkafka, kgo for ordinary batches) and the
// xerial stream framing (Java client's snappy-java, Sarama, kgo for merged
// batches). The decoder accepts both, as kgo's does; the encoder writes the
// framing the batch came with (xerial in 32 KiB blocks, version 1/1, as kgo
// and snappy-java write it), so every consumer that could read the
// original can read the rewrite. Encoders and decoders are pooled; a pass
// in which fn changes nothing allocates nothing.
//
// Record bytes handed to the callback alias the input (uncompressed
// batches) or a pooled buffer (compressed ones), and header keys are
// strings over those bytes (kmsg's UnsafeReadFrom): nothing may be kept
// past the callback without copying.
package records

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

var (
	// ErrCorrupt reports a malformed batch: bad CRC, bad lengths, records
	// that do not parse or do not fill the batch, an unknown magic, or
	// compressed data that does not decompress.
	ErrCorrupt = errors.New("records: corrupt record batch")
	// ErrTooLarge reports a batch that would decompress to more than the
	// limit (see [Rewriter.MaxDecompressedBytes]), or whose rewritten
	// records would exceed [Rewriter.MaxBatchBytes].
	ErrTooLarge = errors.New("records: batch exceeds a limit")
	// ErrRecordTooLarge reports a record that cannot fit a batch of
	// [Rewriter.SplitBytes] even alone (what a broker answers with
	// MESSAGE_TOO_LARGE). It comes with ErrTooLarge.
	ErrRecordTooLarge = errors.New("records: record too large for the batch size limit")
	// ErrUnknownCodec reports compression attribute 5, 6 or 7.
	ErrUnknownCodec = errors.New("records: unknown compression codec")
	// ErrLegacyFormat reports a magic 0 or 1 message set in strict mode.
	ErrLegacyFormat = errors.New("records: magic 0/1 message set refused in strict mode")
	// ErrPartial reports a truncated trailing batch in strict mode.
	ErrPartial = errors.New("records: truncated record batch refused in strict mode")
)

// BatchError locates an error in the input.
type BatchError struct {
	Pos        int   // byte position of the batch in the input
	BaseOffset int64 // the batch's base offset, -1 if not readable
	Err        error
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("records: batch at byte %d (base offset %d): %v", e.Pos, e.BaseOffset, e.Err)
}

func (e *BatchError) Unwrap() error { return e.Err }

// DefaultMaxDecompressedBytes bounds the decompressed size of one batch
// when [Rewriter.MaxDecompressedBytes] is 0: 64 times the broker's default
// max.message.bytes (1 MiB), which bounds a batch's compressed size.
const DefaultMaxDecompressedBytes = 64 << 20

// DefaultMaxBatchBytes bounds the records section of a rebuilt batch (before
// recompression) when [Rewriter.MaxBatchBytes] is 0: 16 times the broker's
// default max.message.bytes, so an encrypted batch a broker could accept at
// all is never refused by it.
const DefaultMaxBatchBytes = 16 << 20

// Batch header layout (magic 2), byte offsets from the start of the batch.
const (
	batchHeaderLen  = 61 // through NumRecords
	batchMinLength  = batchHeaderLen - 12
	offLength       = 8
	offMagic        = 16
	offCRC          = 17
	offAttributes   = 21 // the CRC covers everything from here
	attrCompression = 0x07
	attrLogAppend   = 0x08
	attrTxn         = 0x10
	attrControl     = 0x20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Record is the view of one record that the callback of [Rewrite] and
// [Batch.Records] receives. Key, Value and Headers may be replaced or
// changed; the offset and timestamp deltas and the attributes are read-only,
// because the batch header (last offset delta, timestamps, sequence numbers)
// depends on them.
//
// Key and Value are nullable: nil encodes as length -1 (a null value is a
// tombstone on a compacted topic), a non-nil empty slice as length 0.
// Header values are nullable the same way.
//
// Everything a Record holds (the slices, the header key strings) aliases
// the input or a pooled decompression buffer and is valid only until the
// callback returns: copy what you keep. A slice the callback assigns is
// only read, before the next record.
type Record struct {
	Key     []byte
	Value   []byte
	Headers []kmsg.Header

	attrs    int8
	tsDelta  int64
	offDelta int32
	batch    *kmsg.RecordBatch
}

// OffsetDelta is the record's offset relative to the batch's base offset.
func (r *Record) OffsetDelta() int32 { return r.offDelta }

// TimestampDelta is the record's timestamp relative to the batch's first
// timestamp, in milliseconds.
func (r *Record) TimestampDelta() int64 { return r.tsDelta }

// Attributes are the record-level attributes (unused by Kafka so far).
func (r *Record) Attributes() int8 { return r.attrs }

// Offset is the record's absolute offset: the batch's base offset plus the
// delta. In a Produce request the base offset is 0, so this is the delta.
func (r *Record) Offset() int64 { return r.batch.FirstOffset + int64(r.offDelta) }

// Timestamp is the record's timestamp in milliseconds: the batch's max
// timestamp for a log-append-time batch, else first timestamp plus delta.
func (r *Record) Timestamp() int64 {
	if r.batch.Attributes&attrLogAppend != 0 {
		return r.batch.MaxTimestamp
	}
	return r.batch.FirstTimestamp + r.tsDelta
}

// Batch is the header of the batch holding the record (read-only; its
// Records field is the batch's raw, possibly compressed, records section).
func (r *Record) Batch() *kmsg.RecordBatch { return r.batch }

// Header returns the value of the last header named key, as Kafka's Java
// Headers.lastHeader does, and whether there is one.
func (r *Record) Header(key string) ([]byte, bool) {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return r.Headers[i].Value, true
		}
	}
	return nil, false
}

// AddHeader appends a header. Kafka headers are a list: keys may repeat.
func (r *Record) AddHeader(key string, value []byte) {
	r.Headers = append(r.Headers, kmsg.Header{Key: key, Value: value})
}

// SetHeader replaces the value of every header named key, or appends one
// if there is none.
func (r *Record) SetHeader(key string, value []byte) {
	found := false
	for i := range r.Headers {
		if r.Headers[i].Key == key {
			r.Headers[i].Value = value
			found = true
		}
	}
	if !found {
		r.AddHeader(key, value)
	}
}

// DeleteHeader removes every header named key.
func (r *Record) DeleteHeader(key string) {
	r.Headers = slices.DeleteFunc(r.Headers, func(h kmsg.Header) bool { return h.Key == key })
}

// Rewriter holds the options of a rewrite. The zero value is ready to use
// and is what [Rewrite] uses.
type Rewriter struct {
	// MaxDecompressedBytes bounds one batch's decompressed size
	// (decompression bombs); 0 means DefaultMaxDecompressedBytes.
	MaxDecompressedBytes int

	// MaxBatchBytes bounds the records section of a batch the callback
	// changed, as rebuilt before recompression (growth bombs: a batch of
	// many tiny records, each made larger); 0 means DefaultMaxBatchBytes.
	// Going past it is ErrTooLarge, noticed as the records are appended.
	MaxBatchBytes int

	// MinGrowth is the least number of bytes the callback adds to a
	// record it changes (envelope overhead, say). When set, a batch whose
	// declared record count times MinGrowth exceeds MaxBatchBytes is
	// refused with ErrTooLarge before it is decompressed or any record is
	// shown to the callback: the worst case is judged from the header,
	// so a bomb costs nothing to refuse.
	MinGrowth int

	// Strict refuses input whose records the callback cannot see: magic
	// 0/1 message sets (ErrLegacyFormat) and a truncated trailing batch
	// (ErrPartial). Use it on the Produce path where a rule must not let a
	// record through unseen (a broker rejects both in Produce v3+ anyway);
	// leave it off on the Fetch path, where a response legitimately ends
	// with a partial batch.
	Strict bool

	// SplitBytes, when set, is the most bytes one batch may take on the
	// wire (a broker's max.message.bytes). A rebuilt batch that might
	// exceed it is written as several consecutive batches instead, each
	// within it: records in order, offset deltas renumbered from 0 in each,
	// base sequence advanced by the records before it (wrapping as Kafka's
	// sequences do), producer id, epoch, attributes, first timestamp and
	// every record's timestamp kept. See [SplitBound] for how "might
	// exceed" is judged: from the records' uncompressed size, so the same
	// input always splits at the same records, which an idempotent
	// producer's retry needs (the broker deduplicates by sequence range).
	// A single record that cannot fit alone is ErrTooLarge.
	SplitBytes int
}

// SplitBound is the most bytes a batch whose records section takes n bytes
// uncompressed can take on the wire with codec attrs: exactly the header
// plus n uncompressed, and for compressed batches n plus what a codec adds
// to incompressible input (stored blocks, frame headers: far less than
// n/512 + 512 for every codec here). Encrypted records do not compress, so
// the bound is close to what is sent; a batch whose plaintext parts
// compress well is split earlier than it had to be, never later.
func SplitBound(attrs int16, n int) int {
	if attrs&attrCompression == codecNone {
		return batchHeaderLen + n
	}
	return batchHeaderLen + n + n/512 + 512
}

var defaultRewriter Rewriter

// Rewrite walks the record batches in a Produce partition's Records (or a
// Fetch partition's RecordBatches) and calls fn for each record of each data
// batch; if fn changes any record (returns changed=true), that batch is
// rebuilt: decompressed, records re-encoded, recompressed with the batch's
// own codec, lengths and CRC-32C recomputed; producer id, epoch, base
// sequence, base offset, last offset delta, timestamps, attributes and
// record count unchanged. Batches fn did not change are copied byte-for-byte
// (or the input returned as-is when nothing changed, with no allocation).
//
// Within a rebuilt batch, a record for which fn returned changed=false is
// copied as it was (changes fn made to it anyway are ignored).
//
// When changed is true, out is dst with the rewritten batches appended (dst
// must not overlap batches). When changed is false, out is batches itself
// and dst is untouched. On error, out is nil; an error of fn is returned
// wrapped (errors.Is/As see it), a malformed batch as a *BatchError.
//
// Rewrite is safe for concurrent use.
func Rewrite(dst, batches []byte, fn func(r *Record) (changed bool, err error)) (out []byte, changed bool, err error) {
	return defaultRewriter.Rewrite(dst, batches, fn)
}

// Rewrite is [Rewrite] with the options of rw.
func (rw *Rewriter) Rewrite(dst, batches []byte, fn func(r *Record) (changed bool, err error)) (out []byte, changed bool, err error) {
	st := getState()
	defer st.release()
	st.in, st.dst, st.limit = batches, dst, rw.limit()
	st.maxBatch, st.minGrowth, st.split = rw.maxBatch(), 0, 0
	if rw != nil && rw.MinGrowth > 0 {
		st.minGrowth = rw.MinGrowth
	}
	if rw != nil && rw.SplitBytes > 0 {
		st.split = rw.SplitBytes
	}

	return st.walk(rw.Strict, batches, func(pos int, raw []byte) error { return st.rewriteBatch(pos, raw, fn) })
}

// walk is the loop Rewrite and Filter share: frame each batch, pass partial
// and legacy ones through (or refuse them when strict), hand each v2 batch
// to v2. It returns batches itself when nothing was changed.
func (st *state) walk(strict bool, batches []byte, v2 func(pos int, raw []byte) error) ([]byte, bool, error) {
	for pos := 0; pos < len(batches); {
		n, kind, err := frame(batches[pos:])
		if err != nil {
			return nil, false, &BatchError{Pos: pos, BaseOffset: baseOffset(batches[pos:]), Err: err}
		}
		raw := batches[pos : pos+n]
		switch kind {
		case kindPartial:
			if strict {
				return nil, false, &BatchError{Pos: pos, BaseOffset: baseOffset(raw), Err: ErrPartial}
			}
			st.copyRaw(raw)
		case kindLegacy:
			if strict {
				return nil, false, &BatchError{Pos: pos, BaseOffset: baseOffset(raw), Err: ErrLegacyFormat}
			}
			st.copyRaw(raw)
		case kindV2:
			if err := v2(pos, raw); err != nil {
				return nil, false, err
			}
		}
		pos += n
	}
	if !st.started {
		return batches, false, nil
	}
	return st.out, true, nil
}

func (rw *Rewriter) limit() int {
	if rw == nil || rw.MaxDecompressedBytes <= 0 {
		return DefaultMaxDecompressedBytes
	}
	return rw.MaxDecompressedBytes
}

func (rw *Rewriter) maxBatch() int {
	if rw == nil || rw.MaxBatchBytes <= 0 {
		return DefaultMaxBatchBytes
	}
	return rw.MaxBatchBytes
}

const (
	kindPartial = iota
	kindLegacy
	kindV2
)

// frame returns the size of the batch at the start of b and its kind. The
// framing (base offset int64, length int32) is the same for message sets of
// every magic.
func frame(b []byte) (n, kind int, err error) {
	if len(b) < offMagic+1 {
		return len(b), kindPartial, nil
	}
	l := int32(binary.BigEndian.Uint32(b[offLength:]))
	if l < 0 {
		return 0, 0, fmt.Errorf("%w: negative batch length %d", ErrCorrupt, l)
	}
	total := 12 + int(l)
	if total > len(b) {
		return len(b), kindPartial, nil
	}
	if l < offMagic+1-12 {
		return 0, 0, fmt.Errorf("%w: batch length %d too short", ErrCorrupt, l)
	}
	switch magic := int8(b[offMagic]); magic {
	case 0, 1:
		return total, kindLegacy, nil
	case 2:
		if l < batchMinLength {
			return 0, 0, fmt.Errorf("%w: batch length %d too short", ErrCorrupt, l)
		}
		return total, kindV2, nil
	default:
		return 0, 0, fmt.Errorf("%w: unknown magic %d", ErrCorrupt, magic)
	}
}

func baseOffset(b []byte) int64 {
	if len(b) < 8 {
		return -1
	}
	return int64(binary.BigEndian.Uint64(b))
}

// state is the per-call scratch, pooled.
type state struct {
	// output
	in, dst, out []byte
	started      bool
	limit        int
	maxBatch     int   // bound on a rebuilt records section
	minGrowth    int   // Rewriter.MinGrowth, 0 outside Rewrite
	split        int   // Rewriter.SplitBytes, 0 outside Rewrite
	ends         []int // split, first offset delta not 0: end of each record in the rebuilt body
	part         []byte
	prevDelta    int64 // offset delta of the previous record of the batch
	cut          cut   // split: the part being written

	hdr  kmsg.RecordBatch
	kr   kmsg.Record
	rec  Record
	hdrs []kmsg.Header // header scratch, reused across records
	dec  []byte        // decompressed body
	body []byte        // rebuilt body of a compressed batch
}

var states = sync.Pool{New: func() any { return new(state) }}

// Buffers above this capacity are not kept in the pool.
const maxPooledBuffer = 16 << 20

func getState() *state { return states.Get().(*state) }

func (st *state) release() {
	st.in, st.dst, st.out, st.started = nil, nil, nil, false
	st.minGrowth, st.split = 0, 0
	st.ends = st.ends[:0]
	if cap(st.part) > maxPooledBuffer {
		st.part = nil
	}
	st.part = st.part[:0]
	st.hdr.Records = nil
	st.kr = kmsg.Record{}
	st.rec = Record{}
	clear(st.hdrs[:cap(st.hdrs)]) // drop references to the input
	st.hdrs = st.hdrs[:0]
	if cap(st.dec) > maxPooledBuffer {
		st.dec = nil
	}
	if cap(st.body) > maxPooledBuffer {
		st.body = nil
	}
	st.dec, st.body = st.dec[:0], st.body[:0]
	states.Put(st)
}

// begin starts the output on the first change: dst, then the input up to
// the batch at pos.
func (st *state) begin(pos int) {
	if st.started {
		return
	}
	st.started = true
	// Room for the whole input plus growth from the changes, once.
	st.out = slices.Grow(st.dst, len(st.in)+len(st.in)/4+4096)
	st.out = append(st.out, st.in[:pos]...)
}

func (st *state) copyRaw(raw []byte) {
	if st.started {
		st.out = append(st.out, raw...)
	}
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// openBatch parses the header of the magic 2 batch raw into st.hdr,
// verifies its CRC and returns its decompressed records section. control
// reports a control batch, for which nothing else is done.
func (st *state) openBatch(raw []byte, checkCRC bool) (body []byte, control bool, err error) {
	hdr := &st.hdr
	if err := hdr.ReadFrom(raw); err != nil {
		return nil, false, corrupt("batch header: %v", err)
	}
	if hdr.Attributes&attrControl != 0 {
		return nil, true, nil
	}
	if checkCRC {
		if got := crc32.Checksum(raw[offAttributes:], crcTable); got != uint32(hdr.CRC) {
			return nil, false, corrupt("CRC mismatch: batch says %08x, computed %08x", uint32(hdr.CRC), got)
		}
	}
	st.prevDelta = -1
	// The declared count, judged before anything is decompressed: it must
	// fit the batch's offset range, and the bytes that could hold it.
	n := int64(hdr.NumRecords)
	if n < 0 {
		return nil, false, corrupt("negative record count %d", hdr.NumRecords)
	}
	if n > 0 && n > int64(hdr.LastOffsetDelta)+1 {
		return nil, false, corrupt("%d records declared in an offset range of %d", n, int64(hdr.LastOffsetDelta)+1)
	}
	codec := hdr.Attributes & attrCompression
	if codec > codecZstd {
		return nil, false, fmt.Errorf("%w: %d", ErrUnknownCodec, codec)
	}
	if n == 0 {
		return hdr.Records, false, nil
	}
	if st.minGrowth > 0 && n > int64(st.maxBatch/st.minGrowth) {
		return nil, false, fmt.Errorf("%w: %d records, each growing by at least %d bytes, exceed the %d byte bound on a rewritten batch",
			ErrTooLarge, n, st.minGrowth, st.maxBatch)
	}
	if codec == codecNone {
		if _, ok := bounded(n, maxRecords(len(hdr.Records))); !ok {
			return nil, false, corrupt("%d records declared in %d bytes", n, len(hdr.Records))
		}
		return hdr.Records, false, nil
	}
	if _, ok := bounded(n, maxRecords(st.limit)); !ok {
		return nil, false, fmt.Errorf("%w: %d records declared, more than %d decompressed bytes can hold", ErrTooLarge, n, st.limit)
	}
	st.dec, err = decompress(st.dec[:0], hdr.Records, codec, st.limit)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return nil, false, err
		}
		return nil, false, corrupt("%s decompression: %v", Codec(hdr.Attributes), err)
	}
	if _, ok := bounded(n, maxRecords(len(st.dec))); !ok {
		return nil, false, corrupt("%d records declared in %d decompressed bytes", n, len(st.dec))
	}
	return st.dec, false, nil
}

// readRecord parses the record at body[p:] into st.rec and returns where
// it ends.
func (st *state) readRecord(body []byte, p int) (int, error) {
	l, n := binary.Varint(body[p:])
	if n <= 0 {
		return 0, corrupt("bad record length at byte %d of the records section", p)
	}
	ln, ok := bounded(l, len(body)-p-n)
	if !ok {
		return 0, corrupt("bad record length at byte %d of the records section", p)
	}
	end := p + n + ln
	kr := &st.kr
	kr.Headers = st.hdrs[:0]
	if err := kr.UnsafeReadFrom(body[p:end]); err != nil {
		return 0, corrupt("record at byte %d of the records section: %v", p, err)
	}
	st.hdrs = kr.Headers[:0]
	rec := &st.rec
	rec.Key, rec.Value, rec.Headers = kr.Key, kr.Value, kr.Headers
	rec.attrs, rec.tsDelta, rec.offDelta = kr.Attributes, kr.TimestampDelta64, kr.OffsetDelta
	rec.batch = &st.hdr
	// Offsets increase within a batch (with gaps after compaction) and stay
	// within the range the header declares: a batch of records that all
	// claim offset delta 0 (which compresses to almost nothing) is corrupt.
	if d := int64(kr.OffsetDelta); d <= st.prevDelta || d > int64(st.hdr.LastOffsetDelta) {
		return 0, corrupt("record at byte %d has offset delta %d after %d (last offset delta %d)", p, d, st.prevDelta, st.hdr.LastOffsetDelta)
	}
	st.prevDelta = int64(kr.OffsetDelta)
	return end, nil
}

func (st *state) rewriteBatch(pos int, raw []byte, fn func(*Record) (bool, error)) error {
	body, control, err := st.openBatch(raw, true)
	if err != nil {
		return &BatchError{Pos: pos, BaseOffset: baseOffset(raw), Err: err}
	}
	if control || st.hdr.NumRecords == 0 {
		st.copyRaw(raw)
		return nil
	}
	codec := st.hdr.Attributes & attrCompression
	// inBody: the rebuilt records go to st.body (compressed batches, and
	// every batch that may be split), else straight to st.out.
	inBody := codec != codecNone || st.split > 0
	var (
		rebuilt    bool
		cutting    bool // split: the parts are cut as the records are written (cutRecord)
		batchStart int
		p          int
	)
	st.ends = st.ends[:0]
	for i := int32(0); i < st.hdr.NumRecords; i++ {
		if p >= len(body) {
			return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: corrupt("%d records declared, %d found", st.hdr.NumRecords, i)}
		}
		end, err := st.readRecord(body, p)
		if err != nil {
			return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: err}
		}
		if i == 0 && st.split > 0 && st.rec.offDelta == 0 {
			// Every part's offset deltas count from its first record, so
			// the first part is the batch as rebuilt whole (the one batch
			// written if no cut is needed) only when the first delta is 0,
			// as producers write it. Otherwise (below) the records are
			// rebuilt whole into st.body and cut afterwards (appendSplit).
			cutting = true
		}
		changed, err := fn(&st.rec)
		if err != nil {
			return fmt.Errorf("records: record at offset %d: %w", st.rec.Offset(), err)
		}
		if cutting {
			if changed && !rebuilt {
				rebuilt = true
				st.begin(pos)
				batchStart = len(st.out)
				st.startCut()
				// The records before this one, as they were.
				for q := 0; q < p; {
					r, err := st.cutRaw(pos, body[q:])
					if err != nil {
						return err
					}
					q += r
				}
			}
			if changed {
				err = st.cutRecord(pos, &st.rec)
			} else if rebuilt {
				_, err = st.cutRaw(pos, body[p:end])
			}
			if err != nil {
				return err
			}
			if rebuilt && st.cut.total > st.maxBatch {
				return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("%w: rewritten records exceed %d bytes", ErrTooLarge, st.maxBatch)}
			}
		} else if changed {
			if !rebuilt {
				rebuilt = true
				st.begin(pos)
				batchStart = len(st.out)
				h := st.hdr
				h.Records = nil
				st.out = h.AppendTo(st.out)
				if inBody {
					st.body = append(st.body[:0], body[:p]...)
				} else {
					st.out = append(st.out, body[:p]...)
				}
			}
			if inBody {
				st.body, err = appendRecord(st.body, &st.rec)
			} else {
				st.out, err = appendRecord(st.out, &st.rec)
			}
			if err != nil {
				return err
			}
		} else if rebuilt {
			if inBody {
				st.body = append(st.body, body[p:end]...)
			} else {
				st.out = append(st.out, body[p:end]...)
			}
		}
		if st.split > 0 && !cutting {
			// Until the first change the rebuilt body is the input, so
			// positions agree.
			e := end
			if rebuilt {
				e = len(st.body)
			}
			st.ends = append(st.ends, e)
		}
		if rebuilt && !cutting {
			size := len(st.body)
			if !inBody {
				size = len(st.out) - batchStart - batchHeaderLen
			}
			if size > st.maxBatch {
				return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("%w: rewritten records exceed %d bytes", ErrTooLarge, st.maxBatch)}
			}
		}
		// Keep the header slice the callback grew (by adding headers) for
		// the next record: the record is encoded by now.
		if cap(st.rec.Headers) > cap(st.hdrs) {
			st.hdrs = st.rec.Headers[:0]
		}
		p = end
	}
	if p != len(body) {
		return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: corrupt("%d bytes after the last record", len(body)-p)}
	}
	if !rebuilt {
		st.copyRaw(raw)
		return nil
	}
	if cutting {
		return st.endCut(pos, batchStart)
	}
	if st.split > 0 && SplitBound(st.hdr.Attributes, len(st.body)) > st.split {
		st.out = st.out[:batchStart]
		return st.appendSplit(pos)
	}
	switch {
	case codec != codecNone:
		st.out, err = compress(st.out, st.body, codec, isXerial(st.hdr.Records))
		if err != nil {
			return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("records: %s compression: %w", Codec(st.hdr.Attributes), err)}
		}
	case inBody:
		st.out = append(st.out, st.body...)
	}
	return st.finishBatch(pos, batchStart)
}

// finishBatch sets the length and CRC of the batch at st.out[batchStart:]
// and checks it against the split limit.
func (st *state) finishBatch(pos, batchStart int) error {
	length := len(st.out) - batchStart - 12
	if length > math.MaxInt32 {
		return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: ErrTooLarge}
	}
	if st.split > 0 && length+12 > st.split {
		// SplitBound promised otherwise: refuse rather than send a batch
		// the broker would refuse.
		return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("%w: %w: rebuilt batch of %d bytes exceeds the %d byte limit", ErrTooLarge, ErrRecordTooLarge, length+12, st.split)}
	}
	b := st.out[batchStart:]
	binary.BigEndian.PutUint32(b[offLength:], uint32(length))
	binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], crcTable))
	return nil
}

// appendSplit writes the rebuilt records in st.body (record ends in
// st.ends) as consecutive batches, each within st.split by SplitBound,
// cutting greedily: the first batch takes as many records as fit, and so on.
func (st *state) appendSplit(pos int) error {
	for start := 0; start < len(st.ends); {
		from := 0
		if start > 0 {
			from = st.ends[start-1]
		}
		end := start
		for end < len(st.ends) && SplitBound(st.hdr.Attributes, st.ends[end]-from) <= st.split {
			end++
		}
		if end == start {
			return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("%w: %w: a record of %d bytes cannot fit a batch of %d bytes even alone", ErrTooLarge, ErrRecordTooLarge, st.ends[start]-from, st.split)}
		}
		if err := st.appendPart(pos, st.body[from:st.ends[end-1]], int32(end-start)); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// appendPart appends one batch of the n records in recs (encoded, from a
// rebuilt body): offset deltas renumbered from the first record's, which
// also advances the base sequence. Only each record's length prefix and
// offset delta are rewritten; the rest of it is copied as it is, and
// uncompressed records go straight behind the header, which is written
// last (its fields depend on the records).
func (st *state) appendPart(pos int, recs []byte, n int32) error {
	codec := st.hdr.Attributes & attrCompression
	batchStart := len(st.out)
	var dst []byte
	if codec == codecNone {
		dst = append(st.out, zeroHeader[:]...)
	} else {
		dst = st.part[:0]
	}
	var base, last int32
	var maxTS int64
	for i, p := int32(0), 0; i < n; i++ {
		size, ts, off, err := st.recordDeltas(pos, recs, p)
		if err != nil {
			return err
		}
		if i == 0 {
			base = off
		}
		last = off - base
		if i == 0 || ts > maxTS {
			maxTS = ts
		}
		dst = appendRenumbered(dst, recs[p:p+size], last)
		p += size
	}
	h := st.partHeader(base, last, n, maxTS)
	if codec == codecNone {
		st.out = dst
		if hb := h.AppendTo(st.out[batchStart:batchStart]); len(hb) != batchHeaderLen {
			return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("records: batch header of %d bytes", len(hb))}
		}
		return st.finishBatch(pos, batchStart)
	}
	st.part = dst
	st.out = h.AppendTo(st.out)
	var err error
	st.out, err = compress(st.out, st.part, codec, isXerial(st.hdr.Records))
	if err != nil {
		return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("records: %s compression: %w", Codec(st.hdr.Attributes), err)}
	}
	return st.finishBatch(pos, batchStart)
}

// cut is the state of a rebuilt batch being cut into parts as its records
// are written (Rewriter.SplitBytes, first offset delta 0): each record goes
// straight into the current part with its offset delta renumbered from the
// part's first record, and a record that would take the part past the
// limit starts the next one. Where the parts are cut is judged, as
// appendSplit judges it, from the records encoded with their offset deltas
// as in the input (bound), so the cuts do not depend on the renumbering.
type cut struct {
	start int   // uncompressed: where the part's header goes in st.out (the records follow it); compressed: st.body holds them
	base  int32 // the input offset delta of the part's first record
	n     int32 // records in the part
	last  int32 // renumbered offset delta of the part's last record
	maxTS int64 // largest timestamp delta in the part
	bound int   // the part's records, encoded with their input offset deltas
	parts int   // parts written before this one
	total int   // every record so far, as bound: the size of the batch rebuilt whole
	// err is the first error of a part (a record that cannot fit alone, a
	// part that fails to compress), reported once the batch has been read
	// to its end, where appendSplit would have: errors found while reading
	// come first. No more is written after it.
	err error
}

// startCut starts the first part of a cut batch, at the end of st.out.
func (st *state) startCut() {
	st.cut = cut{}
	st.body = st.body[:0]
	st.openPart(0) // uncompressed: its header goes at batchStart
}

// openPart starts a part whose first record has input offset delta base.
func (st *state) openPart(base int32) {
	c := &st.cut
	c.base, c.n, c.last, c.maxTS, c.bound = base, 0, 0, 0, 0
	if st.hdr.Attributes&attrCompression == codecNone {
		c.start = len(st.out)
		st.out = append(st.out, zeroHeader[:]...)
	}
}

// cutNext accounts for a record of size bytes (encoded with offset delta
// delta, as in the input) about to be written, closing the current part
// first if the record does not fit it. It reports whether to write the
// record: not once an error is pending.
func (st *state) cutNext(pos, size int, delta int32) bool {
	c := &st.cut
	c.total += size
	if c.err != nil {
		return false
	}
	if c.n > 0 && SplitBound(st.hdr.Attributes, c.bound+size) > st.split {
		if st.closePart(pos); c.err != nil {
			return false
		}
		c.parts++
		st.openPart(delta)
	}
	if c.n == 0 && SplitBound(st.hdr.Attributes, size) > st.split {
		c.err = &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("%w: %w: a record of %d bytes cannot fit a batch of %d bytes even alone", ErrTooLarge, ErrRecordTooLarge, size, st.split)}
		return false
	}
	c.bound += size
	return true
}

// cutAdded accounts for the record just written to the current part.
func (st *state) cutAdded(delta int32, ts int64) {
	c := &st.cut
	if c.n == 0 || ts > c.maxTS {
		c.maxTS = ts
	}
	c.last = delta - c.base
	c.n++
}

// partBuf is where the current part's records are written.
func (st *state) partBuf() *[]byte {
	if st.hdr.Attributes&attrCompression == codecNone {
		return &st.out
	}
	return &st.body
}

// cutRecord writes the record the callback changed to the current part.
func (st *state) cutRecord(pos int, r *Record) error {
	kr := kmsg.Record{
		Attributes:       r.attrs,
		TimestampDelta:   int32(r.tsDelta),
		TimestampDelta64: r.tsDelta,
		OffsetDelta:      r.offDelta,
		Key:              r.Key,
		Value:            r.Value,
		Headers:          r.Headers,
	}
	n := recordBodyLen(&kr)
	if n > math.MaxInt32 {
		return fmt.Errorf("%w: record of %d bytes", ErrTooLarge, n)
	}
	if !st.cutNext(pos, varintLen(int64(n))+n, r.offDelta) {
		return nil
	}
	d := r.offDelta - st.cut.base
	kr.OffsetDelta = d
	kr.Length = int32(n - varintLen(int64(r.offDelta)) + varintLen(int64(d)))
	b := st.partBuf()
	*b = kr.AppendTo(*b)
	st.cutAdded(r.offDelta, r.tsDelta)
	return nil
}

// cutRaw writes the encoded record at the start of recs (one the callback
// did not change) to the current part and returns its size.
func (st *state) cutRaw(pos int, recs []byte) (int, error) {
	size, ts, off, err := st.recordDeltas(pos, recs, 0)
	if err != nil {
		return 0, err
	}
	if !st.cutNext(pos, size, off) {
		return size, nil
	}
	b := st.partBuf()
	if st.cut.base == 0 {
		*b = append(*b, recs[:size]...)
	} else {
		*b = appendRenumbered(*b, recs[:size], off-st.cut.base)
	}
	st.cutAdded(off, ts)
	return size, nil
}

// closePart writes the current part's header (and, compressed, its
// records) and sets its length and CRC; an error is left in st.cut.err.
func (st *state) closePart(pos int) {
	c := &st.cut
	h := st.partHeader(c.base, c.last, c.n, c.maxTS)
	c.err = st.writePart(pos, &h)
}

// writePart writes the current part with header h.
func (st *state) writePart(pos int, h *kmsg.RecordBatch) error {
	c := &st.cut
	codec := st.hdr.Attributes & attrCompression
	if codec == codecNone {
		if hb := h.AppendTo(st.out[c.start:c.start]); len(hb) != batchHeaderLen {
			return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("records: batch header of %d bytes", len(hb))}
		}
		return st.finishBatch(pos, c.start)
	}
	c.start = len(st.out)
	st.out = h.AppendTo(st.out)
	var err error
	st.out, err = compress(st.out, st.body, codec, isXerial(st.hdr.Records))
	st.body = st.body[:0]
	if err != nil {
		return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("records: %s compression: %w", Codec(st.hdr.Attributes), err)}
	}
	return st.finishBatch(pos, c.start)
}

// endCut finishes a cut batch: if no cut was needed, its one part is the
// batch rebuilt whole, under the input's header; else the last part.
func (st *state) endCut(pos, batchStart int) error {
	c := &st.cut
	if c.err != nil {
		return c.err
	}
	if c.parts == 0 {
		h := st.hdr
		h.Records = nil
		c.start = batchStart
		return st.writePart(pos, &h)
	}
	st.closePart(pos)
	return c.err
}

// recordDeltas reads the length prefix, timestamp delta and offset delta
// of the encoded record at recs[p:]; size is the record's size with its
// length prefix.
func (st *state) recordDeltas(pos int, recs []byte, p int) (size int, ts int64, off int32, err error) {
	l, ln := binary.Varint(recs[p:])
	if ln <= 0 || l < 1 || int64(len(recs)-p-ln) < l {
		return 0, 0, 0, &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: corrupt("rebuilt record at byte %d: bad length", p)}
	}
	rec := recs[p+ln : p+ln+int(l)] // attributes | timestamp delta | offset delta | key, value, headers
	ts, tn := binary.Varint(rec[1:])
	if tn <= 0 {
		return 0, 0, 0, &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: corrupt("rebuilt record at byte %d: bad timestamp delta", p)}
	}
	o, on := binary.Varint(rec[1+tn:])
	if on <= 0 || o < math.MinInt32 || o > math.MaxInt32 {
		return 0, 0, 0, &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: corrupt("rebuilt record at byte %d: bad offset delta", p)}
	}
	return ln + int(l), ts, int32(o), nil
}

// appendRenumbered appends the encoded record rec (length prefix
// included, as read by recordDeltas) with offset delta delta: only the
// length prefix and the offset delta change, the rest is copied.
func appendRenumbered(dst, rec []byte, delta int32) []byte {
	_, ln := binary.Varint(rec)
	body := rec[ln:] // attributes | timestamp delta | offset delta | key, value, headers
	_, tn := binary.Varint(body[1:])
	_, on := binary.Varint(body[1+tn:])
	rest := body[1+tn+on:]
	dst = binary.AppendVarint(dst, int64(1+tn+varintLen(int64(delta))+len(rest)))
	dst = append(dst, body[:1+tn]...)
	dst = binary.AppendVarint(dst, int64(delta))
	return append(dst, rest...)
}

// zeroHeader reserves a batch header's room.
var zeroHeader [batchHeaderLen]byte

// partHeader is the header of one batch of a split: st.hdr's, with the
// record count, last offset delta, base sequence and max timestamp of the
// records it holds.
func (st *state) partHeader(base, last, n int32, maxTS int64) kmsg.RecordBatch {
	h := st.hdr
	h.Records = nil
	h.NumRecords = n
	h.LastOffsetDelta = last
	if h.FirstSequence >= 0 {
		h.FirstSequence = incrementSequence(h.FirstSequence, base)
	}
	if h.Attributes&attrLogAppend == 0 {
		h.MaxTimestamp = h.FirstTimestamp + maxTS
	}
	return h
}

// incrementSequence is Kafka's DefaultRecordBatch.incrementSequence:
// sequences wrap from MaxInt32 to 0.
func incrementSequence(seq, inc int32) int32 {
	if seq > math.MaxInt32-inc {
		return inc - (math.MaxInt32 - seq) - 1
	}
	return seq + inc
}

// appendRecord encodes r with kmsg.Record, whose Length (the varint length
// prefix) must be set by the caller: that is the only glue here.
func appendRecord(dst []byte, r *Record) ([]byte, error) {
	kr := kmsg.Record{
		Attributes:       r.attrs,
		TimestampDelta:   int32(r.tsDelta),
		TimestampDelta64: r.tsDelta,
		OffsetDelta:      r.offDelta,
		Key:              r.Key,
		Value:            r.Value,
		Headers:          r.Headers,
	}
	n := recordBodyLen(&kr)
	if n > math.MaxInt32 {
		return dst, fmt.Errorf("%w: record of %d bytes", ErrTooLarge, n)
	}
	kr.Length = int32(n)
	return kr.AppendTo(dst), nil
}

// recordBodyLen is the encoded size of a record after its length prefix.
func recordBodyLen(r *kmsg.Record) int {
	n := 1 + varintLen(r.TimestampDelta64) + varintLen(int64(r.OffsetDelta)) +
		bytesLen(r.Key) + bytesLen(r.Value) + varintLen(int64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		n += varintLen(int64(len(h.Key))) + len(h.Key) + bytesLen(h.Value)
	}
	return n
}

func bytesLen(b []byte) int {
	if b == nil {
		return 1 // varint -1
	}
	return varintLen(int64(len(b))) + len(b)
}

// varintLen is the size of v as a zig-zag varint (Kafka's varint and
// varlong; for an int32 the two agree).
func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63)
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}
