package envelope

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"testing"
	"time"
)

// Run both halves in one invocation so the ratio compares the same core:
//
//	go test -run '^$' -bench 'RawGCM|Seal|Open' -benchmem -cpu 1 ./crypto/envelope/
//
// Raw* is AES-256-GCM alone (1 KiB, 12-byte nonce, no AAD); Seal/Open add the
// envelope: DEK cache lookup, counter nonce, header, AAD.

const benchSize = 1024

func rawGCM(b *testing.B) cipher.AEAD {
	block, err := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		b.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	return aead
}

func BenchmarkRawGCMSeal1KiB(b *testing.B) {
	aead := rawGCM(b)
	pt := bytes.Repeat([]byte("p"), benchSize)
	dst := make([]byte, 0, benchSize+TagSize)
	var nonce [NonceSize]byte
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		nonce[11] = byte(i)
		dst = aead.Seal(dst[:0], nonce[:], pt, nil)
	}
}

func BenchmarkRawGCMOpen1KiB(b *testing.B) {
	aead := rawGCM(b)
	var nonce [NonceSize]byte
	ct := aead.Seal(nil, nonce[:], bytes.Repeat([]byte("p"), benchSize), nil)
	dst := make([]byte, 0, benchSize)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = aead.Open(dst[:0], nonce[:], ct, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal1KiB(b *testing.B) {
	ctx := context.Background()
	s, _, _ := newPair(b, SealerOptions{MaxUses: MaxDEKUses}, OpenerOptions{})
	pt := bytes.Repeat([]byte("p"), benchSize)
	aad := AAD{Topic: "payments", Path: PathValue}
	dst := make([]byte, 0, benchSize+256)
	if _, err := s.Seal(ctx, dst, "payments", aad, pt); err != nil { // warm the DEK cache
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = s.Seal(ctx, dst[:0], "payments", aad, pt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(dst)-benchSize), "overhead-B")
}

func BenchmarkOpen1KiB(b *testing.B) {
	ctx := context.Background()
	s, o, _ := newPair(b, SealerOptions{}, OpenerOptions{})
	aad := AAD{Topic: "payments", Path: PathValue}
	env, err := s.Seal(ctx, nil, "payments", aad, bytes.Repeat([]byte("p"), benchSize))
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, benchSize)
	if _, err := o.Open(ctx, dst, env, aad); err != nil { // warm the DEK cache
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		if dst, err = o.Open(ctx, dst[:0], env, aad); err != nil {
			b.Fatal(err)
		}
	}
}

// Small field values (a 12-byte SSN) show the fixed per-call cost.
func BenchmarkSealField16B(b *testing.B) {
	ctx := context.Background()
	s, _, _ := newPair(b, SealerOptions{MaxUses: MaxDEKUses}, OpenerOptions{})
	pt := []byte(`"123-45-6789"`)
	aad := AAD{Topic: "customers", Path: "$.ssn_id"}
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = s.Seal(ctx, dst[:0], "customers", aad, pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenField16B(b *testing.B) {
	ctx := context.Background()
	s, o, _ := newPair(b, SealerOptions{}, OpenerOptions{})
	aad := AAD{Topic: "customers", Path: "$.ssn_id"}
	env, _ := s.Seal(ctx, nil, "customers", aad, []byte(`"123-45-6789"`))
	dst := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = o.Open(ctx, dst[:0], env, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal1KiBParallel(b *testing.B) {
	ctx := context.Background()
	s, _, _ := newPair(b, SealerOptions{MaxUses: MaxDEKUses}, OpenerOptions{})
	pt := bytes.Repeat([]byte("p"), benchSize)
	aad := AAD{Topic: "payments", Path: PathValue}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, benchSize+256)
		for pb.Next() {
			var err error
			if dst, err = s.Seal(ctx, dst[:0], "payments", aad, pt); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkOpen1KiBParallel(b *testing.B) {
	ctx := context.Background()
	s, o, _ := newPair(b, SealerOptions{}, OpenerOptions{})
	aad := AAD{Topic: "payments", Path: PathValue}
	env, _ := s.Seal(ctx, nil, "payments", aad, bytes.Repeat([]byte("p"), benchSize))
	b.SetBytes(benchSize)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, benchSize)
		for pb.Next() {
			var err error
			if dst, err = o.Open(ctx, dst[:0], env, aad); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchRatio interleaves raw AES-GCM and the envelope in chunks of 256
// operations, so that load from other processes on a shared machine hits both
// alike, and reports speed(envelope)/speed(raw) as "ratio" (target >= 0.6).
func benchRatio(b *testing.B, raw, env func()) {
	var tRaw, tEnv time.Duration
	const chunk = 256
	for i := 0; i < b.N; i += chunk {
		n := min(chunk, b.N-i)
		runs := [2]func(){raw, env}
		times := [2]*time.Duration{&tRaw, &tEnv}
		first := (i / chunk) % 2 // alternate which goes first
		for k := 0; k < 2; k++ {
			idx := (first + k) % 2
			t0 := time.Now()
			for j := 0; j < n; j++ {
				runs[idx]()
			}
			*times[idx] += time.Since(t0)
		}
	}
	b.ReportMetric(float64(tRaw.Nanoseconds())/float64(b.N), "raw-ns/op")
	b.ReportMetric(float64(tEnv.Nanoseconds())/float64(b.N), "env-ns/op")
	b.ReportMetric(float64(tRaw)/float64(tEnv), "ratio")
}

func BenchmarkRatioSeal1KiB(b *testing.B) {
	ctx := context.Background()
	aead := rawGCM(b)
	s, _, _ := newPair(b, SealerOptions{MaxUses: MaxDEKUses}, OpenerOptions{})
	pt := bytes.Repeat([]byte("p"), benchSize)
	aad := AAD{Topic: "payments", Path: PathValue}
	rawDst := make([]byte, 0, benchSize+TagSize)
	envDst := make([]byte, 0, benchSize+256)
	if _, err := s.Seal(ctx, envDst, "payments", aad, pt); err != nil {
		b.Fatal(err)
	}
	var nonce [NonceSize]byte
	b.ReportAllocs()
	b.ResetTimer()
	benchRatio(b,
		func() { nonce[11]++; rawDst = aead.Seal(rawDst[:0], nonce[:], pt, nil) },
		func() { envDst, _ = s.Seal(ctx, envDst[:0], "payments", aad, pt) })
}

func BenchmarkRatioOpen1KiB(b *testing.B) {
	ctx := context.Background()
	aead := rawGCM(b)
	s, o, _ := newPair(b, SealerOptions{}, OpenerOptions{})
	pt := bytes.Repeat([]byte("p"), benchSize)
	aad := AAD{Topic: "payments", Path: PathValue}
	var nonce [NonceSize]byte
	ct := aead.Seal(nil, nonce[:], pt, nil)
	env, err := s.Seal(ctx, nil, "payments", aad, pt)
	if err != nil {
		b.Fatal(err)
	}
	rawDst := make([]byte, 0, benchSize)
	envDst := make([]byte, 0, benchSize)
	if _, err := o.Open(ctx, envDst, env, aad); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	benchRatio(b,
		func() { rawDst, _ = aead.Open(rawDst[:0], nonce[:], ct, nil) },
		func() { envDst, _ = o.Open(ctx, envDst[:0], env, aad) })
}
