// Package kms is the small interface every key-management provider
// implements: generate a data key under a key-encryption key (KEK), and unwrap
// it again. Providers live in sub-packages (local, awskms, vaulttransit,
// pkcs11); the envelope package is their only caller.
package kms

import (
	"context"
	"errors"
)

// DataKey is a fresh data encryption key (DEK) and its wrapped form.
// Wrapped is self-describing for its provider: it names (or embeds) the KEK
// version that wrapped it, so records written before a KEK rotation keep
// decrypting.
type DataKey struct {
	Plaintext []byte // 32 bytes (AES-256); never logged, never persisted
	Wrapped   []byte
}

// Provider wraps and unwraps data keys with a KEK the provider holds.
type Provider interface {
	// Name is the provider kind as config names it ("local", "aws-kms",
	// "vault-transit", "pkcs11").
	Name() string
	// GenerateDataKey returns a new AES-256 DEK wrapped by the current
	// version of KEK keyID.
	GenerateDataKey(ctx context.Context, keyID string) (DataKey, error)
	// Decrypt unwraps a DEK produced by GenerateDataKey for keyID.
	Decrypt(ctx context.Context, keyID string, wrapped []byte) ([]byte, error)
}

// Errors every provider maps its failures onto, so that callers can choose a
// Kafka error code without knowing the provider.
var (
	// ErrUnavailable: the KMS could not be reached or answered with a
	// transient failure (timeout, 5xx, throttling). Retrying may succeed.
	ErrUnavailable = errors.New("kms unavailable")
	// ErrKeyNotFound: the KEK does not exist (or a version was deleted).
	ErrKeyNotFound = errors.New("kms key not found")
	// ErrAccessDenied: the KMS refused the caller.
	ErrAccessDenied = errors.New("kms access denied")
	// ErrInvalidCiphertext: the wrapped key is corrupt or was wrapped by
	// another key.
	ErrInvalidCiphertext = errors.New("kms invalid ciphertext")
)

// Known is the first step of every provider's error classification: the
// sentinel err already carries (a failed re-login wrapped one), or
// ErrUnavailable for a context deadline or cancellation. ok is false when
// err is neither, and the provider maps its own error types.
func Known(err error) (sentinel error, ok bool) {
	for _, s := range []error{ErrUnavailable, ErrKeyNotFound, ErrAccessDenied, ErrInvalidCiphertext} {
		if errors.Is(err, s) {
			return s, true
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return ErrUnavailable, true
	}
	return nil, false
}
