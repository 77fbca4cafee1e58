package policy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hamba/avro/v2"

	"github.com/strait-proxy/strait/crypto/fields"
)

// The JSON walkers of crypto/fields find the selected values of a document
// without decoding the rest. Their Seal callback receives each selected
// value as a sub-slice of the input (documented: "plaintext aliases the
// input value"), so its position is cap(value)-cap(plaintext). The policy
// uses a walker only to find spans, and splices the replacements itself:
// every byte outside a changed field stays as it was.

type span struct {
	start, end int
	act        action
	path       string // concrete path (for the original ciphertext of "encrypted")
}

// counts are the field changes of one decision batch.
type counts struct {
	redacted, masked, tokenized, encrypted int
}

// applier holds the scratch of one response (not shared between
// goroutines).
type applier struct {
	spans   []span
	scratch []byte
	out     []byte
	tok     *tokenizer
	vals    [][]byte
	cur     *group
	value   []byte
	canon   []string
	locs    []loc    // locate: the paths found, in document order
	curLoc  *locator // locate: the locator walking
	// orig, when set, returns a field of the current record as the broker
	// sent it, before decrypt opened it (nil: unknown): what "encrypted"
	// leaves in place of the decrypted field (original.go).
	orig func(path string) []byte
	// the callbacks, bound once (a method value allocates per use)
	locateFn, collectFn, findFn fields.SealFunc
}

func newApplier(tok *tokenizer) *applier {
	ap := &applier{tok: tok}
	ap.locateFn, ap.collectFn, ap.findFn = ap.spanOf, ap.collect, ap.find
	return ap
}

// collect is the SealFunc of extract.
func (ap *applier) collect(p string, pt []byte) ([]byte, error) {
	for i, c := range ap.canon {
		if c == p {
			ap.vals[i] = pt
		}
	}
	return nil, nil
}

var errAlias = errors.New("policy: walker returned a value that does not alias the input")

// spanOf is the SealFunc that records spans.
func (ap *applier) spanOf(p string, pt []byte) ([]byte, error) {
	off := cap(ap.value) - cap(pt)
	if len(pt) == 0 || off < 0 || off+len(pt) > len(ap.value) || &ap.value[off] != &pt[0] {
		return nil, errAlias
	}
	ap.spans = append(ap.spans, span{off, off + len(pt), ap.cur.act, p})
	return nil, nil
}

// extract finds the raw values of paths (a walker over exactly those
// paths; canon are their canonical forms) in value; vals[i] is nil where
// a path is absent.
func (ap *applier) extract(w fields.Walker, canon []string, value []byte) ([][]byte, error) {
	ap.vals = ap.vals[:0]
	for range canon {
		ap.vals = append(ap.vals, nil)
	}
	ap.canon = canon
	var err error
	ap.scratch, err = w.Seal(ap.scratch[:0], value, ap.collectFn)
	ap.canon = nil
	return ap.vals, err
}

// apply rewrites value by decision d. stillEncrypted says the record
// still carries Strait's encryption header (the encrypted action leaves
// such a field as it is; on a decrypted record it redacts). It returns the
// new value (valid until the next call) and whether anything changed.
func (ap *applier) apply(d *decision, value []byte, stillEncrypted bool, c *counts) ([]byte, bool, error) {
	if len(d.groups) == 0 || value == nil {
		return value, false, nil
	}
	if d.proto {
		return ap.applyProto(d, value, stillEncrypted, c)
	}
	ap.spans = ap.spans[:0]
	ap.value = value
	for i := range d.groups {
		ap.cur = &d.groups[i]
		var err error
		ap.scratch, err = ap.cur.walker.Seal(ap.scratch[:0], value, ap.locateFn)
		if err != nil {
			ap.value, ap.cur = nil, nil
			return nil, false, err
		}
	}
	ap.value, ap.cur = nil, nil
	if len(ap.spans) == 0 {
		return value, false, nil
	}
	// insertion sort: a handful of spans, no allocation
	for i := 1; i < len(ap.spans); i++ {
		for j := i; j > 0 && ap.spans[j].start < ap.spans[j-1].start; j-- {
			ap.spans[j], ap.spans[j-1] = ap.spans[j-1], ap.spans[j]
		}
	}
	if d.avro {
		return ap.applyAvro(d, value, stillEncrypted, c)
	}
	return ap.splice(value, stillEncrypted, c)
}

// splice writes value with the JSON replacements of ap.spans (sorted by
// start) into ap.out; every other byte is copied.
func (ap *applier) splice(value []byte, stillEncrypted bool, c *counts) ([]byte, bool, error) {
	out := ap.out[:0]
	last := 0
	changed := false
	for _, s := range ap.spans {
		if s.start < last { // inside a field already replaced
			continue
		}
		raw := value[s.start:s.end]
		k := s.act.kind
		if k == kEncrypted && stillEncrypted {
			c.encrypted++
			continue
		}
		out = append(out, value[last:s.start]...)
		var err error
		var ct []byte
		if k == kEncrypted && ap.orig != nil {
			ct = ap.orig(s.path)
		}
		switch {
		case ct != nil:
			out = append(out, ct...) // the field's original ciphertext
			c.encrypted++
		case k == kRedact, k == kEncrypted:
			out = append(out, "null"...)
			c.redacted++
		case k == kMask:
			out = maskJSON(out, raw, s.act)
			c.masked++
		case k == kTokenize:
			if ap.tok == nil {
				return nil, false, errors.New("policy: tokenize needs tokenize.key_env or tokenize.key_file")
			}
			out, err = tokenJSON(out, raw, ap.tok)
			if err != nil {
				return nil, false, err
			}
			c.tokenized++
		}
		last = s.end
		changed = true
	}
	if !changed {
		return value, false, nil
	}
	out = append(out, value[last:]...)
	ap.out = out
	return out, true, nil
}

// stringBody returns the body of a JSON string without escapes, or nil.
func stringBody(raw []byte) []byte {
	if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1]
	}
	return nil
}

// maskJSON appends the masked JSON string for raw.
func maskJSON(dst, raw []byte, a action) []byte {
	if a.with != "" {
		q, _ := json.Marshal(a.with)
		return append(dst, q...)
	}
	body := stringBody(raw)
	if body == nil {
		if raw[0] == '"' || raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9' {
			// a string with escapes or a number: its text, fully masked
			// when it has escapes (keeping a tail could split one).
			body = raw
			if raw[0] == '"' {
				a.keepLast = 0
				body = raw[1 : len(raw)-1]
			}
		} else {
			return append(dst, `"****"`...) // objects, arrays, booleans
		}
	}
	dst = append(dst, '"')
	dst = mask(dst, body, a)
	return append(dst, '"')
}

// tokenJSON appends the token of raw as a JSON string.
func tokenJSON(dst, raw []byte, t *tokenizer) ([]byte, error) {
	body := stringBody(raw)
	if body == nil {
		body = raw
	}
	dst = append(dst, '"')
	dst, err := t.token(dst, body)
	if err != nil {
		return dst, fmt.Errorf("policy: tokenize: %w", err)
	}
	return append(dst, '"'), nil
}

// applyAvro splices the spans of an Avro value: each selected field is a
// string or bytes content behind its zig-zag varint length, replaced with
// the new content and its length. Avro records carry no enclosing lengths,
// but an array block written with a negative count carries its byte size:
// the result is therefore decoded with the writer schema, and a value that
// does not decode fails closed.
func (ap *applier) applyAvro(d *decision, value []byte, stillEncrypted bool, c *counts) ([]byte, bool, error) {
	out := ap.out[:0]
	last := 0
	changed := false
	var n counts
	for _, s := range ap.spans {
		if s.start < last {
			continue
		}
		content := value[s.start:s.end]
		k := s.act.kind
		if k == kEncrypted && stillEncrypted {
			n.encrypted++
			continue
		}
		var lenBuf [binary.MaxVarintLen64]byte
		pfx := binary.PutVarint(lenBuf[:], int64(len(content)))
		if s.start < pfx || !bytes.Equal(value[s.start-pfx:s.start], lenBuf[:pfx]) {
			return nil, false, errors.New("policy: avro: field length prefix not found")
		}
		out = append(out, value[last:s.start-pfx]...)
		mark := len(out)
		out = append(out, lenBuf[:binary.MaxVarintLen64]...) // room for the prefix
		body := len(out)
		var err error
		switch k {
		case kRedact, kEncrypted:
			n.redacted++
		case kMask:
			out = mask(out, content, s.act)
			n.masked++
		case kTokenize:
			if ap.tok == nil {
				return nil, false, errors.New("policy: tokenize needs tokenize.key_env or tokenize.key_file")
			}
			if out, err = ap.tok.token(out, content); err != nil {
				return nil, false, fmt.Errorf("policy: tokenize: %w", err)
			}
			n.tokenized++
		}
		l := binary.PutVarint(lenBuf[:], int64(len(out)-body))
		copy(out[mark:], lenBuf[:l])
		out = append(out[:mark+l], out[body:]...)
		last = s.end
		changed = true
	}
	if !changed {
		c.encrypted += n.encrypted
		return value, false, nil
	}
	out = append(out, value[last:]...)
	ap.out = out
	id, _, payload, err := fields.ParseWire(out, false)
	if err != nil {
		return nil, false, err
	}
	schema, err := d.tf.AvroSchema(id)
	if err != nil {
		return nil, false, err
	}
	var v any
	if err := avro.Unmarshal(schema, payload, &v); err != nil {
		return nil, false, fmt.Errorf("policy: avro: the rewritten value does not decode: %w", err)
	}
	c.redacted += n.redacted
	c.masked += n.masked
	c.tokenized += n.tokenized
	c.encrypted += n.encrypted
	return out, true, nil
}
