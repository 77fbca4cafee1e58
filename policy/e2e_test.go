package policy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/plugins"
	"github.com/strait-proxy/strait/policy"
	"github.com/strait-proxy/strait/proxy"
	"github.com/strait-proxy/strait/topicid"
)

// principalFromClientID stands in for authentication (authswap): the
// connection's principal is its client id, set before any Fetch is
// decided.
func principalFromClientID() *interceptor.Interceptor {
	set := func(_ context.Context, x *interceptor.Exchange) error {
		if x.Conn.Principal().Anonymous() && x.Conn.ClientID() != "" {
			x.Conn.SetPrincipal(interceptor.Principal{Name: x.Conn.ClientID(), Mechanism: "test"})
		}
		return nil
	}
	return &interceptor.Interceptor{Name: "test-principal", Hooks: []interceptor.Hook{
		{Key: 0, MaxVersion: interceptor.Latest, Request: set}, {Key: 1, MaxVersion: interceptor.Latest, Request: set}, {Key: 78, MaxVersion: interceptor.Latest, Request: set},
	}}
}

func order(country string, i int) []byte {
	return fmt.Appendf(nil, `{"name":"Person %d","address":"%d Main St","country":%q,"ssn_id":"123-45-%04d","account":"6789%08d","Order_time":"2024-03-01T10:%02d:00Z","itemid":"I-%d"}`,
		i, i, country, i, i, i%60, i)
}

type view struct {
	offsets []int64
	values  []string
}

// consumeAll reads topic as clientID in group until it has seen the record
// whose value contains until, then commits.
func consumeAll(t *testing.T, ctx context.Context, seed, clientID, group, topic, until string, opts ...kgo.Opt) (view, *kgo.Client) {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seed), kgo.ClientID(clientID), kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit()}, opts...)...)
	straittest.Must(t, err, "client")
	t.Cleanup(cl.Close)
	var v view
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("%s: consume after %d records: %v", clientID, len(v.offsets), err)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			v.offsets = append(v.offsets, r.Offset)
			v.values = append(v.values, string(r.Value))
			if strings.Contains(string(r.Value), until) {
				done = true
			}
		})
		if done {
			straittest.Must(t, cl.CommitUncommittedOffsets(ctx), "%s: commit", clientID)
			return v, cl
		}
	}
}

// TestEndToEnd: kfake, Strait with the policy interceptor, franz-go
// consumer groups as three principals. Each sees exactly its view; offsets
// advance past dropped records (a visible sentinel after them arrives, the
// group commits the high watermark); an aborted transaction stays
// invisible to read_committed consumers while its neighbours' records are
// rewritten.
func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cluster := straittest.Cluster(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	direct := cluster.ListenAddrs()[0]

	// 1. plain records: usa, brazil interleaved, in two produce batches.
	p, err := kgo.NewClient(kgo.SeedBrokers(direct), kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	straittest.Must(t, err, "producer")
	defer p.Close()
	var plain []*kgo.Record
	for i := 0; i < 10; i++ {
		c := "usa"
		if i%2 == 1 {
			c = "brazil"
		}
		plain = append(plain, &kgo.Record{Topic: "orders", Key: fmt.Appendf(nil, "k%d", i), Value: order(c, i)})
	}
	straittest.Must(t, p.ProduceSync(ctx, plain[:5]...).FirstErr(), "produce")
	straittest.Must(t, p.ProduceSync(ctx, plain[5:]...).FirstErr(), "produce")

	// 2. an aborted transaction of usa records, then a committed one.
	txp, err := kgo.NewClient(kgo.SeedBrokers(direct), kgo.TransactionalID("policy-e2e"))
	straittest.Must(t, err, "txn producer")
	defer txp.Close()
	for _, commit := range []bool{false, true} {
		straittest.Must(t, txp.BeginTransaction(), "begin")
		tag := "aborted"
		if commit {
			tag = "committed"
		}
		for i := 0; i < 3; i++ {
			v := strings.Replace(string(order("usa", 100+i)), `"itemid":"`, `"itemid":"`+tag+"-", 1)
			straittest.Must(t, txp.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte(v)}).FirstErr(), "txn produce")
		}
		straittest.Must(t, txp.EndTransaction(ctx, kgo.TransactionEndTry(commit)), "end txn")
	}
	// 3. a batch of brazil records only (dropped whole for us-financial),
	// then the sentinel everyone may see.
	var tail []*kgo.Record
	for i := 0; i < 4; i++ {
		tail = append(tail, &kgo.Record{Topic: "orders", Value: order("brazil", 200+i)})
	}
	straittest.Must(t, p.ProduceSync(ctx, tail...).FirstErr(), "produce")
	straittest.Must(t, p.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte(`{"country":"usa","itemid":"SENTINEL"}`)}).FirstErr(), "produce sentinel")
	sentinel := `"itemid":"SENTINEL"`

	topics := topicid.New()
	pol, err := policy.New(policy.Config{Policies: []string{"testdata/demo/policy.rego"}, Catalog: "testdata/demo/catalog.yaml"},
		policy.Env{Topics: topics})
	straittest.Must(t, err, "policy")
	s := straittest.StartOpts(t, cluster.ListenAddrs(), proxy.Options{
		Interceptors: []*interceptor.Interceptor{principalFromClientID(), pol}, Topics: topics}, nil)

	// full-pii: everything committed, in clear.
	full, _ := consumeAll(t, ctx, s.Bootstrap, "full-pii", "g-full", "orders", sentinel, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if len(full.values) != 10+3+4+1 {
		t.Fatalf("full-pii saw %d records: %v", len(full.values), full.offsets)
	}
	for i, v := range full.values[:10] {
		if v != string(plain[i].Value) {
			t.Fatalf("full-pii record %d: %s", i, v)
		}
	}
	for _, v := range full.values {
		if strings.Contains(v, "aborted-") {
			t.Fatalf("read_committed consumer saw an aborted record: %s", v)
		}
	}

	// us-financial: usa records only, PII redacted; the aborted txn's
	// records stay invisible; the brazil tail batch is dropped whole and
	// the consumer still reaches the sentinel.
	us, uscl := consumeAll(t, ctx, s.Bootstrap, "us-financial", "g-us", "orders", sentinel, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	var committed int
	for i, v := range us.values {
		var m map[string]any
		straittest.Must(t, json.Unmarshal([]byte(v), &m), "record %d is not JSON: %s", i, v)
		if m["country"] != nil || m["name"] != nil || m["ssn_id"] != nil || m["address"] != nil {
			t.Fatalf("us-financial saw PII: %s", v)
		}
		item, _ := m["itemid"].(string)
		if strings.HasPrefix(item, "aborted-") {
			t.Fatalf("aborted record delivered: %s", v)
		}
		if strings.HasPrefix(item, "committed-") {
			committed++
		}
	}
	if len(us.values) != 5+3+1 || committed != 3 {
		t.Fatalf("us-financial saw %d records (%d committed txn): %v", len(us.values), committed, us.values)
	}
	for i, off := range us.offsets[:5] {
		if off != int64(2*i) || !strings.Contains(us.values[i], fmt.Sprintf(`"account":"6789%08d"`, 2*i)) {
			t.Fatalf("us-financial record %d at offset %d: %s", i, off, us.values[i])
		}
	}
	// The group committed the high watermark: the sentinel is the last
	// record, so the committed offset is the end offset.
	adm := kadm.NewClient(uscl)
	ends, err := adm.ListEndOffsets(ctx, "orders")
	straittest.Must(t, err, "end offsets")
	end, _ := ends.Lookup("orders", 0)
	offs, err := adm.FetchOffsets(ctx, "g-us")
	straittest.Must(t, err, "fetch offsets")
	got, _ := offs.Lookup("orders", 0)
	if got.At != end.Offset || end.Offset != us.offsets[len(us.offsets)-1]+1 {
		t.Fatalf("committed %d, end offset %d, last delivered %d", got.At, end.Offset, us.offsets[len(us.offsets)-1])
	}
	uscl.Close()
	// A new member of the group resumes at the end: nothing redelivered.
	straittest.Must(t, p.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte(`{"country":"usa","itemid":"AFTER"}`)}).FirstErr(), "produce")
	again, _ := consumeAll(t, ctx, s.Bootstrap, "us-financial", "g-us", "orders", `"AFTER"`)
	if len(again.values) != 1 {
		t.Fatalf("resumed group saw %v", again.values)
	}

	// brazil: only the brazil records; the usa sentinel is not its own.
	br, _ := consumeAll(t, ctx, s.Bootstrap, "brazil", "g-br", "orders", `"itemid":"I-203"`, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if len(br.values) != 5+4 {
		t.Fatalf("brazil saw %d: %v", len(br.values), br.values)
	}
	for _, v := range br.values {
		if strings.Contains(v, "usa") || strings.Contains(v, "Person") && !strings.Contains(v, `"name":null`) {
			t.Fatalf("brazil saw %s", v)
		}
	}
}

// TestRegistryOrder: the registry builds the policy interceptor by name
// and refuses a chain listing policy after decrypt.
func TestRegistryOrder(t *testing.T) {
	cfg, err := config.Parse([]byte(`
upstream: {bootstrap: ["127.0.0.1:9092"]}
interceptors:
  - name: policy
    config: {policies: [testdata/demo/policy.rego], catalog: testdata/demo/catalog.yaml, on_error: redact}
`))
	straittest.Must(t, err, "parse")
	set, err := plugins.Build(cfg, slogDiscard(), nil)
	straittest.Must(t, err, "build")
	if len(set.List) != 1 || set.List[0].Name != "policy" {
		t.Fatalf("built %v", set.List)
	}
	set.Close()

	cfg, err = config.Parse([]byte(`
upstream: {bootstrap: ["127.0.0.1:9092"]}
interceptors:
  - name: decrypt
    config: {kms: {local: {keyring: /nonexistent}}, rules: [{topics: [x], key_id: k}]}
  - name: policy
    config: {policies: [testdata/demo/policy.rego], colour: red}
`))
	straittest.Must(t, err, "parse")
	_, err = plugins.Build(cfg, slogDiscard(), nil)
	if err == nil || !strings.Contains(err.Error(), "interceptors[1].name: policy must be listed before decrypt") ||
		!strings.Contains(err.Error(), "interceptors[1].config.colour") {
		t.Fatalf("order/unknown key not refused: %v", err)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestShareGroup: a KIP-932 share-group consumer (ShareFetch, topics by id
// only, resolved through the metadata map) gets the same view as a
// classic consumer: its country's orders, PII redacted; nothing else.
func TestShareGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cluster := straittest.Cluster(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	p, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()[0]), kgo.DefaultProduceTopic("orders"))
	straittest.Must(t, err, "producer")
	defer p.Close()
	for i := 0; i < 10; i++ {
		c := "usa"
		if i%2 == 1 {
			c = "brazil"
		}
		straittest.Must(t, p.ProduceSync(ctx, &kgo.Record{Value: order(c, i)}).FirstErr(), "produce")
	}
	topics := topicid.New()
	pol, err := policy.New(policy.Config{Policies: []string{"testdata/demo/policy.rego"}, Catalog: "testdata/demo/catalog.yaml"}, policy.Env{Topics: topics})
	straittest.Must(t, err, "policy")
	s := straittest.StartOpts(t, cluster.ListenAddrs(), proxy.Options{
		Interceptors: []*interceptor.Interceptor{principalFromClientID(), pol}, Topics: topics}, nil)

	admin, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap))
	straittest.Must(t, err, "admin")
	defer admin.Close()
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeGroupConfig, "sharers"
	cfg := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	cfg.Name, cfg.Value = "share.auto.offset.reset", kmsg.StringPtr("earliest")
	res.Configs = append(res.Configs, cfg)
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, admin)
	straittest.Must(t, err, "alter group config")
	straittest.Must(t, kerr.ErrorForCode(resp.Resources[0].ErrorCode), "alter group config")

	c, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.ClientID("us-financial"), kgo.ConsumeTopics("orders"), kgo.ShareGroup("sharers"))
	straittest.Must(t, err, "share consumer")
	defer c.Close()
	seen := map[string]bool{}
	for len(seen) < 5 {
		fs := c.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("share fetch after %d: %v", len(seen), err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			v := string(r.Value)
			if !strings.Contains(v, `"name":null`) || !strings.Contains(v, `"account":"6789`) {
				t.Fatalf("share consumer saw %s", v)
			}
			seen[v] = true
		})
	}
	for v := range seen {
		var m map[string]any
		straittest.Must(t, json.Unmarshal([]byte(v), &m), "json")
		if item := m["itemid"].(string); item != "I-0" && item != "I-2" && item != "I-4" && item != "I-6" && item != "I-8" {
			t.Fatalf("share consumer saw a brazil order: %s", v)
		}
	}
	if straittest.Counter(t, s.Registry, "strait_requests_total", "api", "ShareFetch") == 0 {
		t.Fatal("no ShareFetch went through Strait")
	}
}

// TestProduce: with produce: true, a partition holding a record the policy
// refuses gets POLICY_VIOLATION, the other partitions of the same request
// are written; a producer the policy does not know writes nothing.
func TestProduce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cluster := straittest.Cluster(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "orders"))
	dir := t.TempDir()
	pol := dir + "/p.rego"
	straittest.Must(t, os.WriteFile(pol, []byte(`package strait
default decision := {"drop": true}
decision := {} if {
	input.operation == "produce"
	input.principal.name == "order-service"
	input.value.country
}
decision := {"default": "clear"} if input.operation == "fetch"
`), 0o644), "policy")
	topics := topicid.New()
	auditFile := dir + "/audit.jsonl"
	ic, err := policy.New(policy.Config{Policies: []string{pol}, Produce: true, Audit: &policy.Audit{Output: auditFile}}, policy.Env{Topics: topics})
	straittest.Must(t, err, "policy")
	s := straittest.StartOpts(t, cluster.ListenAddrs(), proxy.Options{
		Interceptors: []*interceptor.Interceptor{principalFromClientID(), ic}, Topics: topics}, nil)
	producer := func(who string) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.ClientID(who), kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.DisableIdempotentWrite(), kgo.RecordRetries(1))
		straittest.Must(t, err, "producer")
		t.Cleanup(cl.Close)
		return cl
	}
	svc := producer("order-service")
	res := svc.ProduceSync(ctx,
		&kgo.Record{Topic: "orders", Partition: 0, Value: []byte(`{"country":"usa","itemid":"ok-1"}`)},
		&kgo.Record{Topic: "orders", Partition: 1, Value: []byte(`{"itemid":"no-country"}`)},
	)
	for _, r := range res {
		switch r.Record.Partition {
		case 0:
			straittest.Must(t, r.Err, "allowed partition")
		case 1:
			if !errors.Is(r.Err, kerr.PolicyViolation) {
				t.Fatalf("refused partition: %v, want POLICY_VIOLATION", r.Err)
			}
		}
	}
	if err := producer("mallory").ProduceSync(ctx, &kgo.Record{Topic: "orders", Partition: 0, Value: []byte(`{"country":"usa","itemid":"evil"}`)}).FirstErr(); !errors.Is(err, kerr.PolicyViolation) {
		t.Fatalf("mallory: %v, want POLICY_VIOLATION", err)
	}
	// What the cluster holds: only the allowed record.
	direct, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()[0]))
	straittest.Must(t, err, "client")
	defer direct.Close()
	ends, err := kadm.NewClient(direct).ListEndOffsets(ctx, "orders")
	straittest.Must(t, err, "end offsets")
	e0, _ := ends.Lookup("orders", 0)
	e1, _ := ends.Lookup("orders", 1)
	if e0.Offset != 1 || e1.Offset != 0 {
		t.Fatalf("end offsets %d, %d: want 1, 0 (only the allowed record written)", e0.Offset, e1.Offset)
	}
	v, _ := consumeAll(t, ctx, cluster.ListenAddrs()[0], "reader", "g-produce", "orders", "ok-1")
	if len(v.values) != 1 || !strings.Contains(v.values[0], "ok-1") {
		t.Fatalf("stored: %v", v.values)
	}
	// One audit line per produce partition decided, refusals marked.
	audit, err := os.ReadFile(auditFile)
	straittest.Must(t, err, "audit")
	if !strings.Contains(string(audit), `"operation":"produce","principal":"User:mallory"`) ||
		strings.Count(string(audit), `"refused":true`) != 2 || strings.Contains(string(audit), "no-country") {
		t.Fatalf("audit:\n%s", audit)
	}
}
