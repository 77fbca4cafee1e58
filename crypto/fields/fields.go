// Package fields encrypts and decrypts chosen fields inside serialized record
// values (JSON, and Avro or Protobuf in the Confluent wire format) without
// re-serializing them: every byte that is not a selected field is copied
// unchanged, and a selected field is replaced in place by its ciphertext.
//
// The package knows nothing about keys or envelopes: the caller passes a
// SealFunc/OpenFunc that wraps the envelope engine. The field's concrete path
// (see Walker) is passed to those callbacks so that the engine can bind it as
// AEAD additional data; a ciphertext moved to another field then fails to open.
//
// See docs/fields.md for the path syntax and per-format rules.
package fields

import (
	"errors"
	"fmt"
)

// SealFunc turns a field's plaintext bytes into ciphertext bytes. The caller
// wraps the envelope engine; path is the concrete path of the field (wildcards
// replaced by positions, e.g. `$.items[2].ssn`) and must be bound as AEAD
// additional data. plaintext aliases the input value and must not be modified
// or retained after the call returns. The returned slice is copied by the
// walker and may be reused by the caller afterwards.
type SealFunc func(path string, plaintext []byte) ([]byte, error)

// OpenFunc is the inverse of SealFunc. ciphertext is only valid during the
// call (walkers reuse the buffer). The returned plaintext is copied.
type OpenFunc func(path string, ciphertext []byte) ([]byte, error)

// Walker encrypts/decrypts the configured fields of one serialized value.
//
// Seal and Open append the rewritten value to dst and return the extended
// slice (dst may be nil). On error the returned slice must be ignored; dst's
// spare capacity may have been written to. Walkers are safe for concurrent use.
// A configured path that is absent from a value is skipped; a malformed value
// (not valid JSON, not decodable with its writer schema, bad wire header) is an
// error wrapping ErrMalformed; on Open, a selected field that is not a sealed
// field is an error wrapping ErrNotSealed. Errors returned by the callbacks are
// wrapped and returned as is (errors.Is/As work).
type Walker interface {
	Seal(dst, value []byte, fn SealFunc) ([]byte, error)
	Open(dst, value []byte, fn OpenFunc) ([]byte, error)
}

var (
	// ErrMalformed reports a value that cannot be parsed in its format.
	ErrMalformed = errors.New("fields: malformed value")
	// ErrNotSealed reports, on Open, a selected field whose content is not a
	// sealed field (wrong type or not decodable ciphertext representation).
	ErrNotSealed = errors.New("fields: field is not sealed")
	// ErrPath reports an invalid path expression.
	ErrPath = errors.New("fields: invalid path")
	// ErrPathNotFound is wrapped by CheckAvro/CheckProtobuf for a path that
	// does not resolve in the schema (at run time such paths are skipped).
	ErrPathNotFound = errors.New("fields: path not found in schema")
	// ErrSchema reports a schema that cannot be obtained or used (unknown
	// schema id, registry unreachable, unparsable schema, bad message index).
	ErrSchema = errors.New("fields: schema")
)

// FieldTypeError reports a path that names a field whose type may not be
// encrypted (Avro/Protobuf fields must be string or bytes).
type FieldTypeError struct {
	Path string // configured path
	Type string // the offending type, as written in the schema
	// Reason explains what is allowed, e.g. "must be string or bytes".
	Reason string
}

func (e *FieldTypeError) Error() string {
	return fmt.Sprintf("fields: path %s has type %s: %s", e.Path, e.Type, e.Reason)
}

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
}

func notSealed(path string, format string, a ...any) error {
	return fmt.Errorf("%w: %s: "+format, append([]any{ErrNotSealed, path}, a...)...)
}

// callbackError wraps an error returned by SealFunc/OpenFunc with its path.
type callbackError struct {
	path string
	err  error
}

func (e *callbackError) Error() string { return "fields: " + e.path + ": " + e.err.Error() }
func (e *callbackError) Unwrap() error { return e.err }

// insertAt inserts hdr at position mark of b, shifting b[mark:] right
// (used to write a length prefix once the content it measures is known).
func insertAt(b []byte, mark int, hdr []byte) []byte {
	n := len(hdr)
	if n == 0 {
		return b
	}
	b = append(b, hdr...) // grow
	copy(b[mark+n:], b[mark:len(b)-n])
	copy(b[mark:], hdr)
	return b
}
