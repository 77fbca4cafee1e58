package records

import (
	"hash/crc32"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Batch is one entry of a partition's record bytes, as [Walk] sees it.
type Batch struct {
	// Raw is the batch as on the wire; for a partial batch, the rest of
	// the input.
	Raw []byte
	// Pos is the byte position of Raw in the input.
	Pos int
	// Magic is the message format (0, 1 or 2), -1 for a partial batch
	// too short to hold it.
	Magic int8
	// Partial marks a truncated trailing batch (a Fetch response cut at
	// max_bytes). Nothing but Raw, Pos and Magic is set for it.
	Partial bool
	// Header is the parsed header of a complete magic 2 batch; its Records
	// field is the raw, possibly compressed, records section.
	Header kmsg.RecordBatch
}

// IsControl reports a control batch (transaction markers).
func (b *Batch) IsControl() bool {
	return !b.Partial && b.Magic == 2 && b.Header.Attributes&attrControl != 0
}

// IsTransactional reports a batch written in a transaction.
func (b *Batch) IsTransactional() bool {
	return !b.Partial && b.Magic == 2 && b.Header.Attributes&attrTxn != 0
}

// Codec names the batch's compression codec (see [Codec]); "" unless the
// batch is a complete magic 2 batch.
func (b *Batch) Codec() string {
	if b.Partial || b.Magic != 2 {
		return ""
	}
	return Codec(b.Header.Attributes)
}

// CRCValid reports whether the CRC-32C of a complete magic 2 batch
// verifies.
func (b *Batch) CRCValid() bool {
	if b.Partial || b.Magic != 2 {
		return false
	}
	return crc32.Checksum(b.Raw[offAttributes:], crcTable) == uint32(b.Header.CRC)
}

// Records decompresses a complete magic 2 data batch and calls fn for each
// record, read-only (changes fn makes are discarded). The CRC is not
// checked: call CRCValid first if it matters. For control batches, message
// sets of magic 0/1 and partial batches it does nothing. The Record is only
// valid during fn. The decompressed size is bounded by
// DefaultMaxDecompressedBytes; see [Rewriter.Records] for another bound.
func (b *Batch) Records(fn func(r *Record) error) error {
	return defaultRewriter.Records(b, fn)
}

// Records is [Batch.Records] with the decompression bound of rw.
func (rw *Rewriter) Records(b *Batch, fn func(r *Record) error) error {
	if b.Partial || b.Magic != 2 || b.IsControl() {
		return nil
	}
	st := getState()
	defer st.release()
	st.limit = rw.limit()
	body, _, err := st.openBatch(b.Raw, false)
	if err != nil {
		return &BatchError{Pos: b.Pos, BaseOffset: b.Header.FirstOffset, Err: err}
	}
	p := 0
	for i := int32(0); i < st.hdr.NumRecords; i++ {
		if p >= len(body) {
			return &BatchError{Pos: b.Pos, BaseOffset: b.Header.FirstOffset, Err: corrupt("%d records declared, %d found", st.hdr.NumRecords, i)}
		}
		end, err := st.readRecord(body, p)
		if err != nil {
			return &BatchError{Pos: b.Pos, BaseOffset: b.Header.FirstOffset, Err: err}
		}
		if err := fn(&st.rec); err != nil {
			return err
		}
		p = end
	}
	if p != len(body) {
		return &BatchError{Pos: b.Pos, BaseOffset: b.Header.FirstOffset, Err: corrupt("%d bytes after the last record", len(body)-p)}
	}
	return nil
}

// Walk calls fn for each batch in a partition's record bytes, without
// decompressing anything. It returns a *BatchError for framing it cannot
// follow (negative or too short length, unknown magic), or fn's error.
// The Batch is reused between calls.
func Walk(batches []byte, fn func(b *Batch) error) error {
	var b Batch
	for pos := 0; pos < len(batches); {
		n, kind, err := frame(batches[pos:])
		if err != nil {
			return &BatchError{Pos: pos, BaseOffset: baseOffset(batches[pos:]), Err: err}
		}
		b = Batch{Raw: batches[pos : pos+n], Pos: pos, Magic: -1}
		switch kind {
		case kindPartial:
			b.Partial = true
			if n > offMagic {
				b.Magic = int8(b.Raw[offMagic])
			}
		case kindLegacy:
			b.Magic = int8(b.Raw[offMagic])
			b.Header.FirstOffset = baseOffset(b.Raw)
		case kindV2:
			if err := b.Header.ReadFrom(b.Raw); err != nil {
				return &BatchError{Pos: pos, BaseOffset: baseOffset(b.Raw), Err: corrupt("batch header: %v", err)}
			}
			b.Magic = 2
		}
		if err := fn(&b); err != nil {
			return err
		}
		pos += n
	}
	return nil
}
