package encrypt

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/rules"
)

// Kafka's default message.max.bytes: the most one record batch may take on
// the wire, unless the broker or topic says otherwise.
const defaultMaxMessageBytes = 1048588

// fallbackMaxMessageBytes is the limit assumed for a topic whose limit
// could not be learned: the broker default less 16 KiB, so that a broker
// configured a little below the default still takes every split batch.
const fallbackMaxMessageBytes = defaultMaxMessageBytes - 16<<10

// Defaults of Limits.MaxMessageBytesRefresh, and how long a failed lookup
// is remembered before it is tried again.
const (
	defaultLimitRefresh = 5 * time.Minute
	failedLimitTTL      = 10 * time.Second
	limitLookupTimeout  = 5 * time.Second
	maxLimitEntries     = 4096
)

// sizeLimits learns, per topic, the largest record batch the cluster takes
// (the topic's max.message.bytes, which is the broker's message.max.bytes
// unless the topic overrides it), through DescribeConfigs, and caches it.
// An entry past its time is served while one background lookup refreshes
// it, so only the first produce to a topic waits for the cluster.
type sizeLimits struct {
	override int
	ttl      time.Duration
	cluster  func() kmsg.Requestor

	mu      sync.Mutex
	byTopic map[string]*sizeEntry
	lookups atomic.Int64
}

type sizeEntry struct {
	bytes      int
	until      time.Time
	refreshing bool
}

func newSizeLimits(l rules.Limits, cluster func() kmsg.Requestor) *sizeLimits {
	ttl := time.Duration(l.MaxMessageBytesRefresh)
	if ttl <= 0 {
		ttl = defaultLimitRefresh
	}
	return &sizeLimits{override: l.MaxMessageBytes, ttl: ttl, cluster: cluster, byTopic: make(map[string]*sizeEntry)}
}

// limit is the most bytes one batch of topic may take.
func (l *sizeLimits) limit(ctx context.Context, topic string) int {
	if l.override > 0 {
		return l.override
	}
	now := time.Now()
	l.mu.Lock()
	if e := l.byTopic[topic]; e != nil {
		v := e.bytes
		if !now.Before(e.until) && !e.refreshing {
			e.refreshing = true
			go l.refresh(topic)
		}
		l.mu.Unlock()
		return v
	}
	l.mu.Unlock()
	v, ok := l.lookup(ctx, topic)
	l.store(topic, v, ok)
	return v
}

func (l *sizeLimits) refresh(topic string) {
	v, ok := l.lookup(context.Background(), topic)
	l.store(topic, v, ok)
}

func (l *sizeLimits) store(topic string, v int, ok bool) {
	ttl := l.ttl
	if !ok {
		ttl = min(ttl, failedLimitTTL)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, have := l.byTopic[topic]; !have && len(l.byTopic) >= maxLimitEntries {
		for k := range l.byTopic { // evict one: the map stays bounded
			delete(l.byTopic, k)
			break
		}
	}
	l.byTopic[topic] = &sizeEntry{bytes: v, until: time.Now().Add(ttl)}
}

// lookup asks the cluster for topic's max.message.bytes, then for the
// broker's message.max.bytes; ok is false when neither answered and v is
// the fallback.
func (l *sizeLimits) lookup(ctx context.Context, topic string) (v int, ok bool) {
	cl := l.cluster()
	if cl == nil {
		return fallbackMaxMessageBytes, false
	}
	l.lookups.Add(1)
	ctx, cancel := context.WithTimeout(ctx, limitLookupTimeout)
	defer cancel()
	ask := func(typ kmsg.ConfigResourceType, name, config string) (int, bool) {
		req := kmsg.NewPtrDescribeConfigsRequest()
		r := kmsg.NewDescribeConfigsRequestResource()
		r.ResourceType, r.ResourceName, r.ConfigNames = typ, name, []string{config}
		req.Resources = append(req.Resources, r)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, false
		}
		for _, res := range resp.Resources {
			if res.ErrorCode != 0 {
				continue
			}
			for _, c := range res.Configs {
				if c.Name != config || c.Value == nil {
					continue
				}
				if n, err := strconv.Atoi(*c.Value); err == nil && n > 0 {
					return n, true
				}
			}
		}
		return 0, false
	}
	if n, ok := ask(kmsg.ConfigResourceTypeTopic, topic, "max.message.bytes"); ok {
		return n, true
	}
	if n, ok := ask(kmsg.ConfigResourceTypeBroker, "", "message.max.bytes"); ok {
		return n, true
	}
	return fallbackMaxMessageBytes, false
}
