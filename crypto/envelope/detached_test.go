package envelope

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/strait-proxy/strait/crypto/kms"
)

// TestDetached: the fields of a record sealed under one data key, its key
// reference stored once; every tampering fails.
func TestDetached(t *testing.T) {
	ctx := context.Background()
	p := testProvider(t)
	s, err := NewSealer(p, SealerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener([]kms.Provider{p}, OpenerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.DataKey(ctx, "customers", true)
	if err != nil {
		t.Fatal(err)
	}
	ref := k.Ref()
	if _, err := ParseKeyRef(ref); err != nil {
		t.Fatal(err)
	}
	aadA := AAD{Topic: "customers", Path: "$.ssn_id"}
	aadB := AAD{Topic: "customers", Path: "$.account"}
	a, err := k.Seal(nil, aadA, []byte(`"123-45-6789"`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Seal(nil, aadB, []byte(`"678900000234"`))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(`"123-45-6789"`)+DetachedOverhead(0) {
		t.Fatalf("detached envelope of %d bytes", len(a))
	}
	da, _ := ParseDetached(a)
	db, _ := ParseDetached(b)
	if da.Counter == db.Counter {
		t.Fatal("two seals under one data key shared a nonce counter")
	}
	got, err := o.OpenDetached(ctx, nil, ref, a, aadA)
	if err != nil || string(got) != `"123-45-6789"` {
		t.Fatalf("open: %q %v", got, err)
	}

	// Another key reference of the same key (a later data key) must not open it.
	s.Rotate("customers")
	k2, err := s.DataKey(ctx, "customers", true)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	cases := map[string]func() ([]byte, error){
		"field moved":          func() ([]byte, error) { return o.OpenDetached(ctx, nil, ref, a, aadB) },
		"topic changed":        func() ([]byte, error) { return o.OpenDetached(ctx, nil, ref, a, AAD{Topic: "other", Path: "$.ssn_id"}) },
		"other data key":       func() ([]byte, error) { return o.OpenDetached(ctx, nil, k2.Ref(), a, aadA) },
		"ciphertext flipped":   func() ([]byte, error) { return o.OpenDetached(ctx, nil, ref, flip(a, len(a)-20), aadA) },
		"counter changed":      func() ([]byte, error) { return o.OpenDetached(ctx, nil, ref, flip(a, 1), aadA) },
		"wrapped key flipped":  func() ([]byte, error) { return o.OpenDetached(ctx, nil, flip(ref, len(ref)-5), a, aadA) },
		"topic flag flipped":   func() ([]byte, error) { return o.OpenDetached(ctx, nil, flip(ref, 1), a, aadA) },
		"v1 envelope as field": func() ([]byte, error) { return o.OpenDetached(ctx, nil, ref, ref, aadA) },
		"truncated":            func() ([]byte, error) { return o.OpenDetached(ctx, nil, ref, a[:10], aadA) },
	}
	for name, open := range cases {
		if got, err := open(); err == nil {
			t.Errorf("%s: opened as %q", name, got)
		} else if !errors.Is(err, ErrTampered) && !errors.Is(err, kms.ErrInvalidCiphertext) && !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: error %v is not a tamper error", name, err)
		}
	}
}

// FuzzOpenDetached: arbitrary key references and envelopes never panic the
// parser or open without the key.
func FuzzOpenDetached(f *testing.F) {
	p := testProvider(f)
	s, _ := NewSealer(p, SealerOptions{})
	o, _ := NewOpener([]kms.Provider{p}, OpenerOptions{})
	k, err := s.DataKey(context.Background(), "customers", false)
	if err != nil {
		f.Fatal(err)
	}
	env, _ := k.Seal(nil, AAD{Path: "$.x"}, []byte("secret"))
	f.Add(k.Ref(), env)
	f.Add(k.Ref()[:5], env[:3])
	f.Fuzz(func(t *testing.T, ref, env []byte) {
		got, err := o.OpenDetached(context.Background(), nil, ref, env, AAD{Path: "$.x"})
		if err == nil && string(got) != "secret" {
			t.Fatalf("opened garbage as %q", got)
		}
	})
}
