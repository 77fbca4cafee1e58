package envelope

import (
	"errors"
	"fmt"
	"iter"
)

// HeaderKey is the Kafka record header that marks a record whose key and/or
// value is an envelope (whole-record encryption). Its value lists the
// encrypted parts (see Parts.HeaderValue). Field-level encryption does not
// need it: the field rule says which fields hold envelopes.
const HeaderKey = "strait.enc"

// KeyRefHeader is the record header that holds the key reference of the
// detached envelopes (Version2) in the record's fields: the wrapped data key,
// once per record instead of once per field.
const KeyRefHeader = "strait.key"

// Parts says which parts of a record are envelopes.
type Parts uint8

const (
	PartValue  Parts = 1 << iota // the record value is an envelope (AAD path PathValue)
	PartKey                      // the record key is an envelope (AAD path PathKey)
	PartFields                   // some fields of the value are envelopes (informational)
)

// partLetters is the header value alphabet, in canonical order.
var partLetters = [...]struct {
	p Parts
	c byte
}{{PartKey, 'k'}, {PartValue, 'v'}, {PartFields, 'f'}}

// HeaderValue is the value of the HeaderKey header: one ASCII letter per part
// in the order k, v, f ("v", "kv", "f", ...).
func (p Parts) HeaderValue() []byte {
	out := make([]byte, 0, 3)
	for _, l := range partLetters {
		if p&l.p != 0 {
			out = append(out, l.c)
		}
	}
	return out
}

// ErrBadHeader reports a malformed or duplicated HeaderKey header.
var ErrBadHeader = errors.New("envelope: bad " + HeaderKey + " header")

// ParseHeaderValue parses the value of a HeaderKey header. It requires the
// canonical form HeaderValue produces.
func ParseHeaderValue(v []byte) (Parts, error) {
	var p Parts
	i := 0
	for _, l := range partLetters {
		if i < len(v) && v[i] == l.c {
			p |= l.p
			i++
		}
	}
	if i != len(v) || p == 0 {
		return 0, fmt.Errorf("%w: value %q", ErrBadHeader, v)
	}
	return p, nil
}

// EncryptedParts tells whether a record is encrypted, from its headers
// (key, value pairs in record order). It returns 0 and no error for a record
// without the HeaderKey header, and ErrBadHeader for a malformed or repeated
// one (treat such a record as undecryptable, never as plaintext).
func EncryptedParts(headers iter.Seq2[string, []byte]) (Parts, error) {
	var parts Parts
	seen := false
	for k, v := range headers {
		if k != HeaderKey {
			continue
		}
		if seen {
			return 0, fmt.Errorf("%w: repeated", ErrBadHeader)
		}
		seen = true
		p, err := ParseHeaderValue(v)
		if err != nil {
			return 0, err
		}
		parts = p
	}
	return parts, nil
}

// HeaderOverhead is the number of bytes the HeaderKey header adds to a Kafka
// record (v2 record format: varint key length, key, varint value length,
// value), for the given parts. The record's header count is a varint that
// stays one byte below 64 headers.
func HeaderOverhead(p Parts) int {
	return 1 + len(HeaderKey) + 1 + len(p.HeaderValue())
}
