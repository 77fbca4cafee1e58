package upsasl

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// OAuthConfig configures OAUTHBEARER tokens obtained with the OAuth 2.0
// client-credentials grant (RFC 6749 section 4.4).
type OAuthConfig struct {
	// ClientAuth is how the client authenticates to the token endpoint:
	// "basic" (HTTP Basic, client_secret_basic; the default, which RFC 6749
	// section 2.3.1 requires every server to support) or "post"
	// (client_id and client_secret in the body, client_secret_post).
	ClientAuth string
	// RefreshBefore: a token is replaced once it expires within this long
	// (default 1m), or within half its lifetime if that is shorter: every
	// token is reused for at least half its life.
	RefreshBefore time.Duration
	// MinValidity: while the token endpoint is unavailable, a token due for
	// replacement is still used until it expires within this long (default
	// 5s).
	MinValidity time.Duration
	// HTTPClient talks to the token endpoints (nil: a client with a 10s
	// timeout and the system's roots).
	HTTPClient *http.Client
	// OnFetch is told the outcome of every request to a token endpoint:
	// "success", "refused" (an RFC 6749 error answer, e.g. invalid_client)
	// or "unavailable" (unreachable, 5xx, not a token answer).
	OnFetch func(result string)
}

// ClientCredentials is one principal's client at one token endpoint.
type ClientCredentials struct {
	TokenURL, ClientID, ClientSecret string
	// Scope is space-delimited (RFC 6749 section 3.3); empty: none sent.
	Scope string
	// Audience is sent as the "audience" parameter (Auth0, Okta, Keycloak
	// token exchange); empty: none sent.
	Audience string
}

// OAuthTokens keeps one reused token source per principal, so that all the
// upstream connections of a principal share a token until it nears its
// expiry. Safe for concurrent use.
type OAuthTokens struct {
	cfg OAuthConfig
	ctx context.Context // carries the HTTP client for x/oauth2

	mu sync.Mutex
	m  map[string]*principalTokens
}

// NewOAuthTokens returns an empty cache.
func NewOAuthTokens(cfg OAuthConfig) *OAuthTokens {
	if cfg.RefreshBefore <= 0 {
		cfg.RefreshBefore = time.Minute
	}
	if cfg.MinValidity <= 0 {
		cfg.MinValidity = 5 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.OnFetch == nil {
		cfg.OnFetch = func(string) {}
	}
	return &OAuthTokens{cfg: cfg, ctx: context.WithValue(context.Background(), oauth2.HTTPClient, cfg.HTTPClient), m: map[string]*principalTokens{}}
}

// HTTPClientWithCA returns a client for token endpoints that trusts the PEM
// CA certificates in caFile (and only those); timeout bounds a request.
func HTTPClientWithCA(caFile string, timeout time.Duration) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Timeout: timeout, Transport: tr}, nil
}

// Source returns principal's token source for cc. A changed cc (a rotated
// secret, another endpoint or scope) starts a new source.
func (t *OAuthTokens) Source(principal string, cc ClientCredentials) TokenSource {
	fp := sha256.Sum256([]byte(strings.Join([]string{cc.TokenURL, cc.ClientID, cc.ClientSecret, cc.Scope, cc.Audience}, "\x00")))
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.m[principal]; p != nil && p.fp == fp {
		return p
	}
	p := &principalTokens{t: t, fp: fp, cc: cc}
	p.reset()
	t.m[principal] = p
	return p
}

// principalTokens is one principal's source: x/oauth2's reuse token source
// (refreshing RefreshBefore, or half the token's lifetime, ahead of the
// expiry) over a counted fetch.
type principalTokens struct {
	t  *OAuthTokens
	fp [32]byte
	cc ClientCredentials

	mu    sync.Mutex
	fetch *fetch
	reuse oauth2.TokenSource
	early time.Duration // reuse's early expiry
	last  *oauth2.Token // the newest token, kept across an endpoint outage
}

func (p *principalTokens) reset() {
	conf := &clientcredentials.Config{ClientID: p.cc.ClientID, ClientSecret: p.cc.ClientSecret, TokenURL: p.cc.TokenURL,
		Scopes: strings.Fields(p.cc.Scope), AuthStyle: oauth2.AuthStyleInHeader}
	if p.t.cfg.ClientAuth == "post" {
		conf.AuthStyle = oauth2.AuthStyleInParams
	}
	if p.cc.Audience != "" {
		conf.EndpointParams = url.Values{"audience": {p.cc.Audience}}
	}
	p.fetch = &fetch{p: p, conf: conf}
	p.early = p.t.cfg.RefreshBefore
	p.reuse = oauth2.ReuseTokenSourceWithExpiry(nil, p.fetch, p.early)
	p.last = nil
}

// Invalidate drops the token (the broker refused it): the next connection
// fetches a new one.
func (p *principalTokens) Invalidate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reset()
}

// Token returns a token valid for at least RefreshBefore (or half its
// lifetime), fetching one when needed. While the endpoint is unavailable
// the newest token is used until MinValidity before its expiry; a refusal
// (the client was revoked) drops it.
func (p *principalTokens) Token(context.Context) (string, error) {
	p.mu.Lock()
	reuse := p.reuse
	p.mu.Unlock()
	tok, err := reuse.Token()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		if p.last == nil || tok.AccessToken != p.last.AccessToken {
			// A new token: reuse it for at least half its lifetime.
			early := min(p.t.cfg.RefreshBefore, time.Until(tok.Expiry)/2)
			if early != p.early && p.reuse == reuse {
				p.early = early
				p.reuse = oauth2.ReuseTokenSourceWithExpiry(tok, p.fetch, early)
			}
		}
		p.last = tok
		return tok.AccessToken, nil
	}
	var ue *Error
	if errors.As(err, &ue) && ue.Reason == "token_refused" {
		if p.reuse == reuse {
			p.reset()
		}
		return "", err
	}
	if p.last != nil && time.Until(p.last.Expiry) > p.t.cfg.MinValidity {
		return p.last.AccessToken, nil
	}
	return "", err
}

// fetch asks the token endpoint, every time it is called (the reuse source
// calls it only when the token nears its expiry).
type fetch struct {
	p    *principalTokens
	conf *clientcredentials.Config
}

func (f *fetch) Token() (*oauth2.Token, error) {
	cc, onFetch := f.p.cc, f.p.t.cfg.OnFetch
	tok, err := f.conf.Token(f.p.t.ctx) // a fresh x/oauth2 source: one request
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode != "" && re.Response != nil && re.Response.StatusCode < 500 {
			onFetch("refused")
			// The code and status only: a description could echo input.
			return nil, &Error{Reason: "token_refused", Err: fmt.Errorf("token endpoint %s refused client %q: %s (HTTP %d)", cc.TokenURL, cc.ClientID, clip(re.ErrorCode, 40), re.Response.StatusCode)}
		}
		onFetch("unavailable")
		if re != nil && re.Response != nil {
			err = fmt.Errorf("HTTP %d", re.Response.StatusCode)
		}
		return nil, &Error{Reason: "token_unavailable", Err: fmt.Errorf("token endpoint %s for client %q: %v", cc.TokenURL, cc.ClientID, scrub(err, cc.ClientSecret))}
	}
	if !strings.EqualFold(tok.Type(), "Bearer") {
		onFetch("unavailable")
		return nil, &Error{Reason: "token_unavailable", Err: fmt.Errorf("token endpoint %s gave client %q a %q token, not a Bearer token", cc.TokenURL, cc.ClientID, clip(tok.Type(), 20))}
	}
	if tok.Expiry.IsZero() {
		// No expires_in (RFC 6749 only recommends it): reuse it for 5 minutes.
		tok.Expiry = time.Now().Add(f.p.t.cfg.RefreshBefore + 5*time.Minute)
	}
	onFetch("success")
	return tok, nil
}

// scrub removes a secret from an error text, should a transport ever echo
// the request.
func scrub(err error, secret string) string {
	s := err.Error()
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "[redacted]")
		s = strings.ReplaceAll(s, url.QueryEscape(secret), "[redacted]")
	}
	return s
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
