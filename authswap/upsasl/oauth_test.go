package upsasl

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/strait-proxy/strait/internal/oauthdouble"
)

const secretWithSpecials = "s3cr:t /+é%-4b1d" // Basic auth form-urlencodes it (RFC 6749 2.3.1)

type fetchLog struct {
	mu sync.Mutex
	r  []string
}

func (f *fetchLog) add(r string) { f.mu.Lock(); f.r = append(f.r, r); f.mu.Unlock() }
func (f *fetchLog) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.r, ",")
}

func newIdP(t *testing.T, lifetime time.Duration) *oauthdouble.Server {
	t.Helper()
	idp, err := oauthdouble.New(lifetime)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	idp.AddClient("c1", oauthdouble.Client{Secret: secretWithSpecials, Subject: "svc-1", Scopes: []string{"kafka", "admin"}, Audiences: []string{"kafka", "other"}})
	return idp
}

func reason(err error) string {
	var ue *Error
	if errors.As(err, &ue) {
		return ue.Reason
	}
	return ""
}

func TestOAuthTokensReuseAndRefresh(t *testing.T) {
	ctx := context.Background()
	for _, auth := range []string{"basic", "post"} {
		t.Run(auth, func(t *testing.T) {
			idp := newIdP(t, time.Hour)
			var log fetchLog
			ts := NewOAuthTokens(OAuthConfig{ClientAuth: auth, RefreshBefore: time.Minute, OnFetch: log.add})
			cc := ClientCredentials{TokenURL: idp.TokenURL(), ClientID: "c1", ClientSecret: secretWithSpecials, Scope: "kafka", Audience: "other"}
			var first string
			for i := range 3 {
				tok, err := ts.Source("p", cc).Token(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					first = tok
				} else if tok != first {
					t.Fatal("a valid token was not reused")
				}
			}
			is := idp.Issued()
			if len(is) != 1 || is[0].Token != first || is[0].Scope != "kafka" || is[0].Audience != "other" || is[0].Subject != "svc-1" {
				t.Fatalf("issued %+v", is)
			}
			// Another principal with the same client has its own token.
			if _, err := ts.Source("q", cc).Token(ctx); err != nil || len(idp.Issued()) != 2 {
				t.Fatalf("second principal: %v, %d tokens", err, len(idp.Issued()))
			}
			// A rotated secret (a new credentials entry) is a new source.
			idp.AddClient("c1", oauthdouble.Client{Secret: "rotated-secret-0e4a", Subject: "svc-1", Scopes: []string{"kafka"}, Audiences: []string{"kafka"}})
			cc2 := cc
			cc2.ClientSecret, cc2.Audience = "rotated-secret-0e4a", ""
			if tok, err := ts.Source("p", cc2).Token(ctx); err != nil || tok == first {
				t.Fatalf("rotated secret: %v (same token: %v)", err, tok == first)
			}
			if got := log.String(); got != "success,success,success" {
				t.Fatalf("fetches %s", got)
			}
		})
	}
	t.Run("a token living less than refresh_before is reused for half its life", func(t *testing.T) {
		idp := newIdP(t, 2*time.Second)
		ts := NewOAuthTokens(OAuthConfig{RefreshBefore: time.Minute})
		src := ts.Source("p", ClientCredentials{TokenURL: idp.TokenURL(), ClientID: "c1", ClientSecret: secretWithSpecials})
		for range 3 {
			if _, err := src.Token(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(idp.Issued()); n != 1 {
			t.Fatalf("%d tokens for 3 uses at once", n)
		}
		deadline := time.Now().Add(30 * time.Second)
		for len(idp.Issued()) < 2 {
			if time.Now().After(deadline) {
				t.Fatal("the token was never replaced")
			}
			if _, err := src.Token(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if is := idp.Issued(); !is[1].IssuedAt.Before(is[0].Expiry) {
			t.Fatalf("replaced at %v, after the expiry %v", is[1].IssuedAt, is[0].Expiry)
		}
	})
}

func TestOAuthTokensFailures(t *testing.T) {
	ctx := context.Background()
	idp := newIdP(t, 8*time.Second) // due for replacement after 4s (half its life)
	var log fetchLog
	ts := NewOAuthTokens(OAuthConfig{RefreshBefore: time.Minute, MinValidity: 500 * time.Millisecond, OnFetch: log.add})
	cc := ClientCredentials{TokenURL: idp.TokenURL(), ClientID: "c1", ClientSecret: secretWithSpecials}
	src := ts.Source("p", cc)
	first, err := src.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for time.Since(idp.Issued()[0].IssuedAt) < 4100*time.Millisecond {
		time.Sleep(50 * time.Millisecond)
	}
	noSecret := func(err error) {
		t.Helper()
		if err != nil && strings.Contains(err.Error(), "s3cr") {
			t.Fatalf("the error shows the secret: %v", err)
		}
	}

	// Endpoint unavailable: the newest token, still valid, is used.
	idp.SetUnavailable(true)
	tok, err := src.Token(ctx)
	if err != nil || tok != first {
		t.Fatalf("endpoint down with a valid token in hand: %v", err)
	}
	// Without a token: refused, token_unavailable.
	_, err = ts.Source("fresh", cc).Token(ctx)
	if reason(err) != "token_unavailable" {
		t.Fatalf("endpoint down, no token: %v", err)
	}
	noSecret(err)
	idp.SetUnavailable(false)

	// Revoked: invalid_client drops the token, even though it is valid.
	idp.Revoke("c1")
	_, err = src.Token(ctx)
	if reason(err) != "token_refused" || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("revoked client: %v", err)
	}
	noSecret(err)
	idp.SetUnavailable(true)
	if _, err := src.Token(ctx); err == nil {
		t.Fatal("the token of a revoked client was used again")
	}
	idp.SetUnavailable(false)

	// Wrong secret, scope not allowed, endpoint gone.
	idp.AddClient("c1", oauthdouble.Client{Secret: secretWithSpecials, Subject: "svc-1", Scopes: []string{"kafka"}})
	for name, cc := range map[string]ClientCredentials{
		"wrong secret": {TokenURL: idp.TokenURL(), ClientID: "c1", ClientSecret: "s3cr-wrong"},
		"bad scope":    {TokenURL: idp.TokenURL(), ClientID: "c1", ClientSecret: secretWithSpecials, Scope: "admin"},
		"bad audience": {TokenURL: idp.TokenURL(), ClientID: "c1", ClientSecret: secretWithSpecials, Audience: "x"},
	} {
		_, err := ts.Source(name, cc).Token(ctx)
		if reason(err) != "token_refused" {
			t.Errorf("%s: %v, want token_refused", name, err)
		}
		noSecret(err)
	}
	idp.Close()
	_, err = ts.Source("closed", cc).Token(ctx)
	if reason(err) != "token_unavailable" {
		t.Fatalf("endpoint closed: %v", err)
	}
	noSecret(err)
	if got := log.String(); got != "success,unavailable,unavailable,refused,unavailable,refused,refused,refused,unavailable" {
		t.Fatalf("fetch results %s", got)
	}
}

// A token the broker refuses is dropped: the next connection gets a new one.
func TestOAuthTokenRefusedByBroker(t *testing.T) {
	idp := newIdP(t, time.Hour)
	ts := NewOAuthTokens(OAuthConfig{})
	src := ts.Source("p", ClientCredentials{TokenURL: idp.TokenURL(), ClientID: "c1", ClientSecret: secretWithSpecials})
	accept := false
	b := &fakeBroker{host: "broker", mechs: []string{"OAUTHBEARER"}, auth: func(msg []byte) ([]byte, int16) {
		if accept {
			return nil, 0
		}
		return nil, kerr.SaslAuthenticationFailed.Code
	}}
	if _, err := Authenticate(context.Background(), b, Credentials{Mechanism: "OAUTHBEARER", TokenSource: src}); reason(err) != "rejected" {
		t.Fatalf("broker refusal: %v", err)
	}
	accept = true
	if _, err := Authenticate(context.Background(), b, Credentials{Mechanism: "OAUTHBEARER", TokenSource: src}); err != nil {
		t.Fatal(err)
	}
	is := idp.Issued()
	if len(is) != 2 || string(b.seen[1]) != "n,,\x01auth=Bearer "+is[1].Token+"\x01\x01" {
		t.Fatalf("%d tokens; the second connection did not present the new one", len(is))
	}
	// The token endpoint's failure is the connection's.
	idp.Revoke("c1")
	src.(*principalTokens).Invalidate()
	if _, err := Authenticate(context.Background(), b, Credentials{Mechanism: "OAUTHBEARER", TokenSource: src}); reason(err) != "token_refused" {
		t.Fatalf("revoked client: %v", err)
	}
}

// BenchmarkOAuthTokens: a token from the cache, and one fetched from the
// token endpoint double (HTTP on loopback, an ES256-signed JWT), which is
// what a connection pays when its principal's token is due.
//
//	go test ./authswap/upsasl -run '^$' -bench OAuthTokens
func BenchmarkOAuthTokens(b *testing.B) {
	idp, err := oauthdouble.New(time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(idp.Close)
	idp.AddClient("c1", oauthdouble.Client{Secret: "s", Subject: "svc"})
	ts := NewOAuthTokens(OAuthConfig{})
	cc := ClientCredentials{TokenURL: idp.TokenURL(), ClientID: "c1", ClientSecret: "s"}
	b.Run("cached", func(b *testing.B) {
		src := ts.Source("p", cc)
		for b.Loop() {
			if _, err := src.Token(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fetched", func(b *testing.B) {
		for b.Loop() {
			src := ts.Source("p", cc)
			src.(*principalTokens).Invalidate()
			if _, err := src.Token(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
