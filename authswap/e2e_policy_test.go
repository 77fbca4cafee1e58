package authswap_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/plugins"
	"github.com/strait-proxy/strait/topicid"
)

// The principal authswap proves is what policy decides on: alice and carol
// share one upstream identity (alice-up), but only alice's consumer gets
// the records, because the policy keys on the downstream principal.
func TestPrincipalReachesPolicy(t *testing.T) {
	upstream := aclCluster(t)
	dir := t.TempDir()
	users := usersFile(t, dir)
	creds := writeSecretFile(t, dir, "upstream.yaml", map[string]any{"principals": map[string]any{
		"alice": map[string]string{"username": "alice-up", "password": aliceUpPw},
		"carol": map[string]string{"username": "alice-up", "password": aliceUpPw},
	}})
	rego := filepath.Join(dir, "p.rego")
	straittest.Must(t, os.WriteFile(rego, []byte(`package strait

default decision := {"drop": true}

decision := {"default": "clear"} if input.principal.name == "alice"
`), 0o644), "rego")
	yml := `
upstream: {bootstrap: ["127.0.0.1:1"]}
listen: {bootstrap: "127.0.0.1:2", broker_port_base: 3}
interceptors:
  - name: authswap
    config:
      sasl: {mechanisms: [PLAIN], users_file: ` + users + `}
      credentials: {file: ` + creds + `}
      upstream: {mechanism: SCRAM-SHA-256}
  - name: policy
    config:
      policies: [` + rego + `]
`
	cfg, err := config.Parse([]byte(yml))
	straittest.Must(t, err, "config")
	s := startChain(t, upstream, func(log *slog.Logger, reg *prometheus.Registry) ([]*interceptor.Interceptor, *topicid.Names) {
		set, err := plugins.Build(cfg, log, reg)
		straittest.Must(t, err, "registry")
		t.Cleanup(func() { set.Close() })
		return set.List, set.Topics
	}, nil)
	if err := produce(client(t, s.addr, plain.Auth{User: "alice", Pass: alicePw}.AsMechanism()), "r1"); err != nil {
		t.Fatalf("produce as alice: %v", err)
	}
	if got := consumeAll(t, s.addr, plain.Auth{User: "alice", Pass: alicePw}.AsMechanism(), 1); len(got) != 1 || got[0] != "r1" {
		t.Fatalf("alice consumed %q", got)
	}
	// carol: same broker identity, another principal: the policy drops.
	if n := s.counter(t, "strait_policy_records_total", "result", "dropped"); n != 0 {
		t.Fatalf("dropped before carol read: %v", n)
	}
	carol := client(t, s.addr, plain.Auth{User: "carol", Pass: carolPw}.AsMechanism())
	if err := produce(carol, "r2"); err != nil {
		t.Fatalf("carol produces as alice-up: %v", err)
	}
	// Read as carol until the policy has seen both records.
	reader := client(t, s.addr, plain.Auth{User: "carol", Pass: carolPw}.AsMechanism(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": {0: kgo.NewOffset().AtStart()}}))
	var got []string
	deadline := time.Now().Add(20 * time.Second)
	for s.counter(t, "strait_policy_records_total", "result", "dropped") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the policy never saw carol's fetch of both records")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := reader.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != 0 {
		t.Fatalf("carol read %q through a policy that drops everything but alice's", got)
	}
	// The proxy's connection log line (written at close) names carol.
	reader.Close()
	carol.Close()
	for !strings.Contains(s.logs.String(), `"principal":"User:carol"`) {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("no connection log line names carol")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.checkNoSecrets(t, alicePw, carolPw, aliceUpPw, sasltest.SuperPass)
}
