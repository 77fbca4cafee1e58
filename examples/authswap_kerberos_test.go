package examples_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	krbclient "github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/kerberos"

	"github.com/strait-proxy/strait/internal/kmsdouble"
	"github.com/strait-proxy/strait/internal/krbtest"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
)

// examples/authswap-kerberos: GSSAPI -> Vault (test double) -> SASL/PLAIN upstream.
func TestAuthswapKerberosExample(t *testing.T) {
	const clientPw = "client-cloud-pw-51aa"
	kdc := krbtest.Start(t) // skips loudly without the MIT binaries; fails under CI=true
	for _, p := range []string{"kafka/localhost", "client", "stranger"} {
		kdc.AddPrincipal(t, p)
	}
	orders := kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "orders", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true}
	_, upstream := sasltest.Cluster(t, kfake.EnableACLs(), kfake.SeedTopics(1, "orders"), kfake.User("PLAIN", "client-cloud", clientPw, orders))
	vault := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(vault.Close)
	vault.PutKV("", "secret", "kafka/principals/client", map[string]any{"username": "client-cloud", "password": clientPw})
	token := vault.IssueToken("")

	work := t.TempDir()
	yml, err := os.ReadFile(filepath.Join("authswap-kerberos", "strait.yaml"))
	straittest.Must(t, err, "read example")
	straittest.Must(t, os.WriteFile(filepath.Join(work, "strait.yaml"), yml, 0o644), "copy")
	if _, err := os.Stat(filepath.Join("authswap-kerberos", "README.md")); err != nil {
		t.Errorf("example has no README.md: %v", err)
	}
	exampleUpstreamSASL(t, yml, work)
	kt, err := os.ReadFile(kdc.Keytab(t, "kafka.keytab", "kafka/localhost"))
	straittest.Must(t, err, "keytab")
	straittest.Must(t, os.WriteFile(filepath.Join(work, "kafka.keytab"), kt, 0o600), "keytab")
	straittest.Must(t, os.WriteFile(filepath.Join(work, "vault-token"), []byte(token), 0o600), "token")
	env := append(os.Environ(), "VAULT_ADDR="+vault.URL())
	out, err := straitEnv(t, work, env, "validate", "--config", "strait.yaml")
	if err != nil || strings.TrimSpace(out) != "configuration ok" {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	seed, logs := startStraitEnv(t, work, env, upstream)
	seed = "localhost:" + seed[strings.LastIndexByte(seed, ':')+1:]

	cfg, err := krbconfig.Load(kdc.Config)
	straittest.Must(t, err, "krb5.conf")
	login := func(name string) *krbclient.Client {
		k, err := keytab.Load(kdc.Keytab(t, name+".keytab", name))
		straittest.Must(t, err, "keytab %s", name)
		cl := krbclient.NewWithKeytab(name, krbtest.Realm, k, cfg, krbclient.DisablePAFXFAST(true))
		straittest.Must(t, cl.Login(), "login %s", name)
		t.Cleanup(cl.Destroy)
		return cl
	}
	cl := func(name string, opts ...kgo.Opt) *kgo.Client {
		return client(t, seed, append([]kgo.Opt{kgo.SASL(kerberos.Auth{Client: login(name), Service: "kafka"}.AsMechanism()),
			kgo.DisableIdempotentWrite(), kgo.RequestRetries(1), kgo.RecordRetries(2), kgo.RetryTimeout(5 * time.Second)}, opts...)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl("client").ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("from kerberos")}).FirstErr(); err != nil {
		t.Fatalf("client@STRAIT.TEST: %v", err)
	}
	fs := cl("client", kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": {0: kgo.NewOffset().AtStart()}})).PollFetches(ctx)
	if err := fs.Err(); err != nil || fs.NumRecords() != 1 || string(fs.Records()[0].Value) != "from kerberos" {
		t.Fatalf("read back: %v, %d records", err, fs.NumRecords())
	}
	mctx, mcancel := context.WithTimeout(ctx, 10*time.Second)
	defer mcancel()
	_, err = cl("stranger").Request(mctx, kmsg.NewPtrMetadataRequest())
	if !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("stranger@STRAIT.TEST (no secret in Vault): %v, want SASL_AUTHENTICATION_FAILED", err)
	}
	for _, s := range []string{clientPw, token, sasltest.SuperPass} {
		if strings.Contains(logs(), s) {
			t.Errorf("secret %q in strait's output", s)
		}
	}
}
