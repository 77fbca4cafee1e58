package policy_test

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"syscall"
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
// (us-financial, demo policy) or delivers them as is (full-pii). records/s
// per run; the ratio to direct is the cost of the policy on the consume
// path (client, proxy and broker share the machine's cores). The
// interleaved sub-benchmark reports those ratios (x-NAME: throughput ÷
// direct) measured side by side.
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
	cases := []struct{ name, seed, who string }{
		{"direct", cluster.ListenAddrs()[0], "direct"},
		{"strait-no-policy", plain.Bootstrap, "anyone"},
		{"policy-redact", s.Bootstrap, "us-financial"},
		{"policy-deliver", s.Bootstrap, "full-pii"},
	}
	// interleaved: each iteration consumes n records by every path in
	// turn, so the ratios to direct are measured side by side (a machine
	// shared with other work drifts between the sequential sub-benchmarks).
	b.Run("interleaved", func(b *testing.B) {
		spent := make([]time.Duration, len(cases))
		for i := 0; i < b.N; i++ {
			for j, c := range cases {
				start := time.Now()
				consumeN(b, c.seed, c.who, n)
				spent[j] += time.Since(start)
			}
		}
		for j, c := range cases[1:] {
			b.ReportMetric(spent[0].Seconds()/spent[j+1].Seconds(), "x-"+c.name)
		}
		b.ReportMetric(0, "ns/op")
	})
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			start, cpu0 := time.Now(), cpuTime()
			for i := 0; i < b.N; i++ {
				consumeN(b, c.seed, c.who, n)
			}
			b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "records/s")
			// CPU of the whole process (client, proxy, broker) per record:
			// steadier than records/s on a machine shared with other work.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*n), "cpu-ns/record")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
