// Package oauthdouble is a TEST DOUBLE of an OAuth 2.0 authorization
// server's token endpoint for the client-credentials grant, not an identity
// provider. No IdP server (Keycloak, Hydra, Dex, ...) can be installed and
// run where Strait's tests run, so this in-process HTTP server implements
// the documented wire protocol the clients observe:
//
//   - RFC 6749 section 4.4 (client credentials grant): POST
//     application/x-www-form-urlencoded with grant_type=client_credentials
//     and an optional space-delimited scope;
//   - section 2.3.1 (client authentication): HTTP Basic with the
//     form-urlencoded client_id and client_secret, or both in the body;
//     more than one method is invalid_request;
//   - section 5.1 (success): 200, Cache-Control: no-store, a JSON body with
//     access_token, token_type "Bearer", expires_in and scope;
//   - section 5.2 (errors): 400 with {"error": ...} (invalid_request,
//     invalid_client, invalid_scope, unsupported_grant_type), except a
//     failed HTTP Basic client authentication, which is 401 with
//     WWW-Authenticate;
//   - the non-standard "audience" parameter that Auth0, Okta and others
//     accept (unknown audiences are invalid_target, RFC 8707's code).
//
// Access tokens are real JWTs (RFC 9068 claims: iss, sub, aud, exp, iat,
// nbf, jti, client_id, scope) signed with an ES256 key whose public half is
// served as a JWKS at /jwks, so a verifier (Strait's OAUTHBEARER
// termination) checks them exactly as it checks an IdP's tokens. Refresh
// tokens, other grants, introspection and discovery documents are not
// implemented.
package oauthdouble

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Client is a registered confidential client.
type Client struct {
	Secret string
	// Subject is the token's sub claim (the principal a verifier sees).
	Subject string
	// Scopes the client may request; a request without scope gets all.
	Scopes []string
	// Audiences the client may request; the first is the default aud.
	Audiences []string
}

// Issued is one token the endpoint handed out.
type Issued struct {
	// Token is the access token itself (tests grep logs for it).
	Token             string
	ClientID, Subject string
	IssuedAt, Expiry  time.Time
	Scope, Audience   string
}

// Server is the token endpoint double. Create it with New.
type Server struct {
	// Issuer is the iss claim: the server's base URL.
	Issuer string

	ln  net.Listener
	hs  *http.Server
	key *ecdsa.PrivateKey
	kid string

	mu       sync.Mutex
	lifetime time.Duration
	clients  map[string]Client
	revoked  map[string]bool
	down     bool // answer 503 temporarily_unavailable
	issued   []Issued
	requests int
}

// New starts the double on 127.0.0.1 (plain HTTP), issuing tokens that
// live for lifetime.
func New(lifetime time.Duration) (*Server, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Issuer: "http://" + ln.Addr().String(), ln: ln, key: key, kid: "double-" + randID()[:8],
		lifetime: lifetime, clients: map[string]Client{}, revoked: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/oauth2/token", s.token)
	mux.HandleFunc("/jwks", s.jwks)
	s.hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.hs.Serve(ln) }()
	return s, nil
}

// TokenURL is the token endpoint.
func (s *Server) TokenURL() string { return s.Issuer + "/oauth2/token" }

// JWKSURL serves the public signing key.
func (s *Server) JWKSURL() string { return s.Issuer + "/jwks" }

// Close stops the server.
func (s *Server) Close() { _ = s.hs.Close() }

// AddClient registers (or replaces) a client.
func (s *Server) AddClient(id string, c Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[id] = c
	delete(s.revoked, id)
}

// Revoke makes every following request of the client fail with
// invalid_client, as an IdP does for a deleted or disabled client.
func (s *Server) Revoke(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked[id] = true
}

// SetUnavailable makes the endpoint answer 503 (or normally again).
func (s *Server) SetUnavailable(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// Issued returns the tokens handed out, in order.
func (s *Server) Issued() []Issued {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.issued)
}

// Requests counts token requests, failed ones included.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &s.key.PublicKey, KeyID: s.kid, Algorithm: "ES256", Use: "sig"}}})
}

// fail writes an RFC 6749 section 5.2 error.
func fail(w http.ResponseWriter, status int, code, desc string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="oauthdouble"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	down := s.down
	s.mu.Unlock()
	if down {
		fail(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the authorization server is unavailable")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(w, http.StatusMethodNotAllowed, "invalid_request", "the token endpoint takes POST")
		return
	}
	if ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); strings.TrimSpace(ct) != "application/x-www-form-urlencoded" {
		fail(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", "the body is not a form")
		return
	}
	form := r.PostForm
	for k, vs := range form { // section 3.2: parameters must not be repeated
		if len(vs) > 1 {
			fail(w, http.StatusBadRequest, "invalid_request", "parameter "+k+" repeated")
			return
		}
	}
	// Section 2.3.1: Basic carries form-urlencoded id and secret.
	id, secret, basic := r.BasicAuth()
	if basic {
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			fail(w, http.StatusUnauthorized, "invalid_client", "bad Basic credentials encoding")
			return
		}
		if form.Has("client_secret") {
			fail(w, http.StatusBadRequest, "invalid_request", "more than one client authentication method")
			return
		}
	} else {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	unauth := http.StatusBadRequest
	if basic {
		unauth = http.StatusUnauthorized
	}
	s.mu.Lock()
	c, known := s.clients[id]
	revoked := s.revoked[id]
	lifetime := s.lifetime
	s.mu.Unlock()
	if id == "" || !known || revoked || subtle.ConstantTimeCompare([]byte(secret), []byte(c.Secret)) != 1 {
		fail(w, unauth, "invalid_client", "client authentication failed")
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		fail(w, http.StatusBadRequest, "invalid_request", "grant_type is required")
		return
	default:
		fail(w, http.StatusBadRequest, "unsupported_grant_type", "only client_credentials is supported")
		return
	}
	scopes := c.Scopes
	if sc := form.Get("scope"); sc != "" {
		scopes = strings.Fields(sc)
		for _, x := range scopes {
			if !slices.Contains(c.Scopes, x) {
				fail(w, http.StatusBadRequest, "invalid_scope", "scope "+x+" is not allowed for this client")
				return
			}
		}
	}
	aud := ""
	if len(c.Audiences) > 0 {
		aud = c.Audiences[0]
	}
	if a := form.Get("audience"); a != "" {
		if !slices.Contains(c.Audiences, a) {
			fail(w, http.StatusBadRequest, "invalid_target", "audience not allowed for this client")
			return
		}
		aud = a
	}
	now := time.Now()
	exp := now.Add(lifetime)
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.key}, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", s.kid))
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", "signer")
		return
	}
	scope := strings.Join(scopes, " ")
	tok, err := jwt.Signed(sig).Claims(map[string]any{
		"iss": s.Issuer, "sub": c.Subject, "aud": aud, "client_id": id, "scope": scope, "jti": randID(),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix(),
	}).Serialize()
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", "sign")
		return
	}
	s.mu.Lock()
	s.issued = append(s.issued, Issued{Token: tok, ClientID: id, Subject: c.Subject, IssuedAt: now, Expiry: exp, Scope: scope, Audience: aud})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "token_type": "Bearer", "expires_in": int64(lifetime / time.Second), "scope": scope,
	})
}

func randID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
