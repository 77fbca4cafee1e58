// Package topicid maps topic ids to names for the interceptors that choose
// per topic: Produce v13+ and Fetch v13+ name topics by id only.
package topicid

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Names is a concurrency-safe topic-id -> name map fed by every Metadata
// response (v10+ carries topic ids) that flows through; encryption uses it to
// pick keys for Produce v13+/Fetch v13+, which name topics by id only.
//
// Topic ids are never reused, so an entry never goes stale; a deleted topic's
// entry stays until the process restarts (one id and name per topic ever
// seen). The zero value is an empty map ready to use.
//
// An id nobody's metadata named is looked up in the cluster, and that is
// bounded, because the ids come from clients (issue 12): the unknown ids of
// one request are looked up together, in one Metadata request of at most
// [LookupLimits.MaxIDs] ids, under a deadline ([LookupLimits.Timeout]); an id
// the cluster does not know, or a lookup that failed, is remembered in a
// bounded negative cache ([LookupLimits.NegativeTTL],
// [LookupLimits.MaxNegative]), so that repeating random ids costs no more
// upstream calls.
type Names struct {
	mu     sync.RWMutex
	names  map[[16]byte]string
	neg    map[[16]byte]negative
	lookup func(ctx context.Context, ids [][16]byte) (*kmsg.MetadataResponse, error)
	limits LookupLimits
	calls  int // upstream lookups made, for tests
	cl     kmsg.Requestor
}

// negative is a cached failure to resolve an id.
type negative struct {
	err   error
	until time.Time
}

// LookupLimits bound the lookups of unknown topic ids. Zero values pick the
// defaults.
type LookupLimits struct {
	// NegativeTTL is how long an id the cluster does not know stays
	// unknown without asking again (default 30s). A lookup that failed
	// (timeout, no broker) is remembered for at most 1s.
	NegativeTTL time.Duration
	// MaxNegative bounds the negative cache (default 10000 ids); when it is
	// full, expired entries go, then arbitrary ones.
	MaxNegative int
	// Timeout is the deadline of one lookup (default 5s).
	Timeout time.Duration
	// MaxIDs bounds the ids of one lookup (default 1000); the further
	// unknown ids of the same request fail (negatively cached) without
	// being looked up.
	MaxIDs int
}

// Defaults of LookupLimits.
const (
	DefaultNegativeTTL   = 30 * time.Second
	DefaultMaxNegative   = 10000
	DefaultLookupTimeout = 5 * time.Second
	DefaultMaxLookupIDs  = 1000
	errorTTL             = time.Second
)

func (l LookupLimits) withDefaults() LookupLimits {
	if l.NegativeTTL <= 0 {
		l.NegativeTTL = DefaultNegativeTTL
	}
	if l.MaxNegative <= 0 {
		l.MaxNegative = DefaultMaxNegative
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultLookupTimeout
	}
	if l.MaxIDs <= 0 {
		l.MaxIDs = DefaultMaxLookupIDs
	}
	return l
}

// New returns an empty map.
func New() *Names {
	return &Names{names: make(map[[16]byte]string)}
}

// SetLimits sets the bounds on lookups. Set it before serving.
func (t *Names) SetLimits(l LookupLimits) {
	t.mu.Lock()
	t.limits = l
	t.mu.Unlock()
}

// SetCluster makes lookups of unknown ids Metadata requests sent through r
// (a *kgo.Client to the cluster), all the unknown ids of a request in one.
// Set it before serving.
func (t *Names) SetCluster(r kmsg.Requestor) {
	t.mu.Lock()
	t.cl = r
	t.mu.Unlock()
	t.setLookup(func(ctx context.Context, ids [][16]byte) (*kmsg.MetadataResponse, error) {
		req := kmsg.NewPtrMetadataRequest()
		req.Topics = make([]kmsg.MetadataRequestTopic, len(ids))
		for i, id := range ids {
			req.Topics[i] = kmsg.NewMetadataRequestTopic()
			req.Topics[i].TopicID = id
		}
		return req.RequestWith(ctx, r)
	})
}

// Cluster is the client given to SetCluster, nil before: interceptors that
// need other facts from the cluster (encryption asks for topics'
// max.message.bytes) send their requests through it.
func (t *Names) Cluster() kmsg.Requestor {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.cl
}

func (t *Names) setLookup(fn func(context.Context, [][16]byte) (*kmsg.MetadataResponse, error)) {
	t.mu.Lock()
	t.lookup = fn
	t.mu.Unlock()
}

// Name returns the name of the topic with id, if some Metadata response named
// it.
func (t *Names) Name(id [16]byte) (string, bool) {
	t.mu.RLock()
	n, ok := t.names[id]
	t.mu.RUnlock()
	return n, ok
}

// Resolve returns the name of topic id, asking the cluster when no Metadata
// response has named it yet and no recent lookup failed for it. Callers that
// pick keys or policies by topic name must fail closed when it returns an
// error. Callers with several ids call [Names.Prefetch] first.
func (t *Names) Resolve(ctx context.Context, id [16]byte) (string, error) {
	if n, ok, err := t.cached(id, time.Time{}); ok || err != nil {
		return n, err
	}
	t.Prefetch(ctx, [][16]byte{id})
	if n, ok, err := t.cached(id, time.Time{}); ok || err != nil {
		return n, err
	}
	return "", fmt.Errorf("topic id %x: unknown, and no way to ask the cluster", id)
}

// cached answers from the map or the negative cache; now is read only if
// zero and needed.
func (t *Names) cached(id [16]byte, now time.Time) (string, bool, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if n, ok := t.names[id]; ok {
		return n, true, nil
	}
	if ng, ok := t.neg[id]; ok {
		if now.IsZero() {
			now = time.Now()
		}
		if now.Before(ng.until) {
			return "", false, ng.err
		}
	}
	return "", false, nil
}

var errTooManyIDs = errors.New("not looked up: too many unknown topic ids in one request")

// Prefetch looks up, in one upstream Metadata request, the ids that are
// neither known nor negatively cached, so that Resolve then answers every
// id of ids from the caches: a request naming n unknown ids costs one
// lookup, not n. Ids past LookupLimits.MaxIDs are not looked up and fail.
func (t *Names) Prefetch(ctx context.Context, ids [][16]byte) {
	now := time.Now()
	var todo [][16]byte
	for _, id := range ids {
		if _, ok, err := t.cached(id, now); !ok && err == nil && !contains(todo, id) {
			todo = append(todo, id)
		}
	}
	if len(todo) == 0 {
		return
	}
	t.mu.RLock()
	fn, lim := t.lookup, t.limits.withDefaults()
	t.mu.RUnlock()
	if fn == nil {
		return // not remembered: the way to ask may be set any moment
	}
	if len(todo) > lim.MaxIDs {
		t.remember(todo[lim.MaxIDs:], errTooManyIDs, lim.NegativeTTL, lim)
		todo = todo[:lim.MaxIDs]
	}
	t.lookupIDs(ctx, fn, todo, lim)
}

func (t *Names) lookupIDs(ctx context.Context, fn func(context.Context, [][16]byte) (*kmsg.MetadataResponse, error), ids [][16]byte, lim LookupLimits) {
	lctx, cancel := context.WithTimeout(ctx, lim.Timeout)
	defer cancel()
	t.mu.Lock()
	t.calls++
	t.mu.Unlock()
	resp, err := fn(lctx, ids)
	if err != nil {
		t.remember(ids, fmt.Errorf("lookup: %w", err), min(errorTTL, lim.NegativeTTL), lim)
		return
	}
	t.Learn(resp)
	var missing [][16]byte
	for _, id := range ids {
		if _, ok := t.Name(id); !ok {
			missing = append(missing, id)
		}
	}
	t.remember(missing, errors.New("unknown to the cluster"), lim.NegativeTTL, lim)
}

// remember puts ids in the negative cache for ttl, keeping it at most
// lim.MaxNegative entries.
func (t *Names) remember(ids [][16]byte, err error, ttl time.Duration, lim LookupLimits) {
	if len(ids) == 0 {
		return
	}
	now := time.Now()
	until := now.Add(ttl)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.neg == nil {
		t.neg = make(map[[16]byte]negative)
	}
	if len(t.neg)+len(ids) > lim.MaxNegative {
		for id, ng := range t.neg {
			if !now.Before(ng.until) {
				delete(t.neg, id)
			}
		}
		for id := range t.neg { // still full: arbitrary ones go
			if len(t.neg)+len(ids) <= lim.MaxNegative {
				break
			}
			delete(t.neg, id)
		}
	}
	for i, id := range ids {
		if i >= lim.MaxNegative {
			break
		}
		t.neg[id] = negative{err: fmt.Errorf("topic id %x: %w", id, err), until: until}
	}
}

// Lookups reports how many upstream lookups were made (for tests and
// metrics).
func (t *Names) Lookups() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.calls
}

func contains(ids [][16]byte, id [16]byte) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// Learn records the id and name of every topic in resp that has both. It
// takes the write lock only when resp names a topic it did not know, so the
// steady state (clients refreshing the same metadata) does not block readers.
func (t *Names) Learn(resp *kmsg.MetadataResponse) {
	if resp == nil || !t.hasNew(resp) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.names == nil {
		t.names = make(map[[16]byte]string)
	}
	for i := range resp.Topics {
		tp := &resp.Topics[i]
		if learnable(tp) {
			t.names[tp.TopicID] = *tp.Topic
			delete(t.neg, tp.TopicID)
		}
	}
}

func (t *Names) hasNew(resp *kmsg.MetadataResponse) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for i := range resp.Topics {
		tp := &resp.Topics[i]
		if !learnable(tp) {
			continue
		}
		if n, ok := t.names[tp.TopicID]; !ok || n != *tp.Topic {
			return true
		}
	}
	return false
}

// learnable reports whether tp names a topic by both id and name. Topics in
// error (unknown, unauthorized) carry the zero id.
func learnable(tp *kmsg.MetadataResponseTopic) bool {
	return tp.TopicID != [16]byte{} && tp.Topic != nil && *tp.Topic != ""
}
