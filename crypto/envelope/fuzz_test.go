package envelope

import (
	"bytes"
	"context"
	"errors"
	"math"
	"testing"

	"github.com/strait-proxy/strait/crypto/kms"
)

// FuzzOpen feeds arbitrary bytes to the parser and the Opener (with the
// test keyring of the vectors). It must never panic, must fail only with the
// documented error classes, and a successful open must be reproducible.
func FuzzOpen(f *testing.F) {
	p := testProvider(f)
	// Unbounded unwraps: every input may carry a new wrapped DEK, and the
	// target checks the error classes of parsing and opening, not throttling.
	o, err := NewOpener([]kms.Provider{p}, OpenerOptions{MaxEntries: 64, UnwrapRate: math.MaxInt32, MaxConcurrentUnwraps: math.MaxInt32})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, env []byte, topic, path string) {
		e, perr := Parse(env)
		if perr == nil {
			if len(e.Header)+len(e.Ciphertext) != len(env) || len(e.Ciphertext) < TagSize {
				t.Fatalf("parse split %d+%d of %d bytes", len(e.Header), len(e.Ciphertext), len(env))
			}
			if want := len(e.Ciphertext) - TagSize + Overhead(len(e.KeyID), len(e.Wrapped), e.Counter); want != len(env) {
				t.Fatalf("overhead formula: %d, envelope %d", want, len(env))
			}
		}
		aad := AAD{Topic: topic, Path: path}
		dst := []byte("dst")
		out, err := o.Open(ctx, dst, env, aad)
		if err != nil {
			if !bytes.Equal(out, dst) {
				t.Fatal("dst modified on error")
			}
			for _, target := range []error{ErrTampered, ErrUnsupported, ErrNoProvider, kms.ErrKeyNotFound} {
				if errors.Is(err, target) {
					return
				}
			}
			t.Fatalf("untyped error: %v", err)
		}
		if perr != nil {
			t.Fatalf("opened an envelope Parse rejects: %v", perr)
		}
		again, err := o.Open(ctx, nil, env, aad)
		if err != nil || !bytes.Equal(again, out[len(dst):]) {
			t.Fatalf("second open differs: %v", err)
		}
	})
}
