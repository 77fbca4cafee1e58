package envelope

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/crypto/kms/local"
)

// kek returns deterministic test KEK material: bytes start, start+1, ...
func kekBytes(start byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = start + byte(i)
	}
	return k
}

func testProvider(t testing.TB) *local.Provider {
	t.Helper()
	p, err := local.New(
		local.KEK{ID: "customers", Current: 1, Versions: map[uint32][]byte{1: kekBytes(0x00), 2: kekBytes(0x20)}},
		local.KEK{ID: "payments", Current: 1, Versions: map[uint32][]byte{1: kekBytes(0x40)}},
	)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// countingProvider wraps a provider, counts calls and can fail or block.
type countingProvider struct {
	kms.Provider
	gens, decs atomic.Int64
	mu         sync.Mutex
	fail       error         // returned by both calls when set
	gate       chan struct{} // when set, calls wait for it to close
}

func (c *countingProvider) state() (chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gate, c.fail
}

func (c *countingProvider) set(fail error, gate chan struct{}) {
	c.mu.Lock()
	c.fail, c.gate = fail, gate
	c.mu.Unlock()
}

func (c *countingProvider) GenerateDataKey(ctx context.Context, keyID string) (kms.DataKey, error) {
	c.gens.Add(1)
	gate, fail := c.state()
	if gate != nil {
		<-gate
	}
	if fail != nil {
		return kms.DataKey{}, fail
	}
	return c.Provider.GenerateDataKey(ctx, keyID)
}

func (c *countingProvider) Decrypt(ctx context.Context, keyID string, wrapped []byte) ([]byte, error) {
	c.decs.Add(1)
	gate, fail := c.state()
	if gate != nil {
		<-gate
	}
	if fail != nil {
		return nil, fail
	}
	return c.Provider.Decrypt(ctx, keyID, wrapped)
}

func newPair(t testing.TB, sopts SealerOptions, oopts OpenerOptions) (*Sealer, *Opener, *countingProvider) {
	t.Helper()
	cp := &countingProvider{Provider: testProvider(t)}
	s, err := NewSealer(cp, sopts)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener([]kms.Provider{cp}, oopts)
	if err != nil {
		t.Fatal(err)
	}
	return s, o, cp
}

// checkNoLeak fails if goroutines started during the test outlive it.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			t.Errorf("%d goroutines leaked", n-before)
		}
	})
}

func TestRoundTrip(t *testing.T) {
	checkNoLeak(t)
	ctx := context.Background()
	s, o, _ := newPair(t, SealerOptions{}, OpenerOptions{})
	cases := []struct {
		name  string
		keyID string
		aad   AAD
		pt    []byte
	}{
		{"value", "payments", AAD{Topic: "payments", Path: PathValue}, []byte(`{"amount":12.5}`)},
		{"key", "payments", AAD{Topic: "payments", Path: PathKey}, []byte("order-1")},
		{"field", "customers", AAD{Topic: "customers", Path: "$.ssn_id"}, []byte(`"123-45-6789"`)},
		{"field, topic not bound", "customers", AAD{Path: "$.account"}, []byte(`"678900000234"`)},
		{"empty", "customers", AAD{Topic: "t", Path: PathValue}, nil},
		{"large", "customers", AAD{Topic: "t", Path: PathValue}, bytes.Repeat([]byte("x"), 1<<20)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("prefix")
			env, err := s.Seal(ctx, slices.Clone(prefix), tc.keyID, tc.aad, tc.pt)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(env, prefix) {
				t.Fatal("Seal did not append to dst")
			}
			env = env[len(prefix):]
			e, err := Parse(env)
			if err != nil {
				t.Fatal(err)
			}
			if e.Kind != KindLocal || string(e.KeyID) != tc.keyID || e.TopicBound != (tc.aad.Topic != "") {
				t.Fatalf("parsed %+v", e)
			}
			if want := len(tc.pt) + Overhead(len(tc.keyID), len(e.Wrapped), e.Counter); len(env) != want {
				t.Fatalf("envelope %d bytes, want %d", len(env), want)
			}
			if !IsEnvelope(env) {
				t.Fatal("IsEnvelope false")
			}
			got, err := o.Open(ctx, []byte("x"), env, tc.aad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[1:], tc.pt) || got[0] != 'x' {
				t.Fatal("plaintext mismatch")
			}
			if tc.aad.Topic == "" {
				// Not bound: any topic opens it (mirrors under any name).
				if _, err := o.Open(ctx, nil, env, AAD{Topic: "mirror.customers", Path: tc.aad.Path}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestNoTopicBindingOption(t *testing.T) {
	ctx := context.Background()
	s, o, _ := newPair(t, SealerOptions{NoTopicBinding: true}, OpenerOptions{})
	env, err := s.Seal(ctx, nil, "customers", AAD{Topic: "customers", Path: "$.a"}, []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := Parse(env); e.TopicBound {
		t.Fatal("topic bound despite NoTopicBinding")
	}
	if _, err := o.Open(ctx, nil, env, AAD{Topic: "dc2.customers", Path: "$.a"}); err != nil {
		t.Fatal(err)
	}
}

// anyTyped reports whether err is one of the documented failure classes.
func anyTyped(err error) bool {
	for _, target := range []error{ErrTampered, ErrUnsupported, ErrNoProvider, kms.ErrKeyNotFound} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func TestTamper(t *testing.T) {
	checkNoLeak(t)
	ctx := context.Background()
	// Every flipped bit of a wrapped DEK is a new KMS call: lift the unwrap
	// rate bound, which TestUnwrapBounds covers.
	s, o, _ := newPair(t, SealerOptions{MaxUses: 1}, OpenerOptions{UnwrapRate: math.MaxInt32})
	aad := AAD{Topic: "customers", Path: "$.ssn_id"}
	env, err := s.Seal(ctx, nil, "customers", aad, []byte(`"123-45-6789"`))
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Seal(ctx, nil, "customers", aad, []byte(`"987-65-4321"`)) // MaxUses 1: another DEK
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(ctx, nil, env, aad); err != nil {
		t.Fatal(err)
	}

	t.Run("every bit of every byte", func(t *testing.T) {
		for i := range env {
			for bit := 0; bit < 8; bit++ {
				bad := slices.Clone(env)
				bad[i] ^= 1 << bit
				out, err := o.Open(ctx, nil, bad, aad)
				if err == nil {
					t.Fatalf("byte %d bit %d: opened to %q", i, bit, out)
				}
				if !anyTyped(err) {
					t.Fatalf("byte %d bit %d: untyped error %v", i, bit, err)
				}
			}
		}
	})
	e1, _ := Parse(env)
	e2, _ := Parse(other)
	swapped := append(append([]byte(nil), env[:e1.wrappedFrom]...), other[e2.wrappedFrom:e2.wrappedEnd]...)
	swapped = append(swapped, env[e1.wrappedEnd:]...)
	moved := AAD{Topic: "customers", Path: "$.account"}
	cases := []struct {
		name string
		env  []byte
		aad  AAD
		want error
	}{
		{"wrong field path", env, moved, ErrTampered},
		{"wrong topic", env, AAD{Topic: "payments", Path: aad.Path}, ErrTampered},
		{"topic missing", env, AAD{Path: aad.Path}, ErrTampered},
		{"swapped wrapped key", swapped, aad, ErrTampered},
		{"truncated", env[:len(env)-1], aad, ErrTampered},
		{"too short for tag", env[:len(e1.Header)+TagSize-1], aad, ErrTampered},
		{"appended", append(slices.Clone(env), 0), aad, ErrTampered},
		{"empty", nil, aad, ErrTampered},
		{"plaintext JSON", []byte(`"123-45-6789"`), aad, ErrTampered},
		{"future version", append([]byte{0xE2}, env[1:]...), aad, ErrUnsupported},
		{"reserved flag", append([]byte{env[0], env[1] | 0x80}, env[2:]...), aad, ErrUnsupported},
		{"unconfigured kind", append([]byte{env[0], env[1]&0xF0 | byte(KindAWSKMS)}, env[2:]...), aad, ErrNoProvider},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := o.Open(ctx, nil, tc.env, tc.aad)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	// A wrapped key the KMS rejects is tampering and a KMS invalid-ciphertext.
	bad := slices.Clone(env)
	bad[e1.wrappedEnd-1] ^= 1
	_, err = o.Open(ctx, nil, bad, aad)
	if !errors.Is(err, ErrTampered) || !errors.Is(err, kms.ErrInvalidCiphertext) {
		t.Fatalf("corrupt wrapped key: %v", err)
	}
}

func TestDEKRotationByUses(t *testing.T) {
	ctx := context.Background()
	s, o, cp := newPair(t, SealerOptions{MaxUses: 3}, OpenerOptions{})
	wrapped := map[string]int{}
	for i := 0; i < 9; i++ {
		env, err := s.Seal(ctx, nil, "customers", AAD{Path: "$"}, []byte{byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		e, _ := Parse(env)
		if e.Counter != uint64(i%3) {
			t.Fatalf("seal %d: counter %d", i, e.Counter)
		}
		wrapped[string(e.Wrapped)]++
		if _, err := o.Open(ctx, nil, env, AAD{Path: "$"}); err != nil {
			t.Fatal(err)
		}
	}
	if len(wrapped) != 3 || cp.gens.Load() != 3 {
		t.Fatalf("%d DEKs, %d generate calls; want 3 and 3", len(wrapped), cp.gens.Load())
	}
	for _, n := range wrapped {
		if n != 3 {
			t.Fatalf("uses per DEK %v", slices.Collect(maps.Values(wrapped)))
		}
	}
	if cp.decs.Load() != 3 {
		t.Fatalf("%d unwraps, want 3 (one per DEK)", cp.decs.Load())
	}
}

func TestDEKRotationByAge(t *testing.T) {
	ctx := context.Background()
	s, _, cp := newPair(t, SealerOptions{MaxAge: 30 * time.Millisecond}, OpenerOptions{})
	seal := func() []byte {
		env, err := s.Seal(ctx, nil, "customers", AAD{Path: "$"}, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		e, _ := Parse(env)
		return e.Wrapped
	}
	a, b := seal(), seal()
	if !bytes.Equal(a, b) || cp.gens.Load() != 1 {
		t.Fatal("DEK not reused within MaxAge")
	}
	time.Sleep(50 * time.Millisecond)
	if c := seal(); bytes.Equal(a, c) || cp.gens.Load() != 2 {
		t.Fatal("DEK not replaced after MaxAge")
	}
	s.Rotate("customers")
	seal()
	if cp.gens.Load() != 3 {
		t.Fatal("Rotate did not force a new DEK")
	}
}

func TestSingleFlight(t *testing.T) {
	checkNoLeak(t)
	ctx := context.Background()
	s, o, cp := newPair(t, SealerOptions{}, OpenerOptions{})
	gate := make(chan struct{})
	cp.set(nil, gate)
	const n = 32
	envs := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env, err := s.Seal(ctx, nil, "customers", AAD{Topic: "c", Path: "$"}, []byte{byte(i)})
			if err != nil {
				t.Error(err)
			}
			envs[i] = env
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	if g := cp.gens.Load(); g != 1 {
		t.Fatalf("%d concurrent misses made %d GenerateDataKey calls, want 1", n, g)
	}
	counters := map[uint64]bool{}
	for _, env := range envs {
		e, err := Parse(env)
		if err != nil {
			t.Fatal(err)
		}
		if counters[e.Counter] {
			t.Fatalf("nonce counter %d used twice", e.Counter)
		}
		counters[e.Counter] = true
	}

	gate = make(chan struct{})
	cp.set(nil, gate)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pt, err := o.Open(ctx, nil, envs[i], AAD{Topic: "c", Path: "$"})
			if err != nil || len(pt) != 1 || pt[0] != byte(i) {
				t.Errorf("open %d: %v", i, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	if d := cp.decs.Load(); d != 1 {
		t.Fatalf("%d concurrent misses made %d Decrypt calls, want 1", n, d)
	}
}

func TestKMSErrors(t *testing.T) {
	checkNoLeak(t)
	ctx := context.Background()
	for _, kerr := range []error{kms.ErrUnavailable, kms.ErrAccessDenied, kms.ErrKeyNotFound} {
		t.Run(kerr.Error(), func(t *testing.T) {
			s, o, cp := newPair(t, SealerOptions{ErrorHoldoff: -1}, OpenerOptions{ErrorHoldoff: -1})
			good, err := s.Seal(ctx, nil, "customers", AAD{Path: "$"}, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			s.Rotate("customers")
			cp.set(fmt.Errorf("test double: %w", kerr), nil)
			dst := []byte("keep")
			out, err := s.Seal(ctx, dst, "customers", AAD{Path: "$"}, []byte("x"))
			if !errors.Is(err, kerr) || string(out) != "keep" {
				t.Fatalf("seal: %v (out %q)", err, out)
			}
			out, err = o.Open(ctx, dst, good, AAD{Path: "$"})
			if !errors.Is(err, kerr) || errors.Is(err, ErrTampered) || string(out) != "keep" {
				t.Fatalf("open: %v", err)
			}
			// Failures are not cached: the KMS comes back, both work again.
			cp.set(nil, nil)
			if _, err := s.Seal(ctx, nil, "customers", AAD{Path: "$"}, []byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := o.Open(ctx, nil, good, AAD{Path: "$"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestErrorHoldoff(t *testing.T) {
	ctx := context.Background()
	s, _, cp := newPair(t, SealerOptions{ErrorHoldoff: 50 * time.Millisecond}, OpenerOptions{})
	cp.set(fmt.Errorf("double: %w", kms.ErrUnavailable), nil)
	for i := 0; i < 5; i++ {
		if _, err := s.Seal(ctx, nil, "customers", AAD{Path: "$"}, nil); !errors.Is(err, kms.ErrUnavailable) {
			t.Fatal(err)
		}
	}
	if g := cp.gens.Load(); g != 1 {
		t.Fatalf("%d KMS calls during holdoff, want 1", g)
	}
	cp.set(nil, nil)
	time.Sleep(60 * time.Millisecond)
	if _, err := s.Seal(ctx, nil, "customers", AAD{Path: "$"}, nil); err != nil {
		t.Fatalf("after holdoff: %v", err)
	}
}

func TestOpenerErrorHoldoff(t *testing.T) {
	ctx := context.Background()
	s, o, cp := newPair(t, SealerOptions{}, OpenerOptions{ErrorHoldoff: 50 * time.Millisecond})
	env, err := s.Seal(ctx, nil, "customers", AAD{Path: "$"}, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	cp.set(fmt.Errorf("double: %w", kms.ErrUnavailable), nil)
	for i := 0; i < 5; i++ {
		if _, err := o.Open(ctx, nil, env, AAD{Path: "$"}); !errors.Is(err, kms.ErrUnavailable) {
			t.Fatal(err)
		}
	}
	if d := cp.decs.Load(); d != 1 {
		t.Fatalf("%d KMS calls during holdoff, want 1", d)
	}
	cp.set(nil, nil)
	time.Sleep(60 * time.Millisecond)
	if _, err := o.Open(ctx, nil, env, AAD{Path: "$"}); err != nil {
		t.Fatalf("after holdoff: %v", err)
	}
}

func TestContextWhileWaiting(t *testing.T) {
	checkNoLeak(t)
	s, o, cp := newPair(t, SealerOptions{}, OpenerOptions{})
	good, err := s.Seal(context.Background(), nil, "customers", AAD{Path: "$"}, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	s.Rotate("customers")
	gate := make(chan struct{})
	cp.set(nil, gate)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Seal(ctx, nil, "customers", AAD{Path: "$"}, []byte("x")); !errors.Is(err, kms.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("seal: %v", err)
	}
	if _, err := o.Open(ctx, nil, good, AAD{Path: "$"}); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("open: %v", err)
	}
	close(gate) // the detached KMS calls finish and fill the caches
	cp.set(nil, nil)
	if _, err := o.Open(context.Background(), nil, good, AAD{Path: "$"}); err != nil {
		t.Fatal(err)
	}
}

func TestOpenerLRU(t *testing.T) {
	ctx := context.Background()
	s, o, cp := newPair(t, SealerOptions{MaxUses: 1}, OpenerOptions{MaxEntries: 2})
	var envs [][]byte
	for i := 0; i < 3; i++ {
		env, err := s.Seal(ctx, nil, "customers", AAD{Path: "$"}, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, env)
	}
	open := func(i int) {
		t.Helper()
		if _, err := o.Open(ctx, nil, envs[i], AAD{Path: "$"}); err != nil {
			t.Fatal(err)
		}
	}
	open(0)
	open(1)
	open(0) // 0 is now most recent
	open(2) // evicts 1
	if o.Len() != 2 || cp.decs.Load() != 3 {
		t.Fatalf("len %d, decrypts %d", o.Len(), cp.decs.Load())
	}
	open(0)
	open(2)
	if cp.decs.Load() != 3 {
		t.Fatal("cached entries were unwrapped again")
	}
	open(1)
	if cp.decs.Load() != 4 || o.Len() != 2 {
		t.Fatal("evicted entry not unwrapped again")
	}

	// MaxAge: entries expire. Expiry is a timer (no clock read per Open),
	// which a loaded machine may run late: wait for it rather than sleep.
	o2, _ := NewOpener([]kms.Provider{cp}, OpenerOptions{MaxAge: 50 * time.Millisecond})
	before := cp.decs.Load()
	o2.Open(ctx, nil, envs[0], AAD{Path: "$"})
	o2.Open(ctx, nil, envs[0], AAD{Path: "$"})
	if got := cp.decs.Load() - before; got != 1 {
		t.Fatalf("%d unwraps before MaxAge, want 1", got)
	}
	for deadline := time.Now().Add(10 * time.Second); !allExpired(o2); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cached key never expired")
		}
	}
	o2.Open(ctx, nil, envs[0], AAD{Path: "$"})
	if got := cp.decs.Load() - before; got != 2 {
		t.Fatalf("%d unwraps, want 2", got)
	}
}

// allExpired reports whether o caches keys and every one has expired.
func allExpired(o *Opener) bool {
	n := 0
	for _, c := range o.caches {
		if c == nil {
			continue
		}
		c.mu.Lock()
		for _, e := range c.m {
			if !e.expired.Load() {
				c.mu.Unlock()
				return false
			}
			n++
		}
		c.mu.Unlock()
	}
	return n > 0
}

// TestKEKRotation: new records use the new KEK version, old ones keep opening.
func TestKEKRotation(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyring.json")
	if err := local.Generate(path, "customers"); err != nil {
		t.Fatal(err)
	}
	p, err := local.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := NewSealer(p, SealerOptions{})
	o, _ := NewOpener([]kms.Provider{p}, OpenerOptions{})
	aad := AAD{Topic: "customers", Path: "$.ssn_id"}
	old, err := s.Seal(ctx, nil, "customers", aad, []byte("old"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := local.Rotate(path, "customers"); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	s.Rotate("customers")
	fresh, err := s.Seal(ctx, nil, "customers", aad, []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	eo, _ := Parse(old)
	ef, _ := Parse(fresh)
	if eo.Wrapped[1] != 1 || ef.Wrapped[1] != 2 {
		t.Fatalf("KEK versions %d, %d; want 1, 2", eo.Wrapped[1], ef.Wrapped[1])
	}
	// A reader that loads the rotated file opens both.
	p2, err := local.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	o2, _ := NewOpener([]kms.Provider{p2}, OpenerOptions{})
	for _, op := range []*Opener{o, o2} {
		for _, env := range [][]byte{old, fresh} {
			if _, err := op.Open(ctx, nil, env, aad); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = os.Remove(path)
}

func TestHeaders(t *testing.T) {
	for _, tc := range []struct {
		p Parts
		v string
	}{{PartValue, "v"}, {PartKey, "k"}, {PartKey | PartValue, "kv"}, {PartFields, "f"}, {PartKey | PartValue | PartFields, "kvf"}} {
		if got := string(tc.p.HeaderValue()); got != tc.v {
			t.Errorf("%d: %q, want %q", tc.p, got, tc.v)
		}
		if p, err := ParseHeaderValue([]byte(tc.v)); err != nil || p != tc.p {
			t.Errorf("parse %q: %d %v", tc.v, p, err)
		}
	}
	for _, bad := range []string{"", "vk", "x", "vv", "v ", "V"} {
		if _, err := ParseHeaderValue([]byte(bad)); !errors.Is(err, ErrBadHeader) {
			t.Errorf("%q accepted", bad)
		}
	}
	hdrs := func(kv ...string) func(func(string, []byte) bool) {
		return func(yield func(string, []byte) bool) {
			for i := 0; i < len(kv); i += 2 {
				if !yield(kv[i], []byte(kv[i+1])) {
					return
				}
			}
		}
	}
	if p, err := EncryptedParts(hdrs("a", "b", HeaderKey, "v")); p != PartValue || err != nil {
		t.Errorf("got %d %v", p, err)
	}
	if p, err := EncryptedParts(hdrs("a", "b")); p != 0 || err != nil {
		t.Errorf("got %d %v", p, err)
	}
	if _, err := EncryptedParts(hdrs(HeaderKey, "v", HeaderKey, "v")); !errors.Is(err, ErrBadHeader) {
		t.Errorf("repeated header: %v", err)
	}
	if HeaderOverhead(PartValue) != 13 {
		t.Errorf("header overhead %d", HeaderOverhead(PartValue))
	}
}

func TestOptionsAndConstructors(t *testing.T) {
	p := testProvider(t)
	if _, err := NewSealer(p, SealerOptions{MaxUses: MaxDEKUses + 1}); err == nil {
		t.Error("MaxUses above the ceiling accepted")
	}
	if _, err := NewOpener([]kms.Provider{p, p}, OpenerOptions{}); err == nil {
		t.Error("two providers of one kind accepted")
	}
	if _, err := NewSealer(namedProvider{p, "nope"}, SealerOptions{}); err == nil {
		t.Error("unknown kind accepted")
	}
	s, _ := NewSealer(p, SealerOptions{})
	if _, err := s.Seal(context.Background(), nil, "", AAD{}, nil); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Errorf("empty key id: %v", err)
	}
	for k := Kind(0); k < 6; k++ {
		if n, ok := KindOf(k.String()); ok != (k >= 1 && k <= 4) || ok && n != k {
			t.Errorf("kind %d: %q %v", k, k.String(), ok)
		}
	}
}

type namedProvider struct {
	kms.Provider
	name string
}

func (n namedProvider) Name() string { return n.name }

func TestZeroAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts differ under -cover/-race")
	}
	ctx := context.Background()
	s, o, _ := newPair(t, SealerOptions{}, OpenerOptions{})
	pt := bytes.Repeat([]byte("p"), 1024)
	aad := AAD{Topic: "customers", Path: PathValue}
	dst := make([]byte, 0, 2048)
	env, err := s.Seal(ctx, dst, "customers", aad, pt)
	if err != nil {
		t.Fatal(err)
	}
	env = slices.Clone(env)
	if _, err := o.Open(ctx, nil, env, aad); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(200, func() { s.Seal(ctx, dst, "customers", aad, pt) }); n != 0 {
		t.Errorf("Seal: %v allocs per call", n)
	}
	if n := testing.AllocsPerRun(200, func() { o.Open(ctx, dst, env, aad) }); n != 0 {
		t.Errorf("Open: %v allocs per call", n)
	}
}

func TestConcurrentSealOpen(t *testing.T) {
	checkNoLeak(t)
	ctx := context.Background()
	s, o, _ := newPair(t, SealerOptions{MaxUses: 50}, OpenerOptions{MaxEntries: 4})
	var wg sync.WaitGroup
	var seen sync.Map
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				pt := []byte(fmt.Sprint(g, i))
				env, err := s.Seal(ctx, nil, "customers", AAD{Path: "$"}, pt)
				if err != nil {
					t.Error(err)
					return
				}
				e, _ := Parse(env)
				if _, dup := seen.LoadOrStore(fmt.Sprint(string(e.Wrapped), e.Counter), true); dup {
					t.Error("(DEK, nonce) reused")
					return
				}
				got, err := o.Open(ctx, nil, env, AAD{Path: "$"})
				if err != nil || !bytes.Equal(got, pt) {
					t.Error("round trip", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
