package interop

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/internal/testpki"
)

type policySetup struct {
	p      *proxy
	ca     *testpki.CA
	orders []string
	tail   string
}

// startPolicy runs the real binary with authswap (mTLS principals) and the
// policy in front of kfake, and writes usa and brazil orders to one
// partition, the last batch brazil only.
func startPolicy(t *testing.T) *policySetup {
	t.Helper()
	if directMode {
		t.Skip("STRAIT_INTEROP_DIRECT=1: this test checks Strait's policy itself")
	}
	need(t, "strait")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pol := write("policy.rego", `package strait
region := {"us-financial": "usa", "brazil": "brazil"}
default decision := {"drop": true}
decision := {"default": "clear"} if {
	input.principal.name == "full-pii"
} else := {"drop": true} if {
	input.value.country != region[input.principal.name]
} else := {"classifications": {"PII/Financial": "clear"}, "default": "redact"} if {
	region[input.principal.name]
}
`)
	cat := write("catalog.yaml", `classifications:
  PII/Personal: {action: redact}
  PII/Financial: {action: mask, keep_last: 4}
topics:
  - topics: [policy-kcat]
    fields: {$.name: [PII/Personal], $.country: [PII/Personal], $.account: [PII/Financial]}
`)
	cfg := write("strait.yaml", `interceptors:
  - name: authswap
    config:
      mtls: {required: true, principal_mapping_rules: 'RULE:^CN=([a-zA-Z0-9.@-]+).*$/$1/L,DEFAULT'}
  - name: policy
    config: {policies: [`+pol+`], catalog: `+cat+`}
`)
	ca := testpki.New(t)
	cert, key := ca.Leaf(t, "127.0.0.1")
	c := kfakeCluster(t, []string{"policy-kcat"})
	p := startStrait(t, straitConfig{Upstream: c.ListenAddrs(), NoDirect: true,
		Args: []string{"--config", cfg, "--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca.CertFile}})

	// Produce directly: usa and brazil orders in one partition, the last
	// batch brazil only.
	// gzip: every client here reads it (kafkajs has no snappy of its own),
	// and the policy rewrites compressed batches.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("policy-kcat"),
		kgo.ProducerBatchCompression(kgo.GzipCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	orders := []string{
		`{"name":"Joe","country":"usa","account":"678900000234","itemid":"A-1"}`,
		`{"name":"Ana","country":"brazil","account":"341100009876","itemid":"B-1"}`,
		`{"name":"Sam","country":"usa","account":"111100002222","itemid":"A-2"}`,
	}
	for _, v := range orders {
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("k"), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	tail := `{"name":"Rui","country":"brazil","account":"999900001111","itemid":"B-2"}`
	if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("k"), Value: []byte(tail)}, &kgo.Record{Key: []byte("k"), Value: []byte(tail)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return &policySetup{p: p, ca: ca, orders: orders, tail: tail}
}

// kcat (librdkafka) consumers with client certificates read through the
// policy interceptor of the real binary: each principal gets its view, and
// `kcat -e` reaches the end of the partition although the last batch is
// dropped whole for one of them (empty batches, compacted-topic shape).
func TestPolicyKcatViews(t *testing.T) {
	need(t, "kcat")
	s := startPolicy(t)
	p, ca, orders, tail := s.p, s.ca, s.orders, s.tail

	consume := func(cn string) []string {
		c, k := ca.Leaf(t, cn)
		args := append(append([]string(nil), p.KcatArgs...), "-X", "security.protocol=SSL", "-X", "ssl.ca.location="+ca.CertFile,
			"-X", "ssl.certificate.location="+c, "-X", "ssl.key.location="+k,
			"-C", "-t", "policy-kcat", "-o", "beginning", "-e", "-q", "-f", "%o %s\n")
		return lines(mustRun(t, defaultTimeout, "", nil, "kcat", args...).Stdout)
	}
	us := consume("us-financial")
	want := []string{
		`0 {"name":null,"country":null,"account":"678900000234","itemid":"A-1"}`,
		`2 {"name":null,"country":null,"account":"111100002222","itemid":"A-2"}`,
	}
	if strings.Join(us, "\n") != strings.Join(want, "\n") {
		t.Fatalf("us-financial via kcat:\n%s\nwant\n%s", strings.Join(us, "\n"), strings.Join(want, "\n"))
	}
	br := consume("brazil")
	if len(br) != 3 || !strings.HasPrefix(br[0], `1 {"name":null,"country":null,"account":"341100009876"`) {
		t.Fatalf("brazil via kcat: %q", br)
	}
	full := consume("full-pii")
	if len(full) != 5 || full[0] != "0 "+orders[0] || full[4] != "4 "+tail {
		t.Fatalf("full-pii via kcat: %q", full)
	}
	if none := consume("mallory"); len(none) != 0 {
		t.Fatalf("mallory via kcat: %q", none)
	}
	p.assertThrough(t, "Fetch")
}

// confluent-kafka-python in a consumer group over mTLS: us-financial's
// view; the end of the partition (5) is reached past the dropped brazil
// tail; the group commits what it consumed (3: librdkafka commits the last
// consumed offset + 1, and re-reads the empty batch after a restart).
func TestPolicyConfluentKafkaPython(t *testing.T) {
	need(t, "confluent_kafka")
	s := startPolicy(t)
	cert, key := s.ca.Leaf(t, "us-financial")
	r := mustRun(t, defaultTimeout, "", nil, pythonBin, filepath.Join(interopDir, "py", "confluent_policy.py"),
		s.p.Bootstrap, "policy-kcat", "py-us", s.ca.CertFile, cert, key)
	want := strings.Join([]string{
		`0 {"name":null,"country":null,"account":"678900000234","itemid":"A-1"}`,
		`2 {"name":null,"country":null,"account":"111100002222","itemid":"A-2"}`,
		"eof 5",
		"committed 3",
	}, "\n")
	if got := strings.Join(lines(r.Stdout), "\n"); got != want {
		t.Fatalf("confluent-kafka-python:\n%s\nwant\n%s\n%s", got, want, tail(r.Stderr, 2000))
	}
}

// kafkajs in a consumer group over mTLS through the policy: brazil's view
// (the usa orders dropped, its own with PII redacted).
func TestPolicyKafkaJS(t *testing.T) {
	need(t, "kafkajs")
	s := startPolicy(t)
	cert, key := s.ca.Leaf(t, "brazil")
	r := mustRun(t, defaultTimeout, "", nil, "node", filepath.Join(interopDir, "js", "policy_consume.js"),
		s.p.Bootstrap, "policy-kcat", "js-br", s.ca.CertFile, cert, key, `"B-2"`)
	got := lines(r.Stdout)
	if len(got) < 2 || got[0] != `1 {"name":null,"country":null,"account":"341100009876","itemid":"B-1"}` ||
		!strings.HasPrefix(got[1], `3 {"name":null,"country":null,"account":"999900001111","itemid":"B-2"}`) {
		t.Fatalf("kafkajs as brazil:\n%s\n%s", r.Stdout, tail(r.Stderr, 2000))
	}
	for _, l := range got {
		if strings.Contains(l, "usa") || strings.Contains(l, "Joe") {
			t.Fatalf("kafkajs as brazil saw %s", l)
		}
	}
}
