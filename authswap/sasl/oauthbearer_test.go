package sasl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

type testIdP struct {
	key  *ecdsa.PrivateKey
	kid  string
	jwks string
}

func newIdP(t testing.TB, dir string) *testIdP {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	idp := &testIdP{key: key, kid: "k1", jwks: filepath.Join(dir, "jwks.json")}
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err := os.WriteFile(idp.jwks, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return idp
}

func (p *testIdP) sign(t testing.TB, key *ecdsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func clientFirst(authz, token string) []byte {
	h := "n,,"
	if authz != "" {
		h = "n,a=" + authz + ","
	}
	return []byte(h + "\x01auth=Bearer " + token + "\x01\x01")
}

func TestOAuthBearer(t *testing.T) {
	idp := newIdP(t, t.TempDir())
	now := time.Unix(1_800_000_000, 0)
	m, err := NewOAuthBearer(OAuthConfig{JWKSFile: idp.jwks, Issuer: "https://idp.test", Audience: "kafka", Now: func() time.Time { return now }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := func() map[string]any {
		return map[string]any{"iss": "https://idp.test", "aud": "kafka", "sub": "svc-orders", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	}
	with := func(k string, v any) map[string]any {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ok := idp.sign(t, idp.key, "k1", good())
	s := m.Start()
	out, done, err := s.Next(context.Background(), clientFirst("", ok))
	if err != nil || !done || len(out) != 0 || s.Principal() != "svc-orders" {
		t.Fatalf("good token: %q %v %v %q", out, done, err, s.Principal())
	}
	if as := s.(AttrSession).Attrs(); as["jwt_iss"] != "https://idp.test" {
		t.Errorf("attrs %v", as)
	}
	if e := s.(interface{ Expiry() time.Time }).Expiry(); !e.Equal(now.Add(time.Hour)) {
		t.Errorf("expiry %v", e)
	}
	if _, _, err := m.Start().Next(context.Background(), clientFirst("svc-orders", ok)); err != nil {
		t.Errorf("matching authzid: %v", err)
	}
	for name, tok := range map[string]string{
		"expired":          idp.sign(t, idp.key, "k1", with("exp", now.Add(-time.Minute).Unix())),
		"not yet valid":    idp.sign(t, idp.key, "k1", with("nbf", now.Add(time.Hour).Unix())),
		"no exp":           idp.sign(t, idp.key, "k1", with("exp", nil)),
		"other issuer":     idp.sign(t, idp.key, "k1", with("iss", "https://evil.test")),
		"other audience":   idp.sign(t, idp.key, "k1", with("aud", "not-kafka")),
		"unknown kid":      idp.sign(t, idp.key, "k2", good()),
		"other key":        idp.sign(t, other, "k1", good()),
		"other key no kid": idp.sign(t, other, "", good()),
		"no sub":           idp.sign(t, idp.key, "k1", with("sub", nil)),
		"alg none":         "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
		"garbage":          "not-a-jwt",
	} {
		s := m.Start()
		out, done, err := s.Next(context.Background(), clientFirst("", tok))
		if err != nil || done || !strings.Contains(string(out), `"status":"invalid_token"`) {
			t.Errorf("%s: first step %q %v %v, want the RFC 7628 error challenge", name, out, done, err)
			continue
		}
		_, done, err = s.Next(context.Background(), []byte{1})
		var ae *AuthError
		if !errors.As(err, &ae) || done || ae.Reason != "bad_token" || s.Principal() != "" {
			t.Errorf("%s: %v, want a bad_token failure", name, err)
		}
		if strings.Contains(err.Error(), tok) && len(tok) > 20 {
			t.Errorf("%s: the error carries the token", name)
		}
	}
	for name, in := range map[string][]byte{
		"authzid other": clientFirst("admin", ok),
		"no auth":       []byte("n,,\x01host=x\x01\x01"),
		"basic":         []byte("n,,\x01auth=Basic abc\x01\x01"),
		"bad header":    []byte("p=x,,\x01auth=Bearer " + ok + "\x01\x01"),
		"unterminated":  []byte("n,,\x01auth=Bearer " + ok),
	} {
		if _, done, err := m.Start().Next(context.Background(), in); err == nil || done {
			t.Errorf("%s: accepted", name)
		}
	}
	// A JWKS holding a private key is refused.
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: idp.key, KeyID: "k1"}}})
	p := filepath.Join(t.TempDir(), "priv.json")
	_ = os.WriteFile(p, priv, 0o600)
	if _, err := NewOAuthBearer(OAuthConfig{JWKSFile: p, Issuer: "i", Audience: "a"}, nil); err == nil || !strings.Contains(err.Error(), "not a public key") {
		t.Errorf("private JWKS: %v", err)
	}
}

// The JWKS from a URL: fetched at start, refetched for an unknown key id
// (the identity provider rotated its key), kept when the URL fails.
func TestOAuthBearerJWKSURL(t *testing.T) {
	var mu sync.Mutex
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	publish := []jose.JSONWebKey{{Key: &k1.PublicKey, KeyID: "k1", Algorithm: "ES256"}}
	down := false
	fetches := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fetches++
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: publish})
	}))
	t.Cleanup(srv.Close)
	now := time.Unix(1_800_000_000, 0)
	var reloadErrs []error
	m, err := NewOAuthBearer(OAuthConfig{JWKSURL: srv.URL, Issuer: "i", Audience: "a", Now: func() time.Time { return now }},
		func(err error) { reloadErrs = append(reloadErrs, err) })
	if err != nil {
		t.Fatal(err)
	}
	idp := &testIdP{}
	claims := map[string]any{"iss": "i", "aud": "a", "sub": "svc", "exp": now.Add(time.Hour).Unix()}
	auth := func(key *ecdsa.PrivateKey, kid string) error {
		_, done, err := m.Start().Next(context.Background(), clientFirst("", idp.sign(t, key, kid, claims)))
		if err == nil && !done {
			return errors.New("rejected")
		}
		return err
	}
	if err := auth(k1, "k1"); err != nil {
		t.Fatalf("k1: %v", err)
	}
	// Rotation: the provider publishes k2 only.
	mu.Lock()
	publish = []jose.JSONWebKey{{Key: &k2.PublicKey, KeyID: "k2", Algorithm: "ES256"}}
	mu.Unlock()
	if err := auth(k2, "k2"); err != nil {
		t.Fatalf("k2 after rotation: %v", err)
	}
	if err := auth(k1, "k1"); err == nil {
		t.Fatal("k1 still accepted after the provider dropped it")
	}
	// The URL fails: the keys in hand stay, the failure is reported once.
	mu.Lock()
	down = true
	mu.Unlock()
	now = now.Add(time.Hour) // stale
	claims["exp"] = now.Add(time.Hour).Unix()
	if err := auth(k2, "k2"); err != nil {
		t.Fatalf("k2 while the JWKS URL is down: %v", err)
	}
	if err := auth(k2, "k2"); err != nil || len(reloadErrs) != 1 {
		t.Fatalf("%v, reload errors %v", err, reloadErrs)
	}
	// An unreachable URL at start is a configuration error.
	if _, err := NewOAuthBearer(OAuthConfig{JWKSURL: srv.URL, Issuer: "i", Audience: "a"}, nil); err == nil {
		t.Fatal("started with a JWKS URL that answers 503")
	}
	if _, err := NewOAuthBearer(OAuthConfig{JWKSURL: "ftp://x", Issuer: "i", Audience: "a"}, nil); err == nil {
		t.Fatal("ftp URL accepted")
	}
}
