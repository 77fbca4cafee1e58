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
	"io"
	"net"
	"net/url"
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
	// Mechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or
	// AWS_MSK_IAM; empty: the interceptor's default.
	Mechanism string `json:"mechanism,omitempty"`
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
	// Token is a static OAUTHBEARER token.
	Token string `json:"token,omitempty"`
	// ClientID and ClientSecret get OAUTHBEARER tokens with the OAuth 2.0
	// client-credentials grant (instead of Token). TokenURL, Scope and
	// Audience override upstream.oauth's for this principal.
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
	TokenURL     string `json:"token_url,omitempty"`
	Scope        string `json:"scope,omitempty"`
	Audience     string `json:"audience,omitempty"`
	// AWSAccessKeyID and AWSSecretAccessKey (with AWSSessionToken for
	// temporary credentials) sign AWS_MSK_IAM.
	AWSAccessKeyID     string `json:"aws_access_key_id,omitempty"`
	AWSSecretAccessKey string `json:"aws_secret_access_key,omitempty"`
	AWSSessionToken    string `json:"aws_session_token,omitempty"`
	// Version identifies the stored version (Vault's secret version, the
	// file's modification time), for logs.
	Version string `json:"-"`
}

// String never shows secrets, so a Credentials can be logged by mistake.
func (c Credentials) String() string {
	s := fmt.Sprintf("{mechanism:%s username:%s password:%s token:%s", c.Mechanism, c.Username, redact(c.Password), redact(c.Token))
	if c.ClientID != "" || c.ClientSecret != "" {
		s += fmt.Sprintf(" client_id:%s client_secret:%s token_url:%s", c.ClientID, redact(c.ClientSecret), c.TokenURL)
	}
	if c.AWSAccessKeyID != "" || c.AWSSecretAccessKey != "" {
		s += fmt.Sprintf(" aws_access_key_id:%s aws_secret_access_key:%s aws_session_token:%s", c.AWSAccessKeyID, redact(c.AWSSecretAccessKey), redact(c.AWSSessionToken))
	}
	return s + "}"
}

// GoString is String, for %#v.
func (c Credentials) GoString() string { return c.String() }

func redact(s string) string {
	if s == "" {
		return `""`
	}
	return "[redacted]"
}

// Mechanisms lists the upstream mechanisms an entry may name.
var Mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"}

// Validate checks that the credentials can authenticate with mech (the
// default mechanism when c.Mechanism is empty): the mechanism's keys are
// there, and no key of another mechanism is (a mistyped mechanism must not
// go unnoticed). An OAuth entry without token_url needs upstream.oauth's.
func (c Credentials) Validate(defaultMech string) error {
	mech := c.Mechanism
	if mech == "" {
		mech = defaultMech
	}
	oauthKeys := c.ClientID != "" || c.ClientSecret != "" || c.TokenURL != "" || c.Scope != "" || c.Audience != ""
	awsKeys := c.AWSAccessKeyID != "" || c.AWSSecretAccessKey != "" || c.AWSSessionToken != ""
	switch mech {
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.Username == "" || c.Password == "" {
			return fmt.Errorf("%s needs username and password", mech)
		}
	case "OAUTHBEARER":
		switch {
		case c.Token != "" && oauthKeys:
			return errors.New("OAUTHBEARER: token (static) and client_id/client_secret (client credentials) are exclusive")
		case c.Token == "" && !oauthKeys:
			return errors.New("OAUTHBEARER needs token, or client_id and client_secret")
		case c.Token == "" && (c.ClientID == "" || c.ClientSecret == ""):
			return errors.New("OAUTHBEARER client credentials need client_id and client_secret")
		case c.TokenURL != "":
			if err := CheckTokenURL(c.TokenURL); err != nil {
				return fmt.Errorf("token_url: %v", err)
			}
		}
		if c.Username != "" || c.Password != "" {
			return errors.New("OAUTHBEARER takes no username or password")
		}
		oauthKeys = false
	case "AWS_MSK_IAM":
		if c.AWSAccessKeyID == "" || c.AWSSecretAccessKey == "" {
			return errors.New("AWS_MSK_IAM needs aws_access_key_id and aws_secret_access_key")
		}
		if c.Username != "" || c.Password != "" || c.Token != "" {
			return errors.New("AWS_MSK_IAM takes no username, password or token")
		}
		awsKeys = false
	case "":
		return errors.New("no mechanism (set mechanism here or upstream.mechanism)")
	default:
		return fmt.Errorf("unknown mechanism %q (%s)", mech, strings.Join(Mechanisms, ", "))
	}
	if oauthKeys {
		return fmt.Errorf("client_id, client_secret, token_url, scope and audience are for OAUTHBEARER, not %s", mech)
	}
	if awsKeys {
		return fmt.Errorf("aws_access_key_id, aws_secret_access_key and aws_session_token are for AWS_MSK_IAM, not %s", mech)
	}
	return nil
}

// CheckTokenURL accepts https URLs, and http ones only to a loopback
// address (a local sidecar or test endpoint): the client secret travels in
// the request. User information and fragments are refused.
func CheckTokenURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return errors.New("not an absolute http(s) URL")
	}
	if u.User != nil {
		return errors.New("must not carry user information (the client id and secret are separate keys)")
	}
	if u.Fragment != "" {
		return errors.New("must not have a fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); (ip != nil && ip.IsLoopback()) || h == "localhost" {
			return nil
		}
		return fmt.Errorf("%s: http is allowed only to a loopback address; use https", u.Redacted())
	}
	return fmt.Errorf("%s: not an http(s) URL", u.Redacted())
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

// Close releases what the store holds (Vault: the token renewal).
func (c *Cache) Close() error {
	if cl, ok := c.store.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// Invalidate forgets principal's cached credentials.
func (c *Cache) Invalidate(principal string) {
	c.mu.Lock()
	delete(c.m, principal)
	c.mu.Unlock()
}
