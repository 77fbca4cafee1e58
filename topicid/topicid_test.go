package topicid

import (
	"context"
	"crypto/rand"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// lookupCluster is a kfake cluster with topic "by-id", a kgo client to it,
// and a count of the Metadata requests that name topics by id (the lookups;
// kgo's own metadata requests name none).
type lookupCluster struct {
	c       *kfake.Cluster
	cl      *kgo.Client
	id      [16]byte // by-id's topic id
	lookups atomic.Int64
}

func newLookupCluster(t *testing.T, opts ...kfake.Opt) *lookupCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a kfake cluster")
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, "by-id")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	lc := &lookupCluster{c: c}
	c.ControlKey(3, func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, tp := range r.(*kmsg.MetadataRequest).Topics {
			if tp.TopicID != [16]byte{} {
				lc.lookups.Add(1)
				break
			}
		}
		return nil, nil, false
	})
	if lc.cl, err = kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lc.cl.Close)
	req := kmsg.NewPtrMetadataRequest()
	tp := kmsg.NewMetadataRequestTopic()
	tp.Topic = kmsg.StringPtr("by-id")
	req.Topics = append(req.Topics, tp)
	resp, err := req.RequestWith(context.Background(), lc.cl)
	if err != nil || len(resp.Topics) != 1 || resp.Topics[0].TopicID == [16]byte{} {
		t.Fatalf("metadata of by-id: %v", err)
	}
	lc.id = resp.Topics[0].TopicID
	return lc
}

func randomIDs(n int) [][16]byte {
	ids := make([][16]byte, n)
	for i := range ids {
		rand.Read(ids[i][:])
	}
	return ids
}

// TestUnknownIDsOneLookup (issue 12, point 8): a request naming 200 random
// topic ids and one real one costs one upstream Metadata request; the real
// id resolves, the random ones fail; asking again (the same request
// retried, or each id resolved alone) costs no further request while the
// negative cache holds them.
func TestUnknownIDsOneLookup(t *testing.T) {
	lc := newLookupCluster(t)
	names := New()
	names.SetCluster(lc.cl)
	ctx := context.Background()
	ids := append(randomIDs(200), lc.id)

	names.Prefetch(ctx, ids)
	if n := lc.lookups.Load(); n != 1 {
		t.Fatalf("%d upstream lookups for one request's 201 ids, want 1", n)
	}
	if name, err := names.Resolve(ctx, lc.id); err != nil || name != "by-id" {
		t.Fatalf("real id: %q, %v", name, err)
	}
	for _, id := range ids[:200] {
		if name, err := names.Resolve(ctx, id); err == nil {
			t.Fatalf("random id %x resolved to %q", id, name)
		}
	}
	names.Prefetch(ctx, ids)
	if n := lc.lookups.Load(); n != 1 {
		t.Fatalf("%d upstream lookups after the retry, want still 1", n)
	}
	if n := names.Lookups(); n != 1 {
		t.Errorf("Lookups() = %d, want 1", n)
	}
}

// TestNegativeCacheBoundedAndExpires: the negative cache never holds more
// than MaxNegative ids, ids past MaxIDs in one request are not looked up,
// an entry expires after NegativeTTL, and a Metadata response naming an id
// overrides its negative entry.
func TestNegativeCacheBoundedAndExpires(t *testing.T) {
	lc := newLookupCluster(t)
	names := New()
	names.SetCluster(lc.cl)
	names.SetLimits(LookupLimits{NegativeTTL: time.Hour, MaxNegative: 50, MaxIDs: 20})
	ctx := context.Background()

	ids := randomIDs(30)
	names.Prefetch(ctx, ids)
	if n := lc.lookups.Load(); n != 1 {
		t.Fatalf("%d lookups, want 1", n)
	}
	if _, err := names.Resolve(ctx, ids[25]); err == nil || !errors.Is(err, errTooManyIDs) {
		t.Errorf("id past MaxIDs: %v, want %v", err, errTooManyIDs)
	}
	for range 5 {
		names.Prefetch(ctx, randomIDs(20))
	}
	names.mu.RLock()
	size := len(names.neg)
	names.mu.RUnlock()
	if size > 50 {
		t.Errorf("negative cache holds %d ids, bound 50", size)
	}

	// Expiry: once the TTL has passed (by the clock, whatever the code's
	// speed), the same id is asked about again.
	names.SetLimits(LookupLimits{NegativeTTL: time.Millisecond})
	short := randomIDs(1)[0]
	names.Resolve(ctx, short)
	for until := time.Now().Add(2 * time.Millisecond); time.Now().Before(until); {
		time.Sleep(time.Millisecond)
	}
	before := lc.lookups.Load()
	names.Resolve(ctx, short)
	if n := lc.lookups.Load() - before; n != 1 {
		t.Errorf("expired id: %d lookups, want 1", n)
	}

	// A Metadata response that names an id beats its negative entry.
	names.SetLimits(LookupLimits{NegativeTTL: time.Hour})
	id := randomIDs(1)[0]
	names.Resolve(ctx, id)
	names.Learn(&kmsg.MetadataResponse{Topics: []kmsg.MetadataResponseTopic{{Topic: kmsg.StringPtr("late"), TopicID: id}}})
	if n, err := names.Resolve(ctx, id); err != nil || n != "late" {
		t.Errorf("learned after a negative lookup: %q, %v", n, err)
	}
}

// TestLookupDeadline: a lookup the cluster never answers ends at the
// deadline with an error (the test would hang without one), and is then
// remembered: the next Resolve fails without another lookup.
func TestLookupDeadline(t *testing.T) {
	lc := newLookupCluster(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the cluster closes
	lc.c.ControlKey(3, func(r kmsg.Request) (kmsg.Response, error, bool) {
		lc.c.KeepControl()
		for _, tp := range r.(*kmsg.MetadataRequest).Topics {
			if tp.TopicID != [16]byte{} {
				lc.c.SleepControl(func() { <-release })
				break
			}
		}
		return nil, nil, false
	})
	names := New()
	names.SetCluster(lc.cl)
	names.SetLimits(LookupLimits{Timeout: 200 * time.Millisecond})
	ctx := context.Background()
	id := randomIDs(1)[0]
	_, err := names.Resolve(ctx, id)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung lookup: %v, want a deadline error", err)
	}
	if _, err := names.Resolve(ctx, id); err == nil || names.Lookups() != 1 {
		t.Errorf("after the deadline: err %v, %d lookups, want an error from the cache and 1", err, names.Lookups())
	}
}
