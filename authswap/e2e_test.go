package authswap_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	ksasl "github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/authswap"
	"github.com/strait-proxy/strait/authswap/sasl"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/proxy"
	"github.com/strait-proxy/strait/topicid"
)

// Every secret of the tests, grepped for in the captured logs.
const (
	alicePw   = "alice-downstream-pw-31c9"
	bobPw     = "bob-downstream-pw-88d1"
	carolPw   = "carol-downstream-pw-0a7e"
	aliceUpPw = "alice-upstream-pw-5b2f"
	bobUpPw   = "bob-upstream-pw-c6d3"
	wrongPw   = "wrong-pw-e4a0"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	t  testing.TB
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if os.Getenv("STRAIT_TEST_LOG") != "" {
		s.t.Log(strings.TrimSpace(string(p)))
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// strait runs an in-process Strait whose logs (proxy and interceptors, at
// debug level) are captured.
type strait struct {
	*proxy.Server
	addr string
	reg  *prometheus.Registry
	logs *syncBuffer
}

func startStrait(t testing.TB, upstream []string, cfgAuth authswap.Config, mutate func(*config.Config)) *strait {
	t.Helper()
	return startChain(t, upstream, func(log *slog.Logger, reg *prometheus.Registry) ([]*interceptor.Interceptor, *topicid.Names) {
		ic, err := authswap.New(cfgAuth, authswap.Env{Logger: log.With("interceptor", "authswap"), Metrics: reg})
		if err != nil {
			t.Fatalf("authswap.New: %v", err)
		}
		return []*interceptor.Interceptor{ic}, nil
	}, mutate)
}

// startChain runs Strait with the interceptors (and topic-name map) build
// returns, given the captured logger and the metrics registry. Every
// cluster of these tests is SASL-only (sasltest.Cluster), so Strait's own
// connections (broker list, topic ids) log in with upstream.sasl, as a
// deployment's must; client sessions authenticate as their principal.
func startChain(t testing.TB, upstream []string, build func(*slog.Logger, *prometheus.Registry) ([]*interceptor.Interceptor, *topicid.Names), mutate func(*config.Config)) *strait {
	t.Helper()
	logs := &syncBuffer{t: t}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	ics, topics := build(log, reg)
	base := straittest.FreePortBase(t, 11)
	cfg := config.Default()
	cfg.Upstream.Bootstrap = upstream
	cfg.Listen.Bootstrap = "127.0.0.1:" + strconv.Itoa(base+10)
	cfg.Listen.BrokerPortBase = base
	cfg.Upstream.MetadataRefresh = config.Duration(500 * time.Millisecond)
	cfg.Limits.DrainTimeout = config.Duration(5 * time.Second)
	cfg.Upstream.SASL = sasltest.UpstreamSASL(t)
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := proxy.New(cfg, proxy.Options{Logger: log, Registerer: reg, Interceptors: ics, Topics: topics})
	straittest.Must(t, err, "proxy.New")
	straittest.Must(t, srv.Listen(), "listen")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(15 * time.Second)
	for !srv.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("strait did not become ready; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &strait{Server: srv, addr: srv.Addr(), reg: reg, logs: logs}
}

// checkNoSecrets fails if any secret reached the logs.
func (s *strait) checkNoSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	logs := s.logs.String()
	if logs == "" {
		t.Fatal("no log output was captured: the secret check would prove nothing")
	}
	for _, sec := range secrets {
		if strings.Contains(logs, sec) {
			t.Errorf("secret %q appears in the logs", sec)
		}
	}
}

func (s *strait) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return straittest.Counter(t, s.reg, name, labels...)
}

// writeSecretFile writes a 0600 file.
func writeSecretFile(t testing.TB, dir, name string, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	straittest.Must(t, err, "yaml")
	p := filepath.Join(dir, name)
	straittest.Must(t, os.WriteFile(p, b, 0o600), "write %s", name)
	return p
}

// usersFile: alice (every mechanism), bob (PLAIN, SCRAM-SHA-256), carol
// (PLAIN; no upstream mapping).
func usersFile(t *testing.T, dir string) string {
	t.Helper()
	bc := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		straittest.Must(t, err, "bcrypt")
		return string(h)
	}
	sc := func(mech, u, pw string) *sasl.ScramCred {
		c, err := sasl.NewScramCred(mech, u, pw, 4096)
		straittest.Must(t, err, "scram cred")
		return c
	}
	return writeSecretFile(t, dir, "users.yaml", map[string]any{"users": map[string]sasl.User{
		"alice": {Plain: bc(alicePw), ScramSHA256: sc("SCRAM-SHA-256", "alice", alicePw), ScramSHA512: sc("SCRAM-SHA-512", "alice", alicePw)},
		"bob":   {Plain: bc(bobPw), ScramSHA256: sc("SCRAM-SHA-256", "bob", bobPw)},
		"carol": {Plain: bc(carolPw)},
	}})
}

var ordersACL = kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "orders", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true}

// aclCluster: alice-up may use topic orders; bob-up exists but has no ACL.
func aclCluster(t *testing.T, extra ...kfake.Opt) []string {
	t.Helper()
	_, addrs := sasltest.Cluster(t, append([]kfake.Opt{kfake.EnableACLs(), kfake.SeedTopics(1, "orders"),
		kfake.User("SCRAM-SHA-256", "alice-up", aliceUpPw, ordersACL),
		kfake.User("PLAIN", "bob-up", bobUpPw)}, extra...)...)
	return addrs
}

func client(t *testing.T, addr string, m ksasl.Mechanism, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{kgo.SeedBrokers(addr), kgo.DisableIdempotentWrite(), kgo.RequestRetries(1),
		kgo.RecordRetries(2), kgo.RetryTimeout(5 * time.Second)}
	if m != nil {
		base = append(base, kgo.SASL(m))
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	straittest.Must(t, err, "client")
	t.Cleanup(cl.Close)
	return cl
}

func produce(cl *kgo.Client, value string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte(value)}).FirstErr()
}

// metadata sends one request, which needs a connection: SASL runs first.
func metadataReq(cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := cl.Request(ctx, kmsg.NewPtrMetadataRequest())
	return err
}

func consumeAll(t *testing.T, addr string, m ksasl.Mechanism, want int) []string {
	t.Helper()
	cl := client(t, addr, m, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": {0: kgo.NewOffset().AtStart()}}))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var got []string
	for len(got) < want {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), want, err)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

func isSaslFailed(err error) bool {
	return errors.Is(err, kerr.SaslAuthenticationFailed) || (err != nil && strings.Contains(err.Error(), "SASL_AUTHENTICATION_FAILED"))
}

// saslSwap starts the ACL cluster and a Strait terminating PLAIN and SCRAM
// (usersFile) that maps alice to alice-up (SCRAM-SHA-256, ACL on orders)
// and bob to bob-up (PLAIN, no ACL).
func saslSwap(t *testing.T) *strait {
	t.Helper()
	upstream := aclCluster(t)
	dir := t.TempDir()
	credsFile := writeSecretFile(t, dir, "upstream.yaml", map[string]any{"principals": map[string]any{
		"alice": map[string]string{"mechanism": "SCRAM-SHA-256", "username": "alice-up", "password": aliceUpPw},
		"bob":   map[string]string{"mechanism": "PLAIN", "username": "bob-up", "password": bobUpPw},
	}})
	return startStrait(t, upstream, authswap.Config{
		SASL:        &authswap.SASLConfig{Mechanisms: []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}, UsersFile: usersFile(t, dir), SessionLifetime: config.Duration(time.Hour)},
		Credentials: &authswap.CredentialsConfig{File: credsFile},
	}, nil)
}

func TestSASLSwapEndToEnd(t *testing.T) {
	s := saslSwap(t)

	mechs := map[string]func(u, p string) ksasl.Mechanism{
		"PLAIN":         func(u, p string) ksasl.Mechanism { return plain.Auth{User: u, Pass: p}.AsMechanism() },
		"SCRAM-SHA-256": func(u, p string) ksasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha256Mechanism() },
		"SCRAM-SHA-512": func(u, p string) ksasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha512Mechanism() },
	}
	t.Run("alice through every mechanism is alice-up upstream", func(t *testing.T) {
		var sent []string
		for _, name := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
			v := "order from alice via " + name
			if err := produce(client(t, s.addr, mechs[name]("alice", alicePw)), v); err != nil {
				t.Fatalf("%s: produce as alice: %v", name, err)
			}
			sent = append(sent, v)
		}
		got := consumeAll(t, s.addr, mechs["SCRAM-SHA-512"]("alice", alicePw), len(sent))
		if strings.Join(got, "|") != strings.Join(sent, "|") {
			t.Fatalf("consumed %q, want %q", got, sent)
		}
		if n := s.counter(t, "strait_authswap_upstream_authentications_total", "mechanism", "SCRAM-SHA-256", "result", "success"); n < 4 {
			t.Errorf("%v upstream SCRAM-SHA-256 authentications, want one per upstream connection (>= 4)", n)
		}
	})
	t.Run("bob authenticates but bob-up has no ACL: the broker refuses", func(t *testing.T) {
		cl := client(t, s.addr, mechs["SCRAM-SHA-256"]("bob", bobPw))
		if err := metadataReq(cl); err != nil {
			t.Fatalf("bob's authentication through Strait: %v", err)
		}
		err := produce(cl, "order from bob")
		if !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Fatalf("produce as bob: %v, want TOPIC_AUTHORIZATION_FAILED from the broker", err)
		}
	})
	t.Run("wrong password: SASL_AUTHENTICATION_FAILED, others unaffected", func(t *testing.T) {
		good := client(t, s.addr, mechs["PLAIN"]("alice", alicePw))
		if err := produce(good, "before"); err != nil {
			t.Fatal(err)
		}
		for name, mk := range mechs {
			err := metadataReq(client(t, s.addr, mk("alice", wrongPw)))
			if !isSaslFailed(err) {
				t.Errorf("%s with a wrong password: %v, want SASL_AUTHENTICATION_FAILED", name, err)
			}
			if err != nil && (strings.Contains(err.Error(), wrongPw) || !strings.Contains(err.Error(), "Authentication failed")) {
				t.Errorf("%s: the client's error %q should say why, without the password", name, err)
			}
		}
		if err := produce(good, "after"); err != nil {
			t.Fatalf("an authenticated connection broke when others failed: %v", err)
		}
		if n := s.counter(t, "strait_authswap_authentications_total", "result", "failure", "reason", "bad_password"); n < 3 {
			t.Errorf("bad_password failures counted: %v, want >= 3", n)
		}
	})
	t.Run("unknown user and unsupported mechanism", func(t *testing.T) {
		if err := metadataReq(client(t, s.addr, mechs["PLAIN"]("mallory", alicePw))); !isSaslFailed(err) {
			t.Errorf("unknown user: %v", err)
		}
		if err := metadataReq(client(t, s.addr, mechs["SCRAM-SHA-512"]("bob", bobPw))); !isSaslFailed(err) {
			t.Errorf("bob has no SCRAM-SHA-512 credential: %v", err)
		}
	})
	t.Run("no upstream mapping: refused with SASL_AUTHENTICATION_FAILED", func(t *testing.T) {
		err := metadataReq(client(t, s.addr, mechs["PLAIN"]("carol", carolPw)))
		if !isSaslFailed(err) || !strings.Contains(err.Error(), "no upstream credentials") {
			t.Fatalf("carol: %v", err)
		}
		if n := s.counter(t, "strait_authswap_credential_lookups_total", "store", "file", "result", "no_mapping"); n < 1 {
			t.Errorf("no_mapping lookups: %v", n)
		}
	})
	t.Run("a request before authentication closes the connection", func(t *testing.T) {
		err := metadataReq(client(t, s.addr, nil))
		if err == nil {
			t.Fatal("an unauthenticated Metadata was answered")
		}
	})
	s.checkNoSecrets(t, alicePw, bobPw, carolPw, aliceUpPw, bobUpPw, wrongPw, sasltest.SuperPass)
}
