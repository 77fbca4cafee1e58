package kms_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/crypto/kms/local"
)

func TestErrorsAreDistinct(t *testing.T) {
	all := []error{kms.ErrUnavailable, kms.ErrKeyNotFound, kms.ErrAccessDenied, kms.ErrInvalidCiphertext}
	for i, a := range all {
		for j, b := range all {
			if (i == j) != errors.Is(a, b) {
				t.Errorf("errors.Is(%v, %v) = %v", a, b, errors.Is(a, b))
			}
		}
	}
}

// TestProviderContract checks the behaviour the envelope package relies on,
// against the local provider (the remote providers have their own tests
// against their doubles and SoftHSM2).
func TestProviderContract(t *testing.T) {
	p, err := local.New(local.KEK{ID: "k", Current: 1, Versions: map[uint32][]byte{1: bytes.Repeat([]byte{9}, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	var _ kms.Provider = p
	ctx := context.Background()
	a, err := p.GenerateDataKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.GenerateDataKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Plaintext) != 32 {
		t.Fatalf("DEK is %d bytes, want 32", len(a.Plaintext))
	}
	if bytes.Equal(a.Plaintext, b.Plaintext) {
		t.Fatal("two GenerateDataKey calls returned the same DEK (the envelope's counter nonces rely on fresh DEKs)")
	}
	got, err := p.Decrypt(ctx, "k", a.Wrapped)
	if err != nil || !bytes.Equal(got, a.Plaintext) {
		t.Fatalf("decrypt: %v", err)
	}
	if _, err := p.GenerateDataKey(ctx, "missing"); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	bad := bytes.Clone(a.Wrapped)
	bad[len(bad)-1] ^= 1
	if _, err := p.Decrypt(ctx, "k", bad); !errors.Is(err, kms.ErrInvalidCiphertext) {
		t.Fatalf("tampered wrapped key: %v", err)
	}
}
