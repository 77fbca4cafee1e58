package authswap_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/twmb/franz-go/pkg/sasl/oauth"

	"github.com/strait-proxy/strait/authswap"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
)

// OAUTHBEARER in front: a JWT signed by the identity provider's key (its
// JWKS on disk), checked for issuer, audience and expiry; the sub claim is
// the principal, SCRAM upstream as the mapped user.
func TestOAuthBearerEndToEnd(t *testing.T) {
	upstream := aclCluster(t)
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "idp-1", Algorithm: "ES256", Use: "sig"}}})
	jwksFile := filepath.Join(dir, "jwks.json")
	straittest.Must(t, os.WriteFile(jwksFile, jwks, 0o644), "jwks")
	sign := func(sub, aud string, exp time.Time) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "idp-1"))
		straittest.Must(t, err, "signer")
		tok, err := jwt.Signed(s).Claims(map[string]any{"iss": "https://idp.strait.test", "aud": aud, "sub": sub, "exp": exp.Unix(), "iat": time.Now().Unix()}).Serialize()
		straittest.Must(t, err, "sign")
		return tok
	}
	credsFile := writeSecretFile(t, dir, "upstream.yaml", map[string]any{"principals": map[string]any{
		"svc-orders": map[string]string{"username": "alice-up", "password": aliceUpPw},
	}})
	s := startStrait(t, upstream, authswap.Config{
		SASL: &authswap.SASLConfig{Mechanisms: []string{"OAUTHBEARER"},
			OAuthBearer: &authswap.OAuthBearerConfig{JWKSFile: jwksFile, Issuer: "https://idp.strait.test", Audience: "kafka"}},
		Credentials: &authswap.CredentialsConfig{File: credsFile},
		Upstream:    authswap.UpstreamConfig{Mechanism: "SCRAM-SHA-256"},
	}, nil)
	good := sign("svc-orders", "kafka", time.Now().Add(time.Hour))
	if err := produce(client(t, s.addr, oauth.Auth{Token: good}.AsMechanism()), "from svc-orders"); err != nil {
		t.Fatalf("valid token: %v", err)
	}
	bad := map[string]string{
		"expired":        sign("svc-orders", "kafka", time.Now().Add(-time.Hour)),
		"other audience": sign("svc-orders", "billing", time.Now().Add(time.Hour)),
		"unmapped sub":   sign("svc-unknown", "kafka", time.Now().Add(time.Hour)),
	}
	for name, tok := range bad {
		err := metadataReq(client(t, s.addr, oauth.Auth{Token: tok}.AsMechanism()))
		if !isSaslFailed(err) {
			t.Errorf("%s: %v, want SASL_AUTHENTICATION_FAILED", name, err)
		}
	}
	if n := s.counter(t, "strait_authswap_authentications_total", "mechanism", "OAUTHBEARER", "reason", "bad_token"); n < 2 {
		t.Errorf("bad_token failures: %v", n)
	}
	secrets := []string{aliceUpPw, sasltest.SuperPass, good}
	for _, tok := range bad {
		secrets = append(secrets, tok)
	}
	s.checkNoSecrets(t, secrets...)
	if strings.Contains(s.logs.String(), good[:40]) {
		t.Error("a token prefix is in the logs")
	}
}
