package authswap

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/authswap/sasl"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/interceptor"
)

func writeUsers(t *testing.T, users map[string]string) string {
	t.Helper()
	m := map[string]sasl.User{}
	for u, pw := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		m[u] = sasl.User{Plain: string(h)}
	}
	b, _ := yaml.Marshal(map[string]any{"users": m})
	p := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func exchange(c *interceptor.Conn, req kmsg.Request, version int16) *interceptor.Exchange {
	req.SetVersion(version)
	return &interceptor.Exchange{Conn: c, Key: req.Key(), Version: version, Request: req}
}

// run sends req through the interceptor's request hook for its key.
func run(t *testing.T, ic *interceptor.Interceptor, c *interceptor.Conn, req kmsg.Request, version int16) (kmsg.Response, error) {
	t.Helper()
	x := exchange(c, req, version)
	for _, h := range ic.Hooks {
		if h.Covers(x.Key, version) {
			err := h.Request(context.Background(), x)
			return x.Response, err
		}
	}
	t.Fatalf("no hook for %s v%d", kmsg.NameForKey(x.Key), version)
	return nil, nil
}

func plainAuth(t *testing.T, ic *interceptor.Interceptor, c *interceptor.Conn, hsv, authv int16, user, pw string) *kmsg.SASLAuthenticateResponse {
	t.Helper()
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = "PLAIN"
	r, err := run(t, ic, c, hs, hsv)
	if err != nil || r.(*kmsg.SASLHandshakeResponse).ErrorCode != 0 {
		t.Fatalf("handshake: %v %+v", err, r)
	}
	a := kmsg.NewPtrSASLAuthenticateRequest()
	a.SASLAuthBytes = []byte("\x00" + user + "\x00" + pw)
	r, err = run(t, ic, c, a, authv)
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	return r.(*kmsg.SASLAuthenticateResponse)
}

func TestSASLStateMachine(t *testing.T) {
	users := writeUsers(t, map[string]string{"alice": "pw-a", "bob": "pw-b"})
	ic, err := New(Config{SASL: &SASLConfig{Mechanisms: []string{"PLAIN", "SCRAM-SHA-256"}, UsersFile: users, SessionLifetime: config.Duration(90 * time.Second)}}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ic.Answers) != 2 || ic.Answers[0] != (interceptor.VersionRange{Key: 17, Min: 0, Max: 1}) || ic.Answers[1] != (interceptor.VersionRange{Key: 36, Min: 0, Max: 2}) {
		t.Fatalf("Answers = %+v", ic.Answers)
	}
	ctx := context.Background()
	newConn := func() *interceptor.Conn {
		c := &interceptor.Conn{ID: 1}
		if err := ic.OnConnect(ctx, c); err != nil {
			t.Fatal(err)
		}
		if !c.AuthPending() {
			t.Fatal("SASL configured but the gate is open")
		}
		return c
	}

	t.Run("success sets the principal and the KIP-368 lifetime on v1+", func(t *testing.T) {
		for _, v := range []int16{0, 1, 2} {
			c := newConn()
			r := plainAuth(t, ic, c, 1, v, "alice", "pw-a")
			if r.ErrorCode != 0 || c.AuthPending() || c.Principal().Name != "alice" || c.Principal().Mechanism != "PLAIN" {
				t.Fatalf("v%d: %+v, principal %+v, pending %v", v, r, c.Principal(), c.AuthPending())
			}
			want := int64(90000)
			if v == 0 {
				want = 0
			}
			if r.SessionLifetimeMillis != want {
				t.Errorf("SaslAuthenticate v%d session_lifetime_ms = %d, want %d", v, r.SessionLifetimeMillis, want)
			}
		}
	})
	t.Run("failure answers 58 with a message, then closes", func(t *testing.T) {
		c := newConn()
		r := plainAuth(t, ic, c, 1, 1, "alice", "nope")
		if r.ErrorCode != kerr.SaslAuthenticationFailed.Code || r.ErrorMessage == nil || *r.ErrorMessage != "Authentication failed: Invalid username or password" {
			t.Fatalf("%+v", r)
		}
		if !c.AuthPending() || !c.Principal().Anonymous() {
			t.Fatal("a failed authentication lifted the gate")
		}
		hs := kmsg.NewPtrSASLHandshakeRequest()
		hs.Mechanism = "PLAIN"
		if _, err := run(t, ic, c, hs, 1); !errors.Is(err, interceptor.ErrClose) {
			t.Fatalf("a retry after failure: %v, want the connection closed", err)
		}
	})
	t.Run("unsupported mechanism lists the offered ones", func(t *testing.T) {
		c := newConn()
		hs := kmsg.NewPtrSASLHandshakeRequest()
		hs.Mechanism = "OAUTHBEARER"
		r, err := run(t, ic, c, hs, 1)
		resp := r.(*kmsg.SASLHandshakeResponse)
		if err != nil || resp.ErrorCode != kerr.UnsupportedSaslMechanism.Code || strings.Join(resp.SupportedMechanisms, ",") != "PLAIN,SCRAM-SHA-256" {
			t.Fatalf("%v %+v", err, resp)
		}
	})
	t.Run("SaslAuthenticate without a handshake: ILLEGAL_SASL_STATE", func(t *testing.T) {
		c := newConn()
		a := kmsg.NewPtrSASLAuthenticateRequest()
		r, err := run(t, ic, c, a, 1)
		if err != nil || r.(*kmsg.SASLAuthenticateResponse).ErrorCode != kerr.IllegalSaslState.Code {
			t.Fatalf("%v %+v", err, r)
		}
	})
	t.Run("KIP-368 re-authentication keeps the principal", func(t *testing.T) {
		c := newConn()
		plainAuth(t, ic, c, 1, 2, "alice", "pw-a")
		if r := plainAuth(t, ic, c, 1, 2, "alice", "pw-a"); r.ErrorCode != 0 || c.Principal().Name != "alice" {
			t.Fatalf("re-auth as alice: %+v", r)
		}
		r := plainAuth(t, ic, c, 1, 2, "bob", "pw-b")
		if r.ErrorCode != kerr.SaslAuthenticationFailed.Code || c.Principal().Name != "alice" {
			t.Fatalf("re-auth as bob on alice's connection: %+v, principal %q", r, c.Principal().Name)
		}
		hs := kmsg.NewPtrSASLHandshakeRequest()
		hs.Mechanism = "PLAIN"
		c2 := newConn()
		plainAuth(t, ic, c2, 1, 2, "alice", "pw-a")
		if _, err := run(t, ic, c2, hs, 0); !errors.Is(err, interceptor.ErrClose) {
			t.Fatalf("re-auth with SaslHandshake v0: %v", err)
		}
	})
	t.Run("v0 handshake switches to raw tokens", func(t *testing.T) {
		c := newConn()
		hs := kmsg.NewPtrSASLHandshakeRequest()
		hs.Mechanism = "PLAIN"
		if _, err := run(t, ic, c, hs, 0); err != nil {
			t.Fatal(err)
		}
		th := c.RawTokens()
		if th == nil {
			t.Fatal("no raw token handler after SaslHandshake v0")
		}
		reply, done, err := th(ctx, c, []byte("\x00alice\x00pw-a"))
		if err != nil || !done || reply == nil || len(reply) != 0 || c.Principal().Name != "alice" {
			t.Fatalf("raw PLAIN: %q %v %v (reply must be empty, not nil: the client reads a zero-length frame)", reply, done, err)
		}
	})
}

// A throwaway CA that can sign CRLs (testpki does not expose its key).
type crlCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCRLCA(t *testing.T) *crlCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "crl test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &crlCA{cert: cert, key: key, pool: pool}
}

func (ca *crlCA) leaf(t *testing.T, cn string, serial int64) *tls.ConnectionState {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"Example"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames: []string{strings.ToLower(cn) + ".svc.example"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: ca.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: chains}
}

func (ca *crlCA) writeCRL(t *testing.T, path string, next time.Time, revoked ...int64) {
	var entries []x509.RevocationListEntry
	for _, s := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()),
		ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: next, RevokedCertificateEntries: entries}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMTLSConnect(t *testing.T) {
	ca := newCRLCA(t)
	crl := filepath.Join(t.TempDir(), "ca.crl")
	ca.writeCRL(t, crl, time.Now().Add(time.Hour), 666)
	ic, err := New(Config{MTLS: &MTLSConfig{Required: true, CRLFile: crl,
		PrincipalMappingRules: `RULE:^CN=([a-zA-Z0-9.@-]+),O=Example$/$1/L`}}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	connect := func(st *tls.ConnectionState) (*interceptor.Conn, error) {
		c := &interceptor.Conn{ID: 7, TLS: st}
		return c, ic.OnConnect(context.Background(), c)
	}
	c, err := connect(ca.leaf(t, "Alice", 10))
	if err != nil || c.Principal().Name != "alice" || c.Principal().Mechanism != "mtls" || c.Principal().Attrs["subject"] != "CN=Alice,O=Example" || c.AuthPending() {
		t.Fatalf("alice: %v %+v", err, c.Principal())
	}
	for name, st := range map[string]*tls.ConnectionState{
		"no TLS":         nil,
		"no certificate": {},
		"revoked":        ca.leaf(t, "Alice", 666),
		"no rule":        ca.leaf(t, "under_score", 11),
	} {
		if _, err := connect(st); !errors.Is(err, interceptor.ErrClose) {
			t.Errorf("%s: %v, want refused", name, err)
		}
	}
	// A CRL past its next update refuses everyone (fail closed)...
	ca.writeCRL(t, crl, time.Now().Add(-time.Second))
	if _, err := connect(ca.leaf(t, "Alice", 12)); err == nil {
		t.Error("accepted with an expired CRL")
	}
	// ...and a CRL from another CA too.
	newCRLCA(t).writeCRL(t, crl, time.Now().Add(time.Hour))
	if _, err := connect(ca.leaf(t, "Alice", 13)); err == nil {
		t.Error("accepted with a CRL of another CA")
	}
	ca.writeCRL(t, crl, time.Now().Add(time.Hour))
	if _, err := connect(ca.leaf(t, "Alice", 666)); err != nil {
		t.Errorf("666 no longer revoked in the new CRL: %v", err)
	}

	// SAN source.
	ic2, err := New(Config{MTLS: &MTLSConfig{Source: "san_dns", PrincipalMappingRules: `RULE:^([a-z]+)\.svc\.example$/$1/`}}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	c2 := &interceptor.Conn{TLS: ca.leaf(t, "Bob", 20)}
	if err := ic2.OnConnect(context.Background(), c2); err != nil || c2.Principal().Name != "bob" {
		t.Fatalf("san_dns: %v %q", err, c2.Principal().Name)
	}
	// Not required: no certificate stays anonymous.
	c3 := &interceptor.Conn{}
	if err := ic2.OnConnect(context.Background(), c3); err != nil || !c3.Principal().Anonymous() {
		t.Fatalf("optional mTLS without a certificate: %v %+v", err, c3.Principal())
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{`{}`, "set at least one of mtls, sasl, credentials"},
		{`{mtls: {source: cn}}`, `mtls.source: unknown "cn"`},
		{`{mtls: {principal_mapping_rules: "RULE:x"}}`, "mtls.principal_mapping_rules: rule 1: pattern: missing closing"},
		{`{sasl: {mechanisms: []}}`, "sasl.mechanisms: required"},
		{`{sasl: {mechanisms: [PLAIN, PLAIN], users_file: f}}`, "sasl.mechanisms[1]: PLAIN listed twice"},
		{`{sasl: {mechanisms: [DIGEST-MD5], users_file: f}}`, `sasl.mechanisms[0]: unknown "DIGEST-MD5"`},
		{`{sasl: {mechanisms: [PLAIN]}}`, "sasl.users_file: required"},
		{`{sasl: {mechanisms: [GSSAPI]}}`, "sasl.gssapi: set it exactly when GSSAPI"},
		{`{sasl: {mechanisms: [OAUTHBEARER]}}`, "sasl.oauthbearer: set it exactly when OAUTHBEARER"},
		{`{sasl: {mechanisms: [OAUTHBEARER], oauthbearer: {jwks_file: j}}}`, "sasl.oauthbearer.issuer: required"},
		{`{sasl: {mechanisms: [OAUTHBEARER], oauthbearer: {jwks_file: j, jwks_url: u, issuer: i, audience: a}}}`, "sasl.oauthbearer: exactly one of jwks_file, jwks_url"},
		{`{credentials: {}}`, "credentials: exactly one of file, vault"},
		{`{credentials: {file: f, vault: {}}}`, "credentials: exactly one of file, vault"},
		{`{credentials: {vault: {path: fixed}}}`, "credentials.vault.path: must contain {principal}"},
		{`{credentials: {file: f, cache_ttl: -1s}}`, "credentials.cache_ttl: must not be negative"},
		{`{credentials: {file: f}, upstream: {mechanism: GSSAPI}}`, `upstream.mechanism: unknown "GSSAPI"`},
	} {
		j, err := yaml.YAMLToJSON([]byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		var c Config
		if err := config.DecodeStrict(json.RawMessage(j), &c, "x"); err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		err = c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
