package authswap_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	ksasl "github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"golang.org/x/crypto/bcrypt"

	"github.com/strait-proxy/strait/authswap"
	"github.com/strait-proxy/strait/authswap/sasl"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/oauthdouble"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
)

// BenchmarkUpstreamOAuthConnections: one op is a new client connection
// that authenticates and gets one Metadata answer, through Strait B
// (OAUTHBEARER terminated, JWT checked, SCRAM-SHA-256 to kfake) directly
// with a token the client holds, or through Strait A in front of it (SCRAM
// in front, OAUTHBEARER upstream with a cached client-credentials token;
// what a token request costs is upsasl's BenchmarkOAuthTokens).
//
//	go test ./authswap -run '^$' -bench UpstreamOAuthConnections -benchtime 200x
func BenchmarkUpstreamOAuthConnections(b *testing.B) {
	const pw, upPw, secret = "bench-downstream-pw", "bench-upstream-pw", "bench-client-secret"
	idp, err := oauthdouble.New(time.Hour)
	straittest.Must(b, err, "token endpoint")
	b.Cleanup(idp.Close)
	idp.AddClient("alice-client", oauthdouble.Client{Secret: secret, Subject: "alice-cloud", Audiences: []string{"kafka"}})
	_, cluster := sasltest.Cluster(b, kfake.User("SCRAM-SHA-256", "alice-up", upPw))
	dir := b.TempDir()
	write := func(name string, v any) string { return writeSecretFile(b, dir, name, v) }
	sh, _ := bcrypt.GenerateFromPassword([]byte(sasltest.SuperPass), bcrypt.MinCost)
	sc, _ := sasl.NewScramCred("SCRAM-SHA-256", "alice", pw, 4096)
	ttl := config.Duration(time.Minute)
	sB := startStrait(b, cluster, authswap.Config{
		SASL: &authswap.SASLConfig{Mechanisms: []string{"OAUTHBEARER", "PLAIN"}, UsersFile: write("users-b.yaml", map[string]any{"users": map[string]sasl.User{"strait": {Plain: string(sh)}}}),
			OAuthBearer: &authswap.OAuthBearerConfig{JWKSURL: idp.JWKSURL(), Issuer: idp.Issuer, Audience: "kafka"}},
		Credentials: &authswap.CredentialsConfig{CacheTTL: &ttl, File: write("creds-b.yaml", map[string]any{"principals": map[string]any{
			"alice-cloud": map[string]string{"mechanism": "SCRAM-SHA-256", "username": "alice-up", "password": upPw},
			"strait":      map[string]string{"mechanism": "PLAIN", "username": sasltest.SuperUser, "password": sasltest.SuperPass}}})},
	}, nil)
	usersA := write("users-a.yaml", map[string]any{"users": map[string]sasl.User{"alice": {ScramSHA256: sc}}})
	credsA := write("creds-a.yaml", map[string]any{"principals": map[string]any{"alice": map[string]string{"client_id": "alice-client", "client_secret": secret}}})
	reused := startStrait(b, []string{sB.addr}, authswap.Config{
		SASL:        &authswap.SASLConfig{Mechanisms: []string{"SCRAM-SHA-256"}, UsersFile: usersA},
		Credentials: &authswap.CredentialsConfig{File: credsA, CacheTTL: &ttl},
		Upstream: authswap.UpstreamConfig{Mechanism: "OAUTHBEARER", OAuth: &authswap.UpstreamOAuthConfig{
			TokenURL: idp.TokenURL(), Audience: "kafka"}},
	}, nil).addr
	tok := func() string {
		n := len(idp.Issued())
		_ = metadataVia(b, reused, scram.Auth{User: "alice", Pass: pw}.AsSha256Mechanism())
		return idp.Issued()[n].Token
	}()
	for _, tc := range []struct {
		name, addr string
		m          ksasl.Mechanism
	}{
		{"B-direct-static-token", sB.addr, oauth.Auth{Token: tok}.AsMechanism()},
		{"A-B-cached-token", reused, scram.Auth{User: "alice", Pass: pw}.AsSha256Mechanism()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			before := len(idp.Issued())
			for b.Loop() {
				if err := metadataVia(b, tc.addr, tc.m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(idp.Issued())-before)/float64(b.N), "tokens/op")
		})
	}
}

func metadataVia(b *testing.B, addr string, m ksasl.Mechanism) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.SASL(m))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = cl.Request(ctx, kmsg.NewPtrMetadataRequest())
	return err
}
