package authswap_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"golang.org/x/crypto/bcrypt"

	"github.com/strait-proxy/strait/authswap"
	"github.com/strait-proxy/strait/authswap/sasl"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/oauthdouble"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
)

const (
	aliceClientSecret = "alice-client-secret-2d8e"
	bobClientSecret   = "bob-client-secret-91fa"
	carolClientSecret = "carol-client-secret-5c07"
)

// Upstream OAUTHBEARER with the client-credentials grant, end to end:
//
//	franz-go (PLAIN alice) → Strait A (authswap: alice → client alice-client,
//	token from the token endpoint, OAUTHBEARER upstream) → Strait B (authswap:
//	OAUTHBEARER terminated, the JWT checked against the endpoint's JWKS, sub
//	alice-cloud → SCRAM alice-up) → kfake (ACLs: alice-up may write orders).
//
// The token endpoint is internal/oauthdouble, an in-process double of the
// RFC 6749 section 4.4 endpoint that signs real JWTs (no IdP can run here).
func TestUpstreamOAuthClientCredentialsEndToEnd(t *testing.T) {
	idp, err := oauthdouble.New(6 * time.Second)
	straittest.Must(t, err, "token endpoint double")
	t.Cleanup(idp.Close)
	idp.AddClient("alice-client", oauthdouble.Client{Secret: aliceClientSecret, Subject: "alice-cloud", Scopes: []string{"kafka"}, Audiences: []string{"kafka"}})
	idp.AddClient("bob-client", oauthdouble.Client{Secret: bobClientSecret, Subject: "bob-cloud", Scopes: []string{"kafka"}, Audiences: []string{"kafka"}})
	idp.AddClient("carol-client", oauthdouble.Client{Secret: carolClientSecret, Subject: "carol-cloud", Scopes: []string{"kafka"}, Audiences: []string{"kafka"}})

	// Strait B: terminates OAUTHBEARER (and PLAIN for Strait A's own
	// metadata connections, user "strait"), in front of the SASL-only kfake.
	upstream := aclCluster(t)
	dirB := t.TempDir()
	superHash, err := bcrypt.GenerateFromPassword([]byte(sasltest.SuperPass), bcrypt.MinCost)
	straittest.Must(t, err, "bcrypt")
	usersB := writeSecretFile(t, dirB, "users.yaml", map[string]any{"users": map[string]sasl.User{"strait": {Plain: string(superHash)}}})
	credsB := writeSecretFile(t, dirB, "upstream.yaml", map[string]any{"principals": map[string]any{
		"alice-cloud": map[string]string{"mechanism": "SCRAM-SHA-256", "username": "alice-up", "password": aliceUpPw},
		"bob-cloud":   map[string]string{"mechanism": "PLAIN", "username": "bob-up", "password": bobUpPw},
		"strait":      map[string]string{"mechanism": "PLAIN", "username": sasltest.SuperUser, "password": sasltest.SuperPass},
	}})
	b := startStrait(t, upstream, authswap.Config{
		SASL: &authswap.SASLConfig{Mechanisms: []string{"OAUTHBEARER", "PLAIN"}, UsersFile: usersB,
			OAuthBearer: &authswap.OAuthBearerConfig{JWKSURL: idp.JWKSURL(), Issuer: idp.Issuer, Audience: "kafka"}},
		Credentials: &authswap.CredentialsConfig{File: credsB},
	}, nil)

	// Strait A: PLAIN in front, client credentials per principal upstream.
	dirA := t.TempDir()
	credsA := writeSecretFile(t, dirA, "upstream.yaml", map[string]any{"principals": map[string]any{
		"alice": map[string]string{"client_id": "alice-client", "client_secret": aliceClientSecret},
		"bob":   map[string]string{"client_id": "bob-client", "client_secret": bobClientSecret, "scope": "kafka"},
		"carol": map[string]string{"mechanism": "OAUTHBEARER", "client_id": "carol-client", "client_secret": carolClientSecret},
	}})
	zero := config.Duration(0) // every connection looks its entry up: the token cache is what is reused
	a := startStrait(t, []string{b.addr}, authswap.Config{
		SASL:        &authswap.SASLConfig{Mechanisms: []string{"PLAIN"}, UsersFile: usersFile(t, dirA)},
		Credentials: &authswap.CredentialsConfig{File: credsA, CacheTTL: &zero},
		Upstream: authswap.UpstreamConfig{Mechanism: "OAUTHBEARER", OAuth: &authswap.UpstreamOAuthConfig{
			TokenURL: idp.TokenURL(), Audience: "kafka", RefreshBefore: config.Duration(4 * time.Second)}},
	}, nil)
	alice := func() error {
		return produce(client(t, a.addr, plain.Auth{User: "alice", Pass: alicePw}.AsMechanism()), "order from alice")
	}
	issuedTo := func(id string) []oauthdouble.Issued {
		var out []oauthdouble.Issued
		for _, is := range idp.Issued() {
			if is.ClientID == id {
				out = append(out, is)
			}
		}
		return out
	}

	t.Run("alice's records reach the broker as alice-up, via the mapped principal alice-cloud", func(t *testing.T) {
		if err := alice(); err != nil {
			t.Fatalf("produce as alice through A and B: %v", err)
		}
		toks := issuedTo("alice-client")
		if len(toks) != 1 || toks[0].Subject != "alice-cloud" || toks[0].Audience != "kafka" {
			t.Fatalf("tokens issued to alice-client: %+v, want one for sub alice-cloud, aud kafka", toks)
		}
		if !strings.Contains(b.logs.String(), `"principal":"alice-cloud","mechanism":"OAUTHBEARER"`) {
			t.Fatalf("Strait B did not authenticate principal alice-cloud with OAUTHBEARER; its logs:\n%s", b.logs.String())
		}
		if n := b.counter(t, "strait_authswap_upstream_authentications_total", "mechanism", "SCRAM-SHA-256", "result", "success"); n < 1 {
			t.Errorf("Strait B authenticated alice-cloud upstream %v times as alice-up", n)
		}
		if n := a.counter(t, "strait_authswap_upstream_authentications_total", "mechanism", "OAUTHBEARER", "result", "success"); n < 1 {
			t.Errorf("Strait A upstream OAUTHBEARER successes: %v", n)
		}
	})
	t.Run("bob is bob-cloud at B, whose cluster user has no ACL: the broker refuses", func(t *testing.T) {
		err := produce(client(t, a.addr, plain.Auth{User: "bob", Pass: bobPw}.AsMechanism()), "order from bob")
		if !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Fatalf("produce as bob: %v, want TOPIC_AUTHORIZATION_FAILED from the broker", err)
		}
		if toks := issuedTo("bob-client"); len(toks) != 1 || toks[0].Subject != "bob-cloud" || toks[0].Scope != "kafka" {
			t.Fatalf("tokens issued to bob-client: %+v", toks)
		}
	})
	t.Run("tokens are reused, then refreshed before they expire", func(t *testing.T) {
		// The token lives 6s and is replaced 4s before its expiry: about
		// 2s of reuse. Connect until a second token was issued.
		conns := 1
		deadline := time.Now().Add(30 * time.Second)
		for len(issuedTo("alice-client")) < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("no refresh after %d connections", conns)
			}
			if err := alice(); err != nil {
				t.Fatalf("connection %d: %v", conns+1, err)
			}
			conns++
			time.Sleep(100 * time.Millisecond)
		}
		toks := issuedTo("alice-client")
		if !toks[1].IssuedAt.Before(toks[0].Expiry) {
			t.Errorf("the second token was issued at %v, after the first one expired (%v)", toks[1].IssuedAt, toks[0].Expiry)
		}
		if conns <= len(toks) {
			t.Errorf("%d connections used %d tokens: tokens are not reused", conns, len(toks))
		}
		t.Logf("%d connections of alice, %d tokens (lifetime 6s, refresh_before 4s)", conns, len(toks))
		if n := a.counter(t, "strait_authswap_oauth_token_requests_total", "result", "success"); n < 3 {
			t.Errorf("successful token requests counted: %v, want >= 3", n)
		}
	})
	t.Run("token endpoint unavailable: a principal without a token is refused", func(t *testing.T) {
		idp.SetUnavailable(true)
		err := metadataReq(client(t, a.addr, plain.Auth{User: "carol", Pass: carolPw}.AsMechanism()))
		idp.SetUnavailable(false)
		if !isSaslFailed(err) || !strings.Contains(err.Error(), "no upstream credentials") {
			t.Fatalf("carol with the token endpoint down: %v, want SASL_AUTHENTICATION_FAILED", err)
		}
		if n := a.counter(t, "strait_authswap_oauth_token_requests_total", "result", "unavailable"); n < 1 {
			t.Errorf("unavailable token requests counted: %v", n)
		}
		if n := a.counter(t, "strait_authswap_authentications_total", "mechanism", "PLAIN", "reason", "credentials_unavailable"); n != 1 {
			t.Errorf("credentials_unavailable refusals: %v, want 1", n)
		}
		lines := 0
		for _, l := range strings.Split(a.logs.String(), "\n") {
			if strings.Contains(l, `"user":"carol"`) && strings.Contains(l, "token endpoint") {
				lines++
				if !strings.Contains(l, `"reason":"credentials_unavailable"`) {
					t.Errorf("log line without the reason: %s", l)
				}
			}
		}
		if lines != 1 {
			t.Errorf("%d log lines about carol's token, want 1:\n%s", lines, a.logs.String())
		}
		// Back up: carol gets a token (and carol-cloud has no mapping at B,
		// which B refuses: Strait A closes the connection).
		if err := metadataReq(client(t, a.addr, plain.Auth{User: "carol", Pass: carolPw}.AsMechanism())); err == nil {
			t.Fatal("carol-cloud has no upstream mapping at Strait B, yet carol's request was answered")
		}
		if len(issuedTo("carol-client")) == 0 {
			t.Fatal("carol-client got no token once the endpoint was back")
		}
		if n := a.counter(t, "strait_authswap_upstream_authentications_total", "mechanism", "OAUTHBEARER", "reason", "rejected"); n < 1 {
			t.Errorf("B's refusal of carol-cloud was not counted as rejected: %v", n)
		}
	})
	t.Run("a revoked client is refused once its token is due for refresh", func(t *testing.T) {
		idp.Revoke("alice-client")
		aliceMeta := func() error {
			return metadataReq(client(t, a.addr, plain.Auth{User: "alice", Pass: alicePw}.AsMechanism()))
		}
		deadline := time.Now().Add(30 * time.Second)
		var err error
		for err = aliceMeta(); err == nil; err = aliceMeta() {
			if time.Now().After(deadline) {
				t.Fatal("alice still connects 30s after her client was revoked")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !isSaslFailed(err) || !strings.Contains(err.Error(), "no upstream credentials") {
			t.Fatalf("alice after revocation: %v, want SASL_AUTHENTICATION_FAILED", err)
		}
		if n := a.counter(t, "strait_authswap_oauth_token_requests_total", "result", "refused"); n < 1 {
			t.Errorf("refused token requests: %v", n)
		}
		if !strings.Contains(a.logs.String(), `refused client \"alice-client\": invalid_client`) {
			t.Errorf("no log line says the endpoint refused alice-client:\n%s", a.logs.String())
		}
		// A revoked client stays refused: the old token is dropped, not reused.
		if err := aliceMeta(); !isSaslFailed(err) {
			t.Fatalf("alice's next connection: %v", err)
		}
	})
	secrets := []string{aliceClientSecret, bobClientSecret, carolClientSecret, alicePw, bobPw, carolPw, aliceUpPw, bobUpPw, sasltest.SuperPass}
	for _, is := range idp.Issued() {
		secrets = append(secrets, is.Token, is.Token[strings.LastIndexByte(is.Token, '.')+1:])
	}
	a.checkNoSecrets(t, secrets...)
	b.checkNoSecrets(t, secrets...)
}
