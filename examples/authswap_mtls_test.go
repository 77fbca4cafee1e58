package examples_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/kmsdouble"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/internal/testpki"
)

// examples/authswap-mtls: mTLS -> Vault (test double) -> SASL/PLAIN upstream.
func TestAuthswapMTLSExample(t *testing.T) {
	const (
		alicePw = "alice-cloud-pw-6e1d"
		bobPw   = "bob-cloud-pw-0b44"
	)
	orders := kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "orders", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true}
	_, upstream := sasltest.Cluster(t, kfake.EnableACLs(), kfake.SeedTopics(1, "orders"),
		kfake.User("PLAIN", "alice-cloud", alicePw, orders), kfake.User("PLAIN", "bob-cloud", bobPw))

	vault := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(vault.Close)
	vault.PutKV("", "secret", "kafka/principals/alice", map[string]any{"username": "alice-cloud", "password": alicePw})
	vault.PutKV("", "secret", "kafka/principals/bob", map[string]any{"username": "bob-cloud", "password": bobPw})
	token := vault.IssueToken("")

	work := t.TempDir()
	yml, err := os.ReadFile(filepath.Join("authswap-mtls", "strait.yaml"))
	straittest.Must(t, err, "read example")
	straittest.Must(t, os.WriteFile(filepath.Join(work, "strait.yaml"), yml, 0o644), "copy")
	if _, err := os.Stat(filepath.Join("authswap-mtls", "README.md")); err != nil {
		t.Errorf("example has no README.md: %v", err)
	}
	exampleUpstreamSASL(t, yml, work)
	ca := testpki.New(t)
	cert, key := ca.Leaf(t, "127.0.0.1", "localhost")
	for src, dst := range map[string]string{ca.CertFile: "ca.pem", cert: "strait.pem", key: "strait-key.pem"} {
		b, err := os.ReadFile(src)
		straittest.Must(t, err, "read %s", src)
		straittest.Must(t, os.WriteFile(filepath.Join(work, dst), b, 0o600), "write %s", dst)
	}

	// Vault is contacted at the first connection, not by validate.
	env := append(os.Environ(), "VAULT_ADDR="+vault.URL())
	out, err := straitEnv(t, work, env, "validate", "--config", "strait.yaml")
	if err != nil || strings.TrimSpace(out) != "configuration ok" {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	straittest.Must(t, os.WriteFile(filepath.Join(work, "vault-token"), []byte(token+"\n"), 0o600), "token")

	seed, logs := startStraitEnv(t, work, env, upstream)
	cl := func(cn string) *kgo.Client {
		return client(t, seed, kgo.DialTLSConfig(ca.MTLSClientConfig(t, cn)), kgo.DisableIdempotentWrite(),
			kgo.RequestRetries(1), kgo.RecordRetries(2), kgo.RetryTimeout(5*time.Second))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl("Alice").ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("order 1")}).FirstErr(); err != nil {
		t.Fatalf("Alice: %v", err)
	}
	if err := cl("Bob").ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("Bob (bob-cloud has no ACL): %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	mctx, mcancel := context.WithTimeout(ctx, 10*time.Second)
	defer mcancel()
	if _, err := cl("Mallory").Request(mctx, kmsg.NewPtrMetadataRequest()); err == nil {
		t.Fatal("Mallory (no secret in Vault) was served")
	}
	reader := client(t, seed, kgo.DialTLSConfig(ca.MTLSClientConfig(t, "Alice")),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": {0: kgo.NewOffset().AtStart()}}))
	fs := reader.PollFetches(ctx)
	if err := fs.Err(); err != nil || fs.NumRecords() != 1 || string(fs.Records()[0].Value) != "order 1" {
		t.Fatalf("Alice reads back: %v, %d records", err, fs.NumRecords())
	}
	if !strings.Contains(logs(), "client authentication failed") {
		t.Error("Mallory's refusal was not logged")
	}
	for _, s := range []string{alicePw, bobPw, token, sasltest.SuperPass} {
		if strings.Contains(logs(), s) {
			t.Errorf("secret %q in strait's output", s)
		}
	}
}

func straitEnv(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, straitBin(t), args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// exampleUpstreamSASL checks that an example's strait.yaml (yml) logs
// Strait's own connections in to the SASL-only cluster with upstream.sasl
// as the test cluster's superuser, password from a file, and writes that
// file (relative to dir, the working directory of strait) with mode 0600.
func exampleUpstreamSASL(t *testing.T, yml []byte, dir string) {
	t.Helper()
	cfg, err := config.Parse(yml)
	straittest.Must(t, err, "parse example")
	u := cfg.Upstream.SASL
	switch {
	case u == nil:
		t.Fatal("the example has no upstream.sasl: Strait's own connections cannot log in to a SASL-only cluster")
	case u.PasswordFile == "" || filepath.IsAbs(u.PasswordFile):
		t.Fatalf("upstream.sasl.password_file %q: the example should read the password from a file next to strait.yaml", u.PasswordFile)
	case u.Mechanism != sasltest.SuperMechanism || u.Username != sasltest.SuperUser:
		t.Fatalf("upstream.sasl is %s as %q; the test cluster's user for Strait is %s as %q",
			u.Mechanism, u.Username, sasltest.SuperMechanism, sasltest.SuperUser)
	}
	sasltest.WritePasswordFile(t, filepath.Join(dir, u.PasswordFile))
}

// startStraitEnv is startStrait with an environment, logging at debug, and
// the output returned for inspection.
func startStraitEnv(t *testing.T, dir string, env []string, upstream []string) (string, func() string) {
	t.Helper()
	base := straittest.FreePortBase(t, 12)
	listen := "127.0.0.1:" + strconv.Itoa(base+10)
	admin := "127.0.0.1:" + strconv.Itoa(base+11)
	var logs bytes.Buffer
	var mu sync.Mutex
	cmd := exec.Command(straitBin(t), "run", "--config", "strait.yaml",
		"--upstream", strings.Join(upstream, ","), "--listen", listen, "--broker-port-base", strconv.Itoa(base),
		"--admin-listen", admin, "--log-level", "debug")
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout = &lockedWriter{&mu, &logs}
	cmd.Stderr = cmd.Stdout
	straittest.Must(t, cmd.Start(), "start strait")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	read := func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("strait output:\n%s", read())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("strait exited: %v\n%s", err, read())
		default:
		}
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return listen, read
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("strait did not become ready\n%s", read())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
