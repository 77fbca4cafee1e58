package policy

import (
	"github.com/strait-proxy/strait/crypto/fields"
	"github.com/strait-proxy/strait/records"
)

// "encrypted" on a record decrypt opened: the field the consumer gets is
// the one the broker sent, its original ciphertext. decrypt leaves the
// partition's batches as the broker sent them on the Exchange
// (decrypt.Original); the record is found there by offset and the field
// by the same path. The original is a JSON string (an envelope in
// base64), spliced in as it was; Strait's encryption headers are not put
// back (the record is otherwise decrypted, and a downstream decrypt would
// try to open its clear fields), so this consumer gets the ciphertext and
// nobody can open it from this record. Where no original is found (the
// value was encrypted whole, the field is absent there, an Avro or
// Protobuf value) the field is redacted as before: fail closed.

// origField is the applier's orig function for the run's current record.
func (f *filterRun) origField(path string) []byte {
	if f.origIdx == nil {
		f.origIdx = map[int64][]byte{}
		_ = records.Walk(f.orig, func(b *records.Batch) error {
			return f.p.rw.Records(b, func(r *records.Record) error {
				if r.Value != nil {
					f.origIdx[r.Offset()] = append([]byte(nil), r.Value...)
				}
				return nil
			})
		})
	}
	v := f.origIdx[f.cur]
	if v == nil {
		return nil
	}
	w := f.origW[path]
	if w == nil {
		var err error
		if w, err = fields.NewJSON([]string{path}); err != nil {
			return nil
		}
		if f.origW == nil {
			f.origW = map[string]fields.Walker{}
		}
		f.origW[path] = w
	}
	var raw []byte
	if _, err := w.Seal(nil, v, func(_ string, pt []byte) ([]byte, error) {
		raw = pt
		return nil, nil
	}); err != nil || len(raw) < 2 || raw[0] != '"' {
		return nil
	}
	return raw
}
