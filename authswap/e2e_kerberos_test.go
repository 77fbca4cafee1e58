package authswap_test

import (
	"testing"

	krbclient "github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/twmb/franz-go/pkg/sasl/kerberos"

	"github.com/strait-proxy/strait/authswap"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/krbtest"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
)

// Kerberos in front (a real MIT KDC, franz-go's GSSAPI client), SASL
// SCRAM upstream as the mapped user: the slides' second flow.
func TestKerberosEndToEnd(t *testing.T) {
	kdc := krbtest.Start(t) // skips without the MIT binaries, fails under CI=true
	kdc.AddPrincipal(t, "kafka/localhost")
	kdc.AddPrincipal(t, "client")
	kdc.AddPrincipal(t, "stranger")
	svcKeytab := kdc.Keytab(t, "kafka.keytab", "kafka/localhost")
	upstream := aclCluster(t)
	dir := t.TempDir()
	credsFile := writeSecretFile(t, dir, "upstream.yaml", map[string]any{"principals": map[string]any{
		"client": map[string]string{"username": "alice-up", "password": aliceUpPw},
	}})
	s := startStrait(t, upstream, authswap.Config{
		SASL: &authswap.SASLConfig{Mechanisms: []string{"GSSAPI"},
			GSSAPI: &authswap.GSSAPIConfig{KeytabFile: svcKeytab, ServicePrincipal: "kafka/localhost", StripRealm: true}},
		Credentials: &authswap.CredentialsConfig{File: credsFile},
		Upstream:    authswap.UpstreamConfig{Mechanism: "SCRAM-SHA-256"},
	}, func(c *config.Config) { c.Listen.AdvertiseHost = "localhost" })
	krbCfg, err := krbconfig.Load(kdc.Config)
	straittest.Must(t, err, "krb5.conf")
	login := func(name string) *krbclient.Client {
		kt, err := keytab.Load(kdc.Keytab(t, name+".keytab", name))
		straittest.Must(t, err, "keytab")
		cl := krbclient.NewWithKeytab(name, krbtest.Realm, kt, krbCfg, krbclient.DisablePAFXFAST(true))
		straittest.Must(t, cl.Login(), "kinit %s", name)
		t.Cleanup(cl.Destroy)
		return cl
	}
	bootstrap := "localhost:" + s.addr[len("127.0.0.1:"):]
	cl := client(t, bootstrap, kerberos.Auth{Client: login("client"), Service: "kafka"}.AsMechanism())
	if err := produce(cl, "from client@STRAIT.TEST"); err != nil {
		t.Fatalf("produce as client@STRAIT.TEST: %v", err)
	}
	if n := s.counter(t, "strait_authswap_authentications_total", "mechanism", "GSSAPI", "result", "success"); n < 1 {
		t.Errorf("GSSAPI successes: %v", n)
	}
	// stranger@STRAIT.TEST has a valid ticket but no upstream mapping.
	err = metadataReq(client(t, bootstrap, kerberos.Auth{Client: login("stranger"), Service: "kafka"}.AsMechanism()))
	if !isSaslFailed(err) {
		t.Fatalf("stranger: %v, want SASL_AUTHENTICATION_FAILED", err)
	}
	s.checkNoSecrets(t, aliceUpPw, sasltest.SuperPass)
}
