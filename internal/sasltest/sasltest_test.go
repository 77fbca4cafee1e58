package sasltest_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/proxy"
)

func metadata(t *testing.T, addr string, opts ...kgo.Opt) error {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.RequestRetries(0)}, opts...)...)
	straittest.Must(t, err, "client")
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = cl.Request(ctx, kmsg.NewPtrMetadataRequest())
	return err
}

// The cluster is SASL-only (nothing in front of it authenticates anyone), so
// every test that reaches it through Strait depends on upstream.sasl.
func TestClusterIsSASLOnly(t *testing.T) {
	_, addrs := sasltest.Cluster(t)
	if len(addrs) != 3 {
		t.Fatalf("listen addresses %v, want 3", addrs)
	}
	if err := metadata(t, addrs[0]); err == nil {
		t.Fatal("an unauthenticated Metadata was answered")
	}
	if err := metadata(t, addrs[0], kgo.SASL(plain.Auth{User: sasltest.SuperUser, Pass: sasltest.SuperPass}.AsMechanism())); err != nil {
		t.Fatalf("Metadata as the superuser: %v", err)
	}
}

// Strait in front of it becomes ready with UpstreamSASL, and not without.
func TestUpstreamSASL(t *testing.T) {
	_, addrs := sasltest.Cluster(t)
	u := sasltest.UpstreamSASL(t)
	fi, err := os.Stat(u.PasswordFile)
	straittest.Must(t, err, "password file")
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("password file mode %04o, want 0600", fi.Mode().Perm())
	}
	y, err := yaml.Marshal(map[string]any{"upstream": map[string]any{"bootstrap": addrs, "sasl": u}})
	straittest.Must(t, err, "yaml")
	parsed, err := config.Parse(y)
	straittest.Must(t, err, "the block as strait.yaml:\n%s", y)
	if parsed.Upstream.SASL == nil || *parsed.Upstream.SASL != *u {
		t.Fatalf("strait.yaml %s parsed to %+v, want %+v", y, parsed.Upstream.SASL, u)
	}

	straittest.Start(t, addrs, nil, func(c *config.Config) { c.Upstream.SASL = u }) // waits for readiness

	base := straittest.FreePortBase(t, 11)
	cfg := config.Default()
	cfg.Upstream.Bootstrap = addrs
	cfg.Listen.Bootstrap = "127.0.0.1:" + strconv.Itoa(base+10)
	cfg.Listen.BrokerPortBase = base
	cfg.Upstream.MetadataRefresh = config.Duration(200 * time.Millisecond)
	srv, err := proxy.New(cfg, proxy.Options{})
	straittest.Must(t, err, "proxy.New")
	straittest.Must(t, srv.Listen(), "listen")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(2 * time.Second)
	if srv.Ready() {
		t.Fatal("Strait without upstream.sasl became ready in front of a SASL-only cluster")
	}
}
