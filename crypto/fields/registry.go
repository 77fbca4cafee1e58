package fields

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
)

// RegistryConfig configures the Schema Registry client.
type RegistryConfig struct {
	// URLs of the registry (http:// is assumed when no scheme is given).
	URLs []string
	// Username/Password enable HTTP basic auth when Username is not empty.
	Username, Password string
	// TLS, when not nil, is used to dial https URLs (client certificates,
	// private CAs).
	TLS *tls.Config
	// Timeout bounds one lookup (default 10s).
	Timeout time.Duration
	// RetryAfter is how long a failed lookup is remembered before the
	// registry is asked again (default 1s), so that an unreachable registry
	// is not hammered once per record. Successful lookups are cached forever:
	// a schema id is immutable.
	RetryAfter time.Duration
	// Opts are extra franz-go sr client options, applied last.
	Opts []sr.ClientOpt
}

// Registry fetches schemas by id from a Confluent-compatible Schema Registry
// with github.com/twmb/franz-go/pkg/sr and caches them. It is safe for
// concurrent use and may be shared by several walkers.
type Registry struct {
	cl         *sr.Client
	timeout    time.Duration
	retryAfter time.Duration

	mu   sync.Mutex
	byID map[int]*regEntry
	// references are fetched by subject/version
	byRef map[refKey]*regEntry
}

type refKey struct {
	subject string
	version int
}

type regEntry struct {
	done chan struct{}
	s    sr.Schema
	err  error
	at   time.Time
}

// NewRegistry returns a registry client.
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	var opts []sr.ClientOpt
	if len(cfg.URLs) > 0 {
		opts = append(opts, sr.URLs(append([]string(nil), cfg.URLs...)...))
	}
	if cfg.Username != "" {
		opts = append(opts, sr.BasicAuth(cfg.Username, cfg.Password))
	}
	if cfg.TLS != nil {
		opts = append(opts, sr.DialTLSConfig(cfg.TLS))
	}
	opts = append(opts, cfg.Opts...)
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: registry client: %v", ErrSchema, err)
	}
	return NewRegistryFromClient(cl, cfg.Timeout, cfg.RetryAfter), nil
}

// NewRegistryFromClient wraps an existing sr client.
func NewRegistryFromClient(cl *sr.Client, timeout, retryAfter time.Duration) *Registry {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if retryAfter <= 0 {
		retryAfter = time.Second
	}
	return &Registry{cl: cl, timeout: timeout, retryAfter: retryAfter,
		byID: map[int]*regEntry{}, byRef: map[refKey]*regEntry{}}
}

// SchemaByID returns the schema with the given id (cached).
func (r *Registry) SchemaByID(id int) (sr.Schema, error) {
	return lookupGeneric(r, r.byID, id, func(ctx context.Context) (sr.Schema, error) {
		return r.cl.SchemaByID(ctx, id)
	})
}

// SchemaByReference returns the schema of a reference (subject/version).
func (r *Registry) SchemaByReference(ref sr.SchemaReference) (sr.Schema, error) {
	return lookupGeneric(r, r.byRef, refKey{ref.Subject, ref.Version}, func(ctx context.Context) (sr.Schema, error) {
		ss, err := r.cl.SchemaByVersion(ctx, ref.Subject, ref.Version)
		return ss.Schema, err
	})
}

func lookupGeneric[K comparable](r *Registry, m map[K]*regEntry, k K, fetch func(context.Context) (sr.Schema, error)) (sr.Schema, error) {
	r.mu.Lock()
	e := m[k]
	if e != nil {
		select {
		case <-e.done:
			if e.err != nil && time.Since(e.at) > r.retryAfter {
				e = nil // retry
			}
		default:
		}
	}
	if e == nil {
		e = &regEntry{done: make(chan struct{})}
		m[k] = e
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		e.s, e.err = fetch(ctx)
		cancel()
		if e.err != nil {
			e.err = fmt.Errorf("%w: registry lookup %v: %v", ErrSchema, k, e.err)
		}
		e.at = time.Now()
		close(e.done)
		return e.s, e.err
	}
	r.mu.Unlock()
	<-e.done
	return e.s, e.err
}

// schemaCache caches a compiled per-format plan by schema id, with the same
// single-flight and retry-after behaviour as Registry.
type planCache[T any] struct {
	retryAfter time.Duration
	mu         sync.RWMutex
	m          map[int32]*planEntry[T]
}

type planEntry[T any] struct {
	done chan struct{}
	v    T
	err  error
	at   time.Time
}

func (c *planCache[T]) get(id int32, build func() (T, error)) (T, error) {
	c.mu.RLock()
	e := c.m[id]
	c.mu.RUnlock()
	if e != nil {
		select {
		case <-e.done:
			if e.err == nil || time.Since(e.at) <= c.retryAfter {
				return e.v, e.err
			}
		default:
			<-e.done
			return e.v, e.err
		}
	}
	c.mu.Lock()
	if e2 := c.m[id]; e2 != e {
		c.mu.Unlock()
		<-e2.done
		return e2.v, e2.err
	}
	e = &planEntry[T]{done: make(chan struct{})}
	if c.m == nil {
		c.m = map[int32]*planEntry[T]{}
	}
	c.m[id] = e
	c.mu.Unlock()
	e.v, e.err = build()
	e.at = time.Now()
	close(e.done)
	return e.v, e.err
}

// Client returns the underlying franz-go sr client (for validation code that
// needs e.g. the latest schema of a subject).
func (r *Registry) Client() *sr.Client { return r.cl }

// retryAfterFor is how long a walker remembers a failed schema lookup: its
// own setting, else the registry's, else one second.
func retryAfterFor(d time.Duration, reg *Registry) time.Duration {
	if d <= 0 && reg != nil {
		d = reg.retryAfter
	}
	if d <= 0 {
		d = time.Second
	}
	return d
}
