// Package creds maps an authenticated principal name to the credentials
// Strait uses upstream for it: a mode-checked YAML file or HashiCorp Vault
// KV version 2, behind a cache with a TTL. A principal without a mapping,
// or a store that cannot answer, is an error: there is no fallback
// identity.
package creds

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/internal/secfile"
)

// Credentials authenticate one principal upstream.
type Credentials struct {
	// Mechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER;
	// empty: the interceptor's default.
	Mechanism string `json:"mechanism,omitempty"`
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
	// Token is a static OAUTHBEARER token.
	Token string `json:"token,omitempty"`
	// Version identifies the stored version (Vault's secret version, the
	// file's modification time), for logs.
	Version string `json:"-"`
}

// String never shows secrets, so a Credentials can be logged by mistake.
func (c Credentials) String() string {
	return fmt.Sprintf("{mechanism:%s username:%s password:%s token:%s}", c.Mechanism, c.Username, redact(c.Password), redact(c.Token))
}

// GoString is String, for %#v.
func (c Credentials) GoString() string { return c.String() }

func redact(s string) string {
	if s == "" {
		return `""`
	}
	return "[redacted]"
}

// Validate checks that the credentials can authenticate with mech (the
// default mechanism when c.Mechanism is empty).
func (c Credentials) Validate(defaultMech string) error {
	mech := c.Mechanism
	if mech == "" {
		mech = defaultMech
	}
	switch mech {
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.Username == "" || c.Password == "" {
			return fmt.Errorf("%s needs username and password", mech)
		}
	case "OAUTHBEARER":
		if c.Token == "" {
			return errors.New("OAUTHBEARER needs token")
		}
	case "":
		return errors.New("no mechanism (set mechanism here or upstream.mechanism)")
	default:
		return fmt.Errorf("unknown mechanism %q (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)", mech)
	}
	return nil
}

// ErrNoMapping: the store answered, and has nothing for this principal.
var ErrNoMapping = errors.New("no upstream credentials for this principal")

// ErrUnavailable: the store could not answer (down, denied, timed out).
var ErrUnavailable = errors.New("credential store unavailable")

// ErrInvalid: the stored entry is unusable (missing fields).
var ErrInvalid = errors.New("stored credentials are invalid")

// Store looks up credentials by principal name.
type Store interface {
	Lookup(ctx context.Context, principal string) (Credentials, error)
	Name() string // "file", "vault": a metric label
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9._@=+-]+$`)

// CheckName refuses principal names that could escape a Vault path or a
// key: only letters, digits and . _ @ = + -, never "." or "..".
func CheckName(principal string) error {
	if !safeName.MatchString(principal) || principal == "." || principal == ".." || len(principal) > 255 {
		return fmt.Errorf("principal name %q cannot be looked up (allowed: letters, digits and . _ @ = + -)", principal)
	}
	return nil
}

// File is the file store:
//
//	principals:
//	  alice: {mechanism: SCRAM-SHA-512, username: alice-cloud, password: "..."}
//	  svc-orders: {username: orders, password: "..."}
//
// The file must not be readable by others (see secfile); it is re-read when
// it changes, and a broken new version keeps the old one.
type File struct {
	w *secfile.Watched[map[string]Credentials]
}

type fileDoc struct {
	Principals map[string]Credentials `json:"principals"`
}

// ParseFile decodes a credentials file strictly; every entry must be
// usable with defaultMech.
func ParseFile(b []byte, defaultMech string) (map[string]Credentials, error) {
	var d fileDoc
	if err := yaml.UnmarshalStrict(b, &d); err != nil {
		return nil, err
	}
	var errs []string
	for n, c := range d.Principals {
		if err := CheckName(n); err != nil {
			errs = append(errs, "principals: "+err.Error())
		}
		if err := c.Validate(defaultMech); err != nil {
			errs = append(errs, fmt.Sprintf("principals.%s: %v", n, err))
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return d.Principals, nil
}

// NewFile loads path (mode-checked) and watches it.
func NewFile(path, defaultMech string, onReloadError func(error)) (*File, error) {
	w, err := secfile.Watch(path, func(b []byte) (map[string]Credentials, error) { return ParseFile(b, defaultMech) }, onReloadError)
	if err != nil {
		return nil, err
	}
	return &File{w: w}, nil
}

// Name is "file".
func (*File) Name() string { return "file" }

// Lookup returns the principal's entry or ErrNoMapping.
func (f *File) Lookup(_ context.Context, principal string) (Credentials, error) {
	c, ok := f.w.Get()[principal]
	if !ok {
		return Credentials{}, fmt.Errorf("%w: %q", ErrNoMapping, principal)
	}
	return c, nil
}

// Cache keeps lookups for TTL. Concurrent lookups of one principal share one
// store call. Failures are not cached. Invalidate drops an entry the
// upstream refused (a rotated secret), so the next connection asks again.
type Cache struct {
	store Store
	ttl   time.Duration
	now   func() time.Time
	sf    singleflight.Group

	mu sync.Mutex
	m  map[string]cacheEntry
}

type cacheEntry struct {
	c       Credentials
	expires time.Time
}

// NewCache wraps store; ttl 0 disables caching.
func NewCache(store Store, ttl time.Duration) *Cache {
	return &Cache{store: store, ttl: ttl, now: time.Now, m: map[string]cacheEntry{}}
}

// Name is the store's name.
func (c *Cache) Name() string { return c.store.Name() }

// Lookup returns cached credentials or asks the store. cached reports a hit.
func (c *Cache) Lookup(ctx context.Context, principal string) (cr Credentials, cached bool, err error) {
	if err := CheckName(principal); err != nil {
		return Credentials{}, false, fmt.Errorf("%w: %v", ErrNoMapping, err)
	}
	c.mu.Lock()
	e, ok := c.m[principal]
	c.mu.Unlock()
	if ok && c.now().Before(e.expires) {
		return e.c, true, nil
	}
	v, err, _ := c.sf.Do(principal, func() (any, error) {
		cr, err := c.store.Lookup(ctx, principal)
		if err != nil {
			return Credentials{}, err
		}
		if c.ttl > 0 {
			c.mu.Lock()
			c.m[principal] = cacheEntry{c: cr, expires: c.now().Add(c.ttl)}
			c.mu.Unlock()
		}
		return cr, nil
	})
	if err != nil {
		c.Invalidate(principal) // an expired entry is not served after a failed refresh
		return Credentials{}, false, err
	}
	return v.(Credentials), false, nil
}

// Invalidate forgets principal's cached credentials.
func (c *Cache) Invalidate(principal string) {
	c.mu.Lock()
	delete(c.m, principal)
	c.mu.Unlock()
}
