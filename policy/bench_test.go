package policy

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// benchRecords is one fetch partition of n JSON orders, countries cycling
// through four values (or all "usa").
func benchRecords(n int, countries ...string) []byte {
	if len(countries) == 0 {
		countries = []string{"usa", "brazil", "france", "japan"}
	}
	recs := make([]kmsg.Record, n)
	for i := range recs {
		recs[i] = rec(fmt.Sprintf("k%d", i), fmt.Sprintf(`{"name":"Person %d","address":"%d Main St","country":%q,"ssn_id":"123-45-%04d","account":"6789%08d","Order_time":"2024-03-01T10:00:00Z","itemid":"I-%d"}`,
			i, i, countries[i%len(countries)], i%10000, i, i))
	}
	return batch(0, -1, false, recs...)
}

// runFetch runs the Fetch response hook over the same partition b.N
// times and reports records/s.
func runFetch(b *testing.B, cfg Config, principal string, n int, countries ...string) {
	p, err := NewPolicy(cfg, Env{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ic := p.Interceptor()
	in := benchRecords(n, countries...)
	conn := &interceptor.Conn{ID: 1, Listener: "bootstrap", NodeID: -1, RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
	conn.SetClientID("bench")
	conn.SetPrincipal(interceptor.Principal{Name: principal, Mechanism: "mtls"})
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 12
	tp := kmsg.NewFetchResponseTopic()
	tp.Topic = "orders"
	tp.Partitions = []kmsg.FetchResponseTopicPartition{kmsg.NewFetchResponseTopicPartition()}
	resp.Topics = []kmsg.FetchResponseTopic{tp}
	x := &interceptor.Exchange{Conn: conn, Key: 1, Version: 12}
	ctx := context.Background()
	hook := ic.Hooks[0].Response
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp.Topics[0].Partitions[0].RecordBatches = in
		x.Response = resp
		if err := hook(ctx, x); err != nil {
			b.Fatal(err)
		}
		x.Done()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(0, "ns/op")
}

func benchPolicy(b *testing.B, src string) Config {
	dir := b.TempDir()
	return Config{Policies: []string{writeFile(b, dir, "p.rego", src)}, Catalog: "testdata/demo/catalog.yaml"}
}

// BenchmarkPerRecordValueField: the demo policy reads input.value.country
// per record; decisions are cached by (principal, topic, country), so each
// record costs finding one field, a cache lookup, and the redaction.
func BenchmarkPerRecordValueField(b *testing.B) {
	runFetch(b, demoConfig(b), "us-financial", 1000)
}

// BenchmarkPerRecordValueFieldRedactAll: the same policy on records that
// are all delivered with four fields redacted (what BenchmarkConsume's
// policy-redact case does per record).
func BenchmarkPerRecordValueFieldRedactAll(b *testing.B) {
	runFetch(b, demoConfig(b), "us-financial", 1000, "usa")
}

// BenchmarkPerRecordValueFieldFullPII: the same policy for a principal it
// decides on the principal alone: the probe finds that the records need
// not be read, and they are delivered as they are.
func BenchmarkPerRecordValueFieldFullPII(b *testing.B) {
	runFetch(b, demoConfig(b), "full-pii", 1000)
}

// BenchmarkPerRecordValueFieldNoRedaction: same, for a principal who sees
// records in clear: the cost of the decision alone.
func BenchmarkPerRecordValueFieldNoRedaction(b *testing.B) {
	runFetch(b, benchPolicy(b, `package strait
decision := {"default": "clear"} if input.value.country == "usa"
else := {"drop": true}
`), "anyone", 1000)
}

// BenchmarkPerRecordUncached: a policy that reads the offset can never
// be cached: one OPA evaluation per record (the floor OPA sets).
func BenchmarkPerRecordUncached(b *testing.B) {
	runFetch(b, benchPolicy(b, `package strait
decision := {"default": "clear"} if input.offset >= 0
`), "anyone", 200)
}

// BenchmarkPrincipalTopicRedact: a policy on principal and topic only,
// evaluated once per (principal, topic) and cached; every record still has
// its PII fields rewritten.
func BenchmarkPrincipalTopicRedact(b *testing.B) {
	runFetch(b, benchPolicy(b, `package strait
decision := {"classifications": {"PII/Financial": "clear"}, "default": "redact"} if {
	input.principal.name == "alice"
	input.topic == "orders"
}
`), "alice", 1000)
}

// BenchmarkPrincipalTopicDeliver: principal and topic only, and the
// decision delivers as is: the records are not even decoded.
func BenchmarkPrincipalTopicDeliver(b *testing.B) {
	runFetch(b, benchPolicy(b, `package strait
decision := {"default": "clear"} if {
	input.principal.name == "alice"
	input.topic == "orders"
}
`), "alice", 1000)
}

// BenchmarkPrincipalTopicDrop: principal and topic only, drop everything:
// the batch is rewritten empty.
func BenchmarkPrincipalTopicDrop(b *testing.B) {
	runFetch(b, benchPolicy(b, `package strait
default decision := {"drop": true}
`), "bob", 1000)
}

// BenchmarkPerRecordValueFieldNoCache: the demo policy with per_record:
// true, so every record is evaluated by OPA (what a value field with a
// distinct value per record costs).
func BenchmarkPerRecordValueFieldNoCache(b *testing.B) {
	cfg := demoConfig(b)
	yes := true
	cfg.PerRecord = &yes
	runFetch(b, cfg, "us-financial", 200)
}
