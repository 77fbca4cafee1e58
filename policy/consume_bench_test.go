package policy_test

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/policy"
	"github.com/strait-proxy/strait/proxy"
	"github.com/strait-proxy/strait/topicid"
)

// syntheticOrders is one batch of 128 JSON orders that kfake serves for
// every fetch (SyntheticFetch), so the broker keeps out of the measurement.
func syntheticOrders() []byte {
	var body []byte
	for i := 0; i < 128; i++ {
		r := kmsg.Record{OffsetDelta: int32(i), Value: order("usa", i)}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		body = r.AppendTo(body)
	}
	b := kmsg.RecordBatch{Magic: 2, LastOffsetDelta: 127, FirstTimestamp: 1, MaxTimestamp: 1,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: 128, Records: body}
	b.Length = int32(49 + len(body))
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// BenchmarkConsume: a franz-go consumer reading 128k JSON orders directly
// from kfake, through an in-process Strait without interceptors, and
// through one whose policy redacts four PII fields of every record
// (us-financial, demo policy) or delivers them as is (full-pii). records/s per run; the ratio to direct is the cost of
// the policy on the consume path (client, proxy and broker share the
// machine's cores).
func BenchmarkConsume(b *testing.B) {
	cluster := straittest.Cluster(b, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"),
		kfake.SyntheticFetch(kfake.SyntheticBatch{Batch: syntheticOrders()}))
	topics := topicid.New()
	pol, err := policy.New(policy.Config{Policies: []string{"testdata/demo/policy.rego"}, Catalog: "testdata/demo/catalog.yaml"}, policy.Env{Topics: topics})
	straittest.Must(b, err, "policy")
	s := straittest.StartOpts(b, cluster.ListenAddrs(), proxy.Options{
		Interceptors: []*interceptor.Interceptor{principalFromClientID(), pol}, Topics: topics}, nil)
	plain := straittest.StartOpts(b, cluster.ListenAddrs(), proxy.Options{}, nil)
	const n = 128 * 1000
	for _, c := range []struct{ name, seed, who string }{
		{"direct", cluster.ListenAddrs()[0], "direct"},
		{"strait-no-policy", plain.Bootstrap, "anyone"},
		{"policy-redact", s.Bootstrap, "us-financial"},
		{"policy-deliver", s.Bootstrap, "full-pii"},
	} {
		b.Run(c.name, func(b *testing.B) {
			start := time.Now()
			for i := 0; i < b.N; i++ {
				consumeN(b, c.seed, c.who, n)
			}
			b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "records/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func consumeN(b *testing.B, seed, who string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seed), kgo.ClientID(who), kgo.ConsumeTopics("orders"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	straittest.Must(b, err, "client")
	defer cl.Close()
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			b.Fatalf("%s after %d: %v", who, got, err)
		}
		got += fs.NumRecords()
	}
	if got == 0 {
		b.Fatal("nothing consumed")
	}
}
