package proxy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/straittest"
)

// TestUpstreamSASL: against a cluster with only SASL listeners, Strait's
// own client (broker list, topic ids) logs in with upstream.sasl, so Strait
// becomes ready; a client's own SASL exchange passes through to the broker.
func TestUpstreamSASL(t *testing.T) {
	c := straittest.Cluster(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "strait", "strait-secret"), kfake.SeedTopics(1, "s"))
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("strait-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := straittest.Start(t, c.ListenAddrs(), nil, func(c *config.Config) {
		c.Upstream.SASL = &config.UpstreamSASL{Mechanism: "SCRAM-SHA-256", Username: "strait", PasswordFile: pw}
	}) // Start waits for readiness: the login worked
	ctx := ctxT(t, 20*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("s"),
		kgo.SASL(scram.Auth{User: "strait", Pass: "strait-secret"}.AsSha256Mechanism()))
	straittest.Must(t, err, "client")
	defer cl.Close()
	straittest.Must(t, cl.ProduceSync(ctx, kgo.StringRecord("through")).FirstErr(), "produce with the client's own SASL")
	_, err = cl.Request(ctx, kmsg.NewPtrMetadataRequest())
	straittest.Must(t, err, "metadata")
}

func TestUpstreamSASLValidation(t *testing.T) {
	cfg := config.Default()
	cfg.Upstream.Bootstrap = []string{"127.0.0.1:9092"}
	cfg.Listen.Bootstrap, cfg.Listen.BrokerPortBase = "127.0.0.1:0", 1
	cfg.Upstream.SASL = &config.UpstreamSASL{Mechanism: "GSSAPI", PasswordFile: "/nope", PasswordEnv: "X"}
	err := cfg.Validate()
	for _, want := range []string{"upstream.sasl.mechanism", "upstream.sasl.username", "exactly one of password_file and password_env"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation error %v does not name %q", err, want)
		}
	}
}
