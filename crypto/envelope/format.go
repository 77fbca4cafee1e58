// Package envelope is Strait's envelope encryption: the versioned byte format
// of an encrypted value or field, and the engines that produce it (Sealer) and
// read it (Opener) with data keys (DEKs) from a kms.Provider.
//
// Every envelope carries everything needed to decrypt it: the provider kind,
// the key-encryption key (KEK) id, the DEK wrapped by that KEK, the nonce and
// the AES-256-GCM ciphertext and tag. Nothing is looked up in any other
// record, so log compaction can delete any other record of a batch.
// docs/encryption.md is the normative byte-level specification.
//
// Format version 1:
//
//	magic/version(1)=0xE1 | flags(1) | key id length(1) | key id |
//	uvarint(wrapped DEK length) | wrapped DEK | uvarint(nonce counter) |
//	ciphertext | tag(16)
//
//	flags: bits 0-3 provider kind, bit 4 topic bound, bits 5-7 zero.
//	nonce (12 bytes) = 00 00 00 00 | counter as uint64 big-endian.
//	AAD = every envelope byte before the ciphertext |
//	      [uvarint(len(topic)) | topic, if the topic-bound flag is set] |
//	      uvarint(len(path)) | path
package envelope

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version1 is the first byte of a format-1 envelope: magic nibble 0xE, version 1.
const Version1 = 0xE1

const (
	magicMask  = 0xF0
	magicValue = 0xE0

	flagKindMask  = 0x0F
	flagTopic     = 0x10
	flagsReserved = 0xE0

	// NonceSize and TagSize are AES-GCM's standard sizes.
	NonceSize = 12
	TagSize   = 16

	// MaxKeyIDLen is the longest KEK id an envelope can name.
	MaxKeyIDLen = 255
	// MaxWrappedLen bounds the wrapped DEK (AWS KMS ciphertext blobs are at
	// most 6144 bytes).
	MaxWrappedLen = 8192
)

// Kind is the provider kind stored in an envelope (flags bits 0-3).
type Kind uint8

// Provider kinds. The numbers are part of the format; never renumber.
const (
	KindLocal        Kind = 1
	KindAWSKMS       Kind = 2
	KindVaultTransit Kind = 3
	KindPKCS11       Kind = 4
)

var kindNames = [...]string{
	KindLocal:        "local",
	KindAWSKMS:       "aws-kms",
	KindVaultTransit: "vault-transit",
	KindPKCS11:       "pkcs11",
}

// String returns the provider name for the kind (kms.Provider.Name()).
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// KindOf maps a provider name (kms.Provider.Name()) to its kind.
func KindOf(providerName string) (Kind, bool) {
	for k, n := range kindNames {
		if n != "" && n == providerName {
			return Kind(k), true
		}
	}
	return 0, false
}

// Errors. Every failure to open an envelope matches exactly one of
// ErrTampered, ErrUnsupported or ErrNoProvider with errors.Is, or wraps a
// kms error (kms.ErrUnavailable, kms.ErrKeyNotFound, kms.ErrAccessDenied).
// A wrapped DEK the KMS rejects as invalid matches both ErrTampered and
// kms.ErrInvalidCiphertext.
var (
	// ErrTampered: the envelope is malformed or fails authentication (a
	// flipped byte, a wrong topic or field path, a swapped wrapped key, a
	// ciphertext moved to another field).
	ErrTampered = errors.New("envelope: tampered or corrupt")
	// ErrUnsupported: an envelope format version, provider kind or flag this
	// build does not know (or a corrupt first bytes).
	ErrUnsupported = errors.New("envelope: unsupported format")
	// ErrNoProvider: the envelope names a provider kind the Opener was not
	// given.
	ErrNoProvider = errors.New("envelope: no provider configured for envelope")
)

// AAD is the context bound to a ciphertext as AES-GCM additional data.
// Opening with a different AAD fails with ErrTampered.
type AAD struct {
	// Topic is bound when non-empty (the envelope's topic-bound flag records
	// it). For a topic mirrored under another name, the reader passes the
	// name the record was written under. Leave empty to not bind any topic.
	Topic string
	// Path names what was encrypted: PathValue, PathKey, or a field path as
	// the field rule spells it (e.g. "$.ssn_id"). Always bound.
	Path string
}

// Paths for whole-record encryption.
const (
	PathValue = "$"    // the whole record value
	PathKey   = "$key" // the whole record key
)

// Envelope is a parsed envelope. Slices alias the input.
type Envelope struct {
	Version     byte
	Kind        Kind
	TopicBound  bool
	KeyID       []byte
	Wrapped     []byte
	Counter     uint64
	Header      []byte // every byte before the ciphertext (the AAD prefix)
	Ciphertext  []byte // ciphertext || tag
	wrappedFrom int    // offset of the key id length byte (cache key start)
	wrappedEnd  int
}

// Nonce returns the 12-byte AES-GCM nonce.
func (e *Envelope) Nonce() [NonceSize]byte { return nonceFor(e.Counter) }

func nonceFor(counter uint64) (n [NonceSize]byte) {
	binary.BigEndian.PutUint64(n[4:], counter)
	return n
}

// IsEnvelope reports whether b parses as an envelope of a known version
// (structure only; nothing is authenticated).
func IsEnvelope(b []byte) bool {
	_, err := Parse(b)
	return err == nil
}

// Parse splits an envelope into its parts without decrypting it. Callers can
// use it to check the key id or provider before opening.
func Parse(b []byte) (Envelope, error) {
	e, p, err := parseKeyPart(b)
	if err != nil {
		return e, err
	}
	ctr, n := uvarint(b[p:])
	if n <= 0 {
		return e, fmt.Errorf("%w: bad nonce counter", ErrTampered)
	}
	e.Counter = ctr
	p += n
	if len(b)-p < TagSize {
		return e, fmt.Errorf("%w: ciphertext shorter than the tag", ErrTampered)
	}
	e.Header = b[:p]
	e.Ciphertext = b[p:]
	return e, nil
}

// parseKeyPart parses a version-1 envelope up to and including the wrapped
// DEK (which is also the whole of a key reference) and returns where it ends.
func parseKeyPart(b []byte) (Envelope, int, error) {
	var e Envelope
	if len(b) < 3 {
		return e, 0, fmt.Errorf("%w: %d bytes is too short for an envelope", ErrTampered, len(b))
	}
	if b[0]&magicMask != magicValue {
		return e, 0, fmt.Errorf("%w: first byte 0x%02x is not an envelope", ErrTampered, b[0])
	}
	if b[0] != Version1 {
		return e, 0, fmt.Errorf("%w: envelope version 0x%02x (written by a newer Strait, or corrupt)", ErrUnsupported, b[0])
	}
	e.Version = b[0]
	flags := b[1]
	if flags&flagsReserved != 0 {
		return e, 0, fmt.Errorf("%w: reserved flags 0x%02x set", ErrUnsupported, flags&flagsReserved)
	}
	e.Kind = Kind(flags & flagKindMask)
	if e.Kind == 0 {
		return e, 0, fmt.Errorf("%w: provider kind 0", ErrUnsupported)
	}
	e.TopicBound = flags&flagTopic != 0
	e.wrappedFrom = 2
	p := 2
	klen := int(b[p])
	p++
	if klen == 0 || len(b)-p < klen {
		return e, 0, fmt.Errorf("%w: bad key id length %d", ErrTampered, klen)
	}
	e.KeyID = b[p : p+klen]
	p += klen
	wlen, n := uvarint(b[p:])
	if n <= 0 || wlen == 0 || wlen > MaxWrappedLen || uint64(len(b)-p-n) < wlen {
		return e, 0, fmt.Errorf("%w: bad wrapped key length", ErrTampered)
	}
	p += n
	e.Wrapped = b[p : p+int(wlen)]
	p += int(wlen)
	e.wrappedEnd = p
	return e, p, nil
}

// Version2 is the first byte of a detached envelope: the data key is not in
// the envelope but in a key reference stored once per record (the
// KeyRefHeader record header), so that the fields of one record share one
// wrapped DEK instead of each carrying it.
//
//	detached envelope = 0xE2 | uvarint(nonce counter) | ciphertext | tag(16)
//	key reference     = a version-1 envelope up to and including the wrapped
//	                    DEK: 0xE1 | flags | key id length | key id |
//	                    uvarint(wrapped DEK length) | wrapped DEK
//	nonce             = 00 00 00 00 | counter as uint64 big-endian
//	AAD               = key reference | 0xE2 | uvarint(counter) |
//	                    [uvarint(len(topic)) | topic, if the reference's
//	                    topic-bound flag is set] | uvarint(len(path)) | path
const Version2 = 0xE2

// KeyRef is a parsed key reference.
type KeyRef struct {
	Envelope // Version, Kind, TopicBound, KeyID, Wrapped; no counter or ciphertext
	raw      []byte
}

// ParseKeyRef parses a key reference: exactly the key part of a version-1
// envelope, nothing after it.
func ParseKeyRef(b []byte) (KeyRef, error) {
	e, p, err := parseKeyPart(b)
	if err != nil {
		return KeyRef{}, err
	}
	if p != len(b) {
		return KeyRef{}, fmt.Errorf("%w: %d bytes after the key reference", ErrTampered, len(b)-p)
	}
	return KeyRef{Envelope: e, raw: b}, nil
}

// Detached is a parsed detached envelope.
type Detached struct {
	Counter    uint64
	Header     []byte // 0xE2 and the counter (part of the AAD)
	Ciphertext []byte // ciphertext || tag
}

// ParseDetached parses a detached envelope.
func ParseDetached(b []byte) (Detached, error) {
	var d Detached
	if len(b) < 2 || b[0] != Version2 {
		return d, fmt.Errorf("%w: not a detached envelope", ErrTampered)
	}
	ctr, n := uvarint(b[1:])
	if n <= 0 {
		return d, fmt.Errorf("%w: bad nonce counter", ErrTampered)
	}
	p := 1 + n
	if len(b)-p < TagSize {
		return d, fmt.Errorf("%w: ciphertext shorter than the tag", ErrTampered)
	}
	d.Counter, d.Header, d.Ciphertext = ctr, b[:p], b[p:]
	return d, nil
}

// DetachedOverhead is the size a detached envelope adds to its plaintext.
func DetachedOverhead(counter uint64) int { return 1 + uvarintLen(counter) + TagSize }

func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, -1
	}
	if n > 1 && b[n-1] == 0 { // non-minimal encoding
		return 0, -1
	}
	return v, n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// appendHeaderPrefix appends the envelope bytes that precede the nonce
// counter: version, flags, key id, wrapped DEK.
func appendHeaderPrefix(dst []byte, kind Kind, topicBound bool, keyID string, wrapped []byte) []byte {
	flags := byte(kind) & flagKindMask
	if topicBound {
		flags |= flagTopic
	}
	dst = append(dst, Version1, flags, byte(len(keyID)))
	dst = append(dst, keyID...)
	dst = binary.AppendUvarint(dst, uint64(len(wrapped)))
	return append(dst, wrapped...)
}

// appendContext appends the AAD context that follows the header.
func appendContext(dst []byte, topicBound bool, aad AAD) []byte {
	if topicBound {
		dst = binary.AppendUvarint(dst, uint64(len(aad.Topic)))
		dst = append(dst, aad.Topic...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(aad.Path)))
	return append(dst, aad.Path...)
}

// Overhead is the number of bytes an envelope adds to a plaintext for a key
// id of keyIDLen bytes, a wrapped DEK of wrappedLen bytes and nonce counter
// counter.
func Overhead(keyIDLen, wrappedLen int, counter uint64) int {
	return 3 + keyIDLen + uvarintLen(uint64(wrappedLen)) + wrappedLen + uvarintLen(counter) + TagSize
}
