package sasl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/strait-proxy/strait/internal/secfile"
)

// OAUTHBEARER is the mechanism name.
const OAUTHBEARER = "OAUTHBEARER"

// OAuthConfig checks OAUTHBEARER tokens (RFC 7628) as JWTs signed by a key
// of a JWKS.
type OAuthConfig struct {
	// JWKSFile is a JSON Web Key Set (public keys), re-read on change.
	JWKSFile string
	// JWKSURL is where the identity provider publishes its JWKS (https);
	// fetched at start, every JWKSRefresh, and when a token names an
	// unknown key id (at most every 10s). Exactly one of JWKSFile, JWKSURL.
	JWKSURL     string
	JWKSRefresh time.Duration // default 5m
	// HTTPClient fetches JWKSURL (nil: a client with a 10s timeout).
	HTTPClient *http.Client
	// Issuer and Audience the token must carry (iss exactly; aud contains).
	Issuer, Audience string
	// PrincipalClaim names the principal (default "sub", Kafka's
	// sasl.oauthbearer.sub.claim.name).
	PrincipalClaim string
	// ClockSkew tolerated on exp, nbf and iat (default 30s).
	ClockSkew time.Duration
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

var oauthAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}

// NewOAuthBearer loads the JWKS and returns the mechanism.
func NewOAuthBearer(c OAuthConfig, onReloadError func(error)) (Mechanism, error) {
	if c.Issuer == "" || c.Audience == "" {
		return nil, errors.New("issuer and audience are required")
	}
	if c.PrincipalClaim == "" {
		c.PrincipalClaim = "sub"
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if (c.JWKSFile == "") == (c.JWKSURL == "") {
		return nil, errors.New("exactly one of a JWKS file and a JWKS URL is required")
	}
	if c.JWKSURL != "" {
		r, err := newRemoteJWKS(c, onReloadError)
		if err != nil {
			return nil, err
		}
		return &oauthMech{cfg: c, keys: r.get}, nil
	}
	w, err := secfile.WatchPublic(c.JWKSFile, parseJWKS, onReloadError)
	if err != nil {
		return nil, err
	}
	return &oauthMech{cfg: c, keys: func(string) *jose.JSONWebKeySet { return w.Get() }}, nil
}

// remoteJWKS is a JWKS fetched over HTTP and refreshed.
type remoteJWKS struct {
	url     string
	every   time.Duration
	client  *http.Client
	onError func(error)
	now     func() time.Time

	mu       sync.Mutex
	keys     *jose.JSONWebKeySet
	fetched  time.Time
	tried    time.Time // last fetch attempt for an unknown kid
	lastFail string
}

func newRemoteJWKS(c OAuthConfig, onError func(error)) (*remoteJWKS, error) {
	u, err := url.Parse(c.JWKSURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("JWKS URL %q is not an http(s) URL", c.JWKSURL)
	}
	r := &remoteJWKS{url: c.JWKSURL, every: c.JWKSRefresh, client: c.HTTPClient, onError: onError, now: c.Now}
	if r.every == 0 {
		r.every = 5 * time.Minute
	}
	if r.client == nil {
		r.client = &http.Client{Timeout: 10 * time.Second}
	}
	if r.onError == nil {
		r.onError = func(error) {}
	}
	ks, err := r.fetch()
	if err != nil {
		return nil, err
	}
	r.keys, r.fetched = ks, r.now()
	return r, nil
}

func (r *remoteJWKS) fetch() (*jose.JSONWebKeySet, error) {
	resp, err := r.client.Get(r.url)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWKS %s: HTTP %d", r.url, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	return parseJWKS(b)
}

// get returns the keys, refreshed when they are older than the refresh
// interval or when kid is not among them (rate-limited). A failed refresh
// keeps the previous keys and is reported once per distinct error.
func (r *remoteJWKS) get(kid string) *jose.JSONWebKeySet {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	stale := now.Sub(r.fetched) >= r.every
	unknown := kid != "" && len(r.keys.Key(kid)) == 0 && now.Sub(r.tried) >= 10*time.Second
	if !stale && !unknown {
		return r.keys
	}
	if unknown {
		r.tried = now
	}
	ks, err := r.fetch()
	if err != nil {
		if err.Error() != r.lastFail {
			r.lastFail = err.Error()
			r.onError(fmt.Errorf("kept the previous JWKS: %w", err))
		}
		if stale {
			r.fetched = now // retry after another interval, not on every token
		}
		return r.keys
	}
	r.keys, r.fetched, r.lastFail = ks, now, ""
	return r.keys
}

func parseJWKS(b []byte) (*jose.JSONWebKeySet, error) {
	var ks jose.JSONWebKeySet
	if err := json.Unmarshal(b, &ks); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	if len(ks.Keys) == 0 {
		return nil, errors.New("the JWKS has no keys")
	}
	for i, k := range ks.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("key %d (kid %q) is not a public key: a JWKS for verification must hold public keys only", i, k.KeyID)
		}
	}
	return &ks, nil
}

type oauthMech struct {
	cfg  OAuthConfig
	keys func(kid string) *jose.JSONWebKeySet
}

func (*oauthMech) Name() string { return OAUTHBEARER }
func (m *oauthMech) Start() Session {
	return &oauthSession{m: m}
}

type oauthSession struct {
	m         *oauthMech
	principal string
	attrs     map[string]string
	expiry    time.Time
	failed    *AuthError // sent the RFC 7628 error challenge; the client's \x01 ends it
	done      bool
}

func (s *oauthSession) Principal() string        { return s.principal }
func (s *oauthSession) Attrs() map[string]string { return s.attrs }

// Expiry is the token's exp: Kafka's session lifetime for OAUTHBEARER.
func (s *oauthSession) Expiry() time.Time { return s.expiry }

const msgOAuthBad = "Authentication failed: invalid OAUTHBEARER token"

func (s *oauthSession) Next(_ context.Context, in []byte) ([]byte, bool, error) {
	switch {
	case s.done:
		return nil, false, errors.New("OAUTHBEARER: token after the exchange completed")
	case s.failed != nil:
		s.done = true
		return nil, false, s.failed
	}
	token, authzid, err := parseOAuthClientFirst(in)
	if err != nil {
		s.done = true
		return nil, false, &AuthError{Message: msgOAuthBad + ": " + err.Error(), Reason: ReasonMalformed}
	}
	claims, err := s.m.verify(token)
	if err != nil {
		// RFC 7628 section 3.2.2: an error challenge, then the client
		// answers %x01 and the server fails the exchange.
		s.failed = &AuthError{Message: msgOAuthBad, Reason: "bad_token", Cause: err}
		status, _ := json.Marshal(map[string]string{"status": "invalid_token"})
		return status, false, nil
	}
	name, _ := claims[s.m.cfg.PrincipalClaim].(string)
	if name == "" {
		s.failed = &AuthError{Message: msgOAuthBad, Reason: "bad_token", Cause: fmt.Errorf("no string claim %q", s.m.cfg.PrincipalClaim)}
		status, _ := json.Marshal(map[string]string{"status": "invalid_token"})
		return status, false, nil
	}
	if authzid != "" && authzid != name {
		s.done = true
		return nil, false, &AuthError{Message: msgAuthzID, Reason: ReasonAuthzID, User: name}
	}
	s.done, s.principal = true, name
	s.attrs = map[string]string{}
	for _, k := range []string{"iss", "sub", "scope", "azp", "client_id"} {
		if v, ok := claims[k].(string); ok {
			s.attrs["jwt_"+k] = v
		}
	}
	if exp, ok := claims["exp"].(float64); ok {
		s.expiry = time.Unix(int64(exp), 0)
	}
	return []byte{}, true, nil
}

// parseOAuthClientFirst reads "n,[a=authzid],\x01auth=Bearer <token>\x01[k=v\x01]*\x01".
func parseOAuthClientFirst(in []byte) (token, authzid string, err error) {
	gs2, rest, ok := bytes.Cut(in, []byte{1})
	if !ok || !bytes.HasSuffix(rest, []byte{1, 1}) && !bytes.Equal(rest, []byte{1}) {
		return "", "", errors.New("not an RFC 7628 client response")
	}
	h := strings.Split(string(gs2), ",")
	if len(h) != 3 || h[0] != "n" && h[0] != "y" || h[2] != "" {
		return "", "", errors.New("bad GS2 header")
	}
	if h[1] != "" {
		if authzid, ok = strings.CutPrefix(h[1], "a="); !ok {
			return "", "", errors.New("bad GS2 header")
		}
	}
	for _, kv := range bytes.Split(bytes.TrimSuffix(rest, []byte{1, 1}), []byte{1}) {
		if v, ok := bytes.CutPrefix(kv, []byte("auth=")); ok {
			scheme, tok, ok := strings.Cut(string(v), " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
				return "", "", errors.New("auth is not a Bearer token")
			}
			token = tok
		}
	}
	if token == "" {
		return "", "", errors.New("no auth=Bearer token")
	}
	return token, authzid, nil
}

// verify checks signature, issuer, audience and time, and returns the
// claims. Errors name the failed check, never the token.
func (m *oauthMech) verify(token string) (map[string]any, error) {
	tok, err := jwt.ParseSigned(token, oauthAlgs)
	if err != nil {
		return nil, errors.New("not a signed JWT with an accepted algorithm")
	}
	if len(tok.Headers) != 1 {
		return nil, errors.New("exactly one signature expected")
	}
	keys := m.keys(tok.Headers[0].KeyID)
	var cands []jose.JSONWebKey
	if kid := tok.Headers[0].KeyID; kid != "" {
		cands = keys.Key(kid)
	} else {
		cands = keys.Keys
	}
	var std jwt.Claims
	all := map[string]any{}
	verified := false
	for _, k := range cands {
		if k.Algorithm != "" && k.Algorithm != tok.Headers[0].Algorithm {
			continue
		}
		if err := tok.Claims(k.Key, &std, &all); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, errors.New("signature does not verify with any key of the JWKS")
	}
	if std.Expiry == nil {
		return nil, errors.New("no exp claim")
	}
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: m.cfg.Issuer, AnyAudience: jwt.Audience{m.cfg.Audience}, Time: m.cfg.Now()}, m.cfg.ClockSkew)
	if err != nil {
		return nil, err
	}
	return all, nil
}
