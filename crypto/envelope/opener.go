package envelope

import (
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strait-proxy/strait/crypto/kms"
)

// OpenerOptions bound the decrypt-side cache of unwrapped DEKs. Zero values
// pick the defaults.
type OpenerOptions struct {
	// MaxEntries bounds the cache per provider kind (LRU; default 4096).
	MaxEntries int
	// MaxAge is how long an unwrapped DEK is reused before the KMS is asked
	// again (default 1h), so that revoking a KEK takes effect within MaxAge.
	MaxAge time.Duration
	// KMSTimeout bounds one Decrypt call (default 10s).
	KMSTimeout time.Duration
	// ErrorHoldoff: after Decrypt fails for a wrapped DEK, Opens of envelopes
	// with that wrapped DEK fail fast with the same error for this long
	// (default 1s; negative disables), so that a KMS outage or a flood of
	// tampered records costs one KMS call per wrapped DEK per holdoff.
	ErrorHoldoff time.Duration
	// MaxConcurrentUnwraps bounds the KMS Decrypt calls in flight, all
	// providers together (default 16). Anyone who can write to a topic can
	// put a new wrapped DEK in every record; an Open that needs a call past
	// the bound fails at once with ErrThrottled (and kms.ErrUnavailable:
	// retriable) instead of waiting for a slot.
	MaxConcurrentUnwraps int
	// UnwrapRate bounds the KMS Decrypt calls started per second, with a
	// burst of as many (default 100). Past it, ErrThrottled at once.
	UnwrapRate int
	// OnThrottle, if set, is called for every Open refused by either bound
	// (the decrypt interceptor counts them: strait_kms_unwrap_throttled_total).
	OnThrottle func()
}

// ErrThrottled reports an Open that needed a KMS call past the bounds of
// OpenerOptions (MaxConcurrentUnwraps, UnwrapRate). It comes with
// kms.ErrUnavailable: retrying later may succeed.
var ErrThrottled = errors.New("envelope: KMS unwrap throttled")

// Defaults of the unwrap bounds.
const (
	DefaultMaxConcurrentUnwraps = 16
	DefaultUnwrapRate           = 100
)

// Opener decrypts envelopes. It unwraps each distinct wrapped DEK once with
// the provider the envelope names and keeps the result in a bounded LRU
// keyed by the exact (key id, wrapped DEK) bytes. Safe for concurrent use; no
// lock is held while the KMS is called, and concurrent misses for the same
// wrapped DEK share one call.
type Opener struct {
	caches [flagKindMask + 1]*dekCache
	opts   OpenerOptions
	lim    *unwrapLimiter
}

// unwrapLimiter is the concurrency and rate bound on KMS Decrypt calls: a
// count of calls in flight and a token bucket. It is consulted only on a
// cache miss, never on the hot path.
type unwrapLimiter struct {
	mu        sync.Mutex
	inflight  int
	max       int
	tokens    float64
	rate      float64 // tokens per second; also the bucket's size
	last      time.Time
	throttled atomic.Uint64
	on        func()
	now       func() time.Time // time.Now; tests move it by hand
}

// acquire takes a slot and a token, or reports false without waiting.
func (l *unwrapLimiter) acquire() bool {
	l.mu.Lock()
	now := l.now()
	l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	ok := l.inflight < l.max && l.tokens >= 1
	if ok {
		l.inflight++
		l.tokens--
	}
	l.mu.Unlock()
	if !ok {
		l.throttled.Add(1)
		if l.on != nil {
			l.on()
		}
	}
	return ok
}

func (l *unwrapLimiter) release() {
	l.mu.Lock()
	l.inflight--
	l.mu.Unlock()
}

// Throttled reports how many Opens the unwrap bounds refused.
func (o *Opener) Throttled() uint64 { return o.lim.throttled.Load() }

// NewOpener returns an Opener that can open envelopes written with any of
// providers (at most one per kind).
func NewOpener(providers []kms.Provider, opts OpenerOptions) (*Opener, error) {
	defaultTo(&opts.MaxEntries, DefaultOpenerEntries)
	defaultTo(&opts.MaxAge, DefaultOpenerMaxAge)
	defaultTo(&opts.KMSTimeout, DefaultKMSTimeout)
	defaultTo(&opts.ErrorHoldoff, DefaultErrorHoldoff)
	defaultTo(&opts.MaxConcurrentUnwraps, DefaultMaxConcurrentUnwraps)
	defaultTo(&opts.UnwrapRate, DefaultUnwrapRate)
	if opts.MaxEntries < 0 || opts.MaxAge < 0 || opts.KMSTimeout < 0 || opts.MaxConcurrentUnwraps < 0 || opts.UnwrapRate < 0 {
		return nil, errors.New("envelope: negative opener option")
	}
	o := &Opener{opts: opts, lim: &unwrapLimiter{
		max: opts.MaxConcurrentUnwraps, rate: float64(opts.UnwrapRate), tokens: float64(opts.UnwrapRate),
		last: time.Now(), on: opts.OnThrottle, now: time.Now,
	}}
	for _, p := range providers {
		kind, ok := KindOf(p.Name())
		if !ok {
			return nil, fmt.Errorf("envelope: unknown provider kind %q", p.Name())
		}
		if o.caches[kind] != nil {
			return nil, fmt.Errorf("envelope: two providers of kind %q", p.Name())
		}
		o.caches[kind] = &dekCache{p: p, kind: kind, max: opts.MaxEntries, m: make(map[string]*entry)}
	}
	return o, nil
}

// Open authenticates and decrypts env with aad and appends the plaintext to
// dst (which must not overlap env). Failures: ErrTampered (corrupt, tampered, wrong AAD), ErrUnsupported,
// ErrNoProvider, or a wrapped kms error (kms.ErrUnavailable,
// kms.ErrKeyNotFound, kms.ErrAccessDenied). dst is returned unchanged on error.
func (o *Opener) Open(ctx context.Context, dst, env []byte, aad AAD) ([]byte, error) {
	e, err := Parse(env)
	if err != nil {
		return dst, err
	}
	c := o.caches[e.Kind]
	if c == nil {
		return dst, fmt.Errorf("%w: kind %s", ErrNoProvider, e.Kind)
	}
	aead, err := c.get(ctx, env[e.wrappedFrom:e.wrappedEnd], e.KeyID, e.Wrapped, o.opts, o.lim)
	if err != nil {
		return dst, err
	}
	out, err := openWith(aead, dst, &e, aad)
	if err != nil {
		return dst, err
	}
	return out, nil
}

// OpenDetached opens a detached envelope (Version2) with the key reference
// stored beside it.
func (o *Opener) OpenDetached(ctx context.Context, dst, ref, env []byte, aad AAD) ([]byte, error) {
	k, err := ParseKeyRef(ref)
	if err != nil {
		return dst, err
	}
	d, err := ParseDetached(env)
	if err != nil {
		return dst, err
	}
	c := o.caches[k.Kind]
	if c == nil {
		return dst, fmt.Errorf("%w: kind %s", ErrNoProvider, k.Kind)
	}
	aead, err := c.get(ctx, ref[k.wrappedFrom:k.wrappedEnd], k.KeyID, k.Wrapped, o.opts, o.lim)
	if err != nil {
		return dst, err
	}
	sc := scratchPool.Get().(*scratch)
	defer func() {
		if cap(sc.aad) <= 64<<10 {
			scratchPool.Put(sc)
		}
	}()
	sc.nonce = nonceFor(d.Counter)
	sc.aad = appendContext(append(append(sc.aad[:0], ref...), d.Header...), k.TopicBound, aad)
	out, err := aead.Open(dst, sc.nonce[:], d.Ciphertext, sc.aad)
	if err != nil {
		return dst, fmt.Errorf("%w: authentication failed for key %q, path %q (detached)", ErrTampered, k.KeyID, aad.Path)
	}
	return out, nil
}

func openWith(aead cipher.AEAD, dst []byte, e *Envelope, aad AAD) ([]byte, error) {
	sc := scratchPool.Get().(*scratch)
	defer func() {
		if cap(sc.aad) <= 64<<10 {
			scratchPool.Put(sc)
		}
	}()
	sc.nonce = nonceFor(e.Counter)
	sc.aad = appendContext(append(sc.aad[:0], e.Header...), e.TopicBound, aad)
	out, err := aead.Open(dst, sc.nonce[:], e.Ciphertext, sc.aad)
	if err != nil {
		hint := ""
		if e.TopicBound && aad.Topic == "" {
			hint = " (the envelope binds a topic and none was given)"
		}
		return dst, fmt.Errorf("%w: authentication failed for key %q, path %q%s", ErrTampered, e.KeyID, aad.Path, hint)
	}
	return out, nil
}

// dekCache is the LRU of unwrapped DEKs for one provider.
type dekCache struct {
	p    kms.Provider
	kind Kind
	max  int

	mu       sync.Mutex
	m        map[string]*entry // key: key id length | key id | uvarint(len) | wrapped
	head     entry             // sentinel of the LRU list; head.next is the most recent
	n        int
	inflight map[string]*unwrapCall
	failed   map[string]failure // recent Decrypt failures (ErrorHoldoff), at most max entries
}

type failure struct {
	err   error
	until time.Time
}

type entry struct {
	key        string
	aead       cipher.AEAD
	expired    atomic.Bool // set by timer after MaxAge (no clock read per Open)
	timer      *time.Timer
	prev, next *entry
}

type unwrapCall struct {
	done chan struct{}
	aead cipher.AEAD
	err  error
}

func (c *dekCache) get(ctx context.Context, cacheKey, keyID, wrapped []byte, opts OpenerOptions, lim *unwrapLimiter) (cipher.AEAD, error) {
	c.mu.Lock()
	if e := c.m[string(cacheKey)]; e != nil {
		if !e.expired.Load() {
			c.moveFront(e)
			c.mu.Unlock()
			return e.aead, nil
		}
		c.remove(e)
	}
	if f, ok := c.failed[string(cacheKey)]; ok {
		if time.Now().Before(f.until) {
			c.mu.Unlock()
			return nil, f.err
		}
		delete(c.failed, string(cacheKey))
	}
	if c.inflight == nil {
		c.inflight = make(map[string]*unwrapCall)
	}
	call := c.inflight[string(cacheKey)]
	if call == nil {
		// A new KMS call: within the bounds, or refused now (not
		// remembered in failed: the key is not at fault).
		if !lim.acquire() {
			c.mu.Unlock()
			return nil, fmt.Errorf("envelope: data key %q: %w: %w", keyID, ErrThrottled, kms.ErrUnavailable)
		}
		key := string(cacheKey)
		call = &unwrapCall{done: make(chan struct{})}
		c.inflight[key] = call
		kid, w := string(keyID), append([]byte(nil), wrapped...)
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.KMSTimeout)
		go func() {
			defer cancel()
			aead, err := c.unwrap(kctx, kid, w)
			lim.release() // before waiters wake: their next miss may need the slot
			c.mu.Lock()
			call.aead, call.err = aead, err
			delete(c.inflight, key)
			switch {
			case err == nil && c.max > 0:
				e := &entry{key: key, aead: aead}
				e.timer = time.AfterFunc(opts.MaxAge, func() { e.expired.Store(true) })
				c.add(e)
			case err != nil && opts.ErrorHoldoff > 0:
				if c.failed == nil || len(c.failed) >= max(c.max, 1) {
					c.failed = make(map[string]failure) // bounded: start over
				}
				c.failed[key] = failure{err: err, until: time.Now().Add(opts.ErrorHoldoff)}
			}
			c.mu.Unlock()
			close(call.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-call.done:
		return call.aead, call.err
	case <-ctx.Done():
		return nil, fmt.Errorf("envelope: waiting for data key %q: %w: %w", keyID, kms.ErrUnavailable, ctx.Err())
	}
}

func (c *dekCache) unwrap(ctx context.Context, keyID string, wrapped []byte) (cipher.AEAD, error) {
	pt, err := c.p.Decrypt(ctx, keyID, wrapped)
	if err != nil {
		switch {
		case errors.Is(err, kms.ErrInvalidCiphertext):
			err = fmt.Errorf("%w: %w", ErrTampered, err)
		case ctx.Err() != nil && !errors.Is(err, kms.ErrUnavailable):
			err = fmt.Errorf("%w: %w", kms.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("envelope: unwrap data key (%s, key %q): %w", c.kind, keyID, err)
	}
	aead, err := newAEAD(pt)
	clear(pt)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTampered, err)
	}
	return aead, nil
}

// List operations; c.mu held.

func (c *dekCache) add(e *entry) {
	if old := c.m[e.key]; old != nil {
		c.remove(old)
	}
	for c.n >= c.max && c.head.prev != nil && c.head.prev != &c.head {
		c.remove(c.head.prev)
	}
	c.m[e.key] = e
	c.n++
	c.linkFront(e)
}

func (c *dekCache) linkFront(e *entry) {
	if c.head.next == nil { // lazy sentinel init
		c.head.next, c.head.prev = &c.head, &c.head
	}
	e.prev, e.next = &c.head, c.head.next
	c.head.next.prev = e
	c.head.next = e
}

func (c *dekCache) moveFront(e *entry) {
	if c.head.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	c.linkFront(e)
}

func (c *dekCache) remove(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	e.timer.Stop()
	delete(c.m, e.key)
	c.n--
}

// Len reports the number of cached DEKs (all kinds); for tests and metrics.
func (o *Opener) Len() int {
	n := 0
	for _, c := range o.caches {
		if c != nil {
			c.mu.Lock()
			n += c.n
			c.mu.Unlock()
		}
	}
	return n
}
