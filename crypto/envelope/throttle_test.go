package envelope

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/strait-proxy/strait/crypto/kms"
)

// TestUnwrapBounds (issue 12, point 9): KMS Decrypt calls on the open side
// are bounded in concurrency and rate. An Open that would need a call past
// either bound fails at once with ErrThrottled and kms.ErrUnavailable
// (retriable), is counted, and makes no KMS call; cached keys and keys
// already being unwrapped are not affected. The limiter's clock is moved by
// hand: nothing here depends on how fast the machine is.
func TestUnwrapBounds(t *testing.T) {
	checkNoLeak(t)
	ctx := context.Background()
	aad := AAD{Topic: "t", Path: PathValue}
	var throttled int
	var mu sync.Mutex
	s, o, cp := newPair(t, SealerOptions{MaxUses: 1}, OpenerOptions{
		MaxConcurrentUnwraps: 2, UnwrapRate: 3,
		OnThrottle: func() { mu.Lock(); throttled++; mu.Unlock() },
	})
	clock := time.Now()
	o.lim.now = func() time.Time { return clock }
	o.lim.last = clock
	envs := make([][]byte, 8) // MaxUses 1: a new DEK, so a KMS call, for each
	for i := range envs {
		var err error
		if envs[i], err = s.Seal(ctx, nil, "customers", aad, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	open := func(i int) error { _, err := o.Open(ctx, nil, envs[i], aad); return err }
	isThrottled := func(err error) bool {
		return errors.Is(err, ErrThrottled) && errors.Is(err, kms.ErrUnavailable)
	}

	// Concurrency: two unwraps hang in the KMS; a third key is refused at
	// once, a waiter on one of the two hanging keys is not.
	gate := make(chan struct{})
	cp.set(nil, gate)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = open(i) }()
	}
	for cp.decs.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	if err := open(2); !isThrottled(err) {
		t.Fatalf("third key with two unwraps in flight: %v, want ErrThrottled", err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); errs[2] = open(0) }() // shares the call in flight
	close(gate)
	wg.Wait()
	cp.set(nil, nil)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d after the KMS answered: %v", i, err)
		}
	}
	if n := cp.decs.Load(); n != 2 {
		t.Fatalf("%d KMS calls, want 2 (the throttled Open made none)", n)
	}

	// Rate: 3 a second, 2 tokens used above. One more call is allowed, the
	// next is refused until the clock moves; cached keys still open.
	if err := open(3); err != nil {
		t.Fatalf("third call of the second: %v", err)
	}
	if err := open(4); !isThrottled(err) {
		t.Fatalf("fourth call within the second: %v, want ErrThrottled", err)
	}
	for _, i := range []int{0, 1, 3} {
		if err := open(i); err != nil {
			t.Fatalf("cached key %d: %v", i, err)
		}
	}
	clock = clock.Add(time.Second)
	if err := open(4); err != nil {
		t.Fatalf("after a second: %v", err)
	}
	if n := cp.decs.Load(); n != 4 {
		t.Errorf("%d KMS calls, want 4", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if throttled != 2 || o.Throttled() != 2 {
		t.Errorf("throttled: callback %d, counter %d, want 2", throttled, o.Throttled())
	}
}
