package records

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

// Verdict is what a [Rewriter.Filter] callback decides for one record.
type Verdict uint8

const (
	// Keep copies the record as it was (changes the callback made to it
	// are ignored).
	Keep Verdict = iota
	// Changed re-encodes the record with the callback's changes.
	Changed
	// Drop removes the record from its batch.
	Drop
)

// offNumRecords is the byte offset of NumRecords in a magic 2 batch header.
const offNumRecords = batchHeaderLen - 4

// Filter is [Rewriter.Rewrite] with one more choice per record: Drop
// removes it. A batch that loses records is rebuilt the way Kafka's log
// cleaner rebuilds a compacted batch: base offset, last offset delta,
// producer id, epoch, base sequence, timestamps and attributes stay, so a
// consumer's position still advances past the whole batch and idempotence
// and transaction state are unchanged; only the record count and the
// records section shrink. The surviving records keep their offset and
// timestamp deltas. A batch left with no record stays as an empty batch
// (NumRecords 0, no records section, compression bits cleared, as Kafka
// writes empty retained batches), never removed, so its offset range is
// still covered.
//
// Control batches, message sets of magic 0/1 and partial trailing batches
// pass untouched, exactly as with Rewrite (Strict applies too).
//
// out, changed and err follow Rewrite: when nothing is dropped or changed,
// out is batches itself and nothing is allocated.
func (rw *Rewriter) Filter(dst, batches []byte, fn func(r *Record) (Verdict, error)) (out []byte, changed bool, err error) {
	st := getState()
	defer st.release()
	st.in, st.dst, st.limit = batches, dst, rw.limit()

	return st.walk(rw.Strict, batches, func(pos int, raw []byte) error { return st.filterBatch(pos, raw, fn) })
}

// Filter is [Rewriter.Filter] with the zero Rewriter.
func Filter(dst, batches []byte, fn func(r *Record) (Verdict, error)) ([]byte, bool, error) {
	return defaultRewriter.Filter(dst, batches, fn)
}

func (st *state) filterBatch(pos int, raw []byte, fn func(*Record) (Verdict, error)) error {
	body, control, err := st.openBatch(raw, true)
	if err != nil {
		return &BatchError{Pos: pos, BaseOffset: baseOffset(raw), Err: err}
	}
	if control || st.hdr.NumRecords == 0 {
		st.copyRaw(raw)
		return nil
	}
	codec := st.hdr.Attributes & attrCompression
	var (
		rebuilt    bool
		batchStart int
		p          int
		kept       int32
	)
	// w appends to the records section being rebuilt.
	w := func(b []byte) {
		if codec == codecNone {
			st.out = append(st.out, b...)
		} else {
			st.body = append(st.body, b...)
		}
	}
	for i := int32(0); i < st.hdr.NumRecords; i++ {
		if p >= len(body) {
			return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: corrupt("%d records declared, %d found", st.hdr.NumRecords, i)}
		}
		end, err := st.readRecord(body, p)
		if err != nil {
			return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: err}
		}
		v, err := fn(&st.rec)
		if err != nil {
			return fmt.Errorf("records: record at offset %d: %w", st.rec.Offset(), err)
		}
		if v != Keep && !rebuilt {
			rebuilt = true
			st.begin(pos)
			batchStart = len(st.out)
			h := st.hdr
			h.Records = nil
			st.out = h.AppendTo(st.out)
			st.body = st.body[:0]
			w(body[:p])
		}
		switch {
		case v == Drop:
		case v == Changed:
			kept++
			if codec == codecNone {
				st.out, err = appendRecord(st.out, &st.rec)
			} else {
				st.body, err = appendRecord(st.body, &st.rec)
			}
			if err != nil {
				return err
			}
		default:
			kept++
			if rebuilt {
				w(body[p:end])
			}
		}
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
	b := st.out[batchStart:]
	binary.BigEndian.PutUint32(b[offNumRecords:], uint32(kept))
	switch {
	case kept == 0:
		// An empty batch: no records section, no compression (Kafka's
		// writeEmptyHeader). Attributes are a big-endian int16 at 21.
		st.out = st.out[:batchStart+batchHeaderLen]
		b = st.out[batchStart:]
		attrs := binary.BigEndian.Uint16(b[offAttributes:]) &^ uint16(attrCompression)
		binary.BigEndian.PutUint16(b[offAttributes:], attrs)
	case codec != codecNone:
		st.out, err = compress(st.out, st.body, codec, isXerial(st.hdr.Records))
		if err != nil {
			return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: fmt.Errorf("records: %s compression: %w", Codec(st.hdr.Attributes), err)}
		}
	}
	length := len(st.out) - batchStart - 12
	if length > math.MaxInt32 {
		return &BatchError{Pos: pos, BaseOffset: st.hdr.FirstOffset, Err: ErrTooLarge}
	}
	b = st.out[batchStart:]
	binary.BigEndian.PutUint32(b[offLength:], uint32(length))
	binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], crcTable))
	return nil
}
