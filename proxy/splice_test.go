package proxy_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/straittest"
)

// TestLargeFramesSpliced: produce requests of ~1 MiB and fetch responses of
// several hundred KiB that no interceptor decodes go socket to socket; every
// byte still arrives, in order.
func TestLargeFramesSpliced(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "big"))
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	ctx := ctxT(t, 60*time.Second)
	p, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("big"),
		kgo.ProducerLinger(50*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20), kgo.ProducerBatchCompression(kgo.NoCompression()))
	straittest.Must(t, err, "producer")
	defer p.Close()
	const n = 3000
	value := func(i int) []byte { return fmt.Appendf(bytes.Repeat([]byte{'x'}, 900), "-%06d", i) }
	for i := range n {
		p.Produce(ctx, &kgo.Record{Value: value(i)}, nil)
	}
	straittest.Must(t, p.Flush(ctx), "flush")
	if straittest.Counter(t, s.Registry, "strait_spliced_frames_total", "direction", "request") == 0 {
		t.Fatalf("no produce request was spliced (%v produce requests, %v bytes)",
			straittest.Counter(t, s.Registry, "strait_requests_total", "api", "Produce"),
			straittest.Counter(t, s.Registry, "strait_bytes_total", "api", "Produce", "direction", "request"))
	}

	// Fetch below v16 is hooked by nothing: its large responses splice too.
	old := kversion.V3_0_0() // Fetch v12
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.ConsumeTopics("big"), kgo.MaxVersions(old),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(4<<20), kgo.FetchMaxPartitionBytes(4<<20))
	straittest.Must(t, err, "consumer")
	defer cl.Close()
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		straittest.Must(t, fs.Err0(), "poll")
		fs.EachRecord(func(r *kgo.Record) {
			if !bytes.Equal(r.Value, value(got)) {
				t.Fatalf("record %d: got %q...", got, r.Value[len(r.Value)-8:])
			}
			got++
		})
	}
	if straittest.Counter(t, s.Registry, "strait_spliced_frames_total", "direction", "response") == 0 {
		t.Fatal("no fetch response was spliced")
	}
}

// TestFetchVersionCap: with limits.max_versions {Fetch: 15} Strait
// advertises Fetch v15 at most, so a default franz-go consumer's large fetch
// responses (no KIP-951 hints to rewrite) go socket to socket too.
func TestFetchVersionCap(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "capped"))
	s := straittest.Start(t, c.ListenAddrs(), nil, func(cfg *config.Config) {
		cfg.Limits.MaxVersions = map[string]int16{"Fetch": 15}
	})
	ctx := ctxT(t, 60*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("capped"), kgo.ConsumeTopics("capped"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.ProducerBatchCompression(kgo.NoCompression()))
	straittest.Must(t, err, "client")
	defer cl.Close()
	r, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	straittest.Must(t, err, "api versions")
	for _, k := range r.ApiKeys {
		if k.ApiKey == 1 && k.MaxVersion != 15 {
			t.Fatalf("Fetch advertised up to v%d, want 15", k.MaxVersion)
		}
	}
	const n = 1000
	for i := range n {
		cl.Produce(ctx, &kgo.Record{Value: bytes.Repeat([]byte{byte('a' + i%26)}, 1000)}, nil)
	}
	straittest.Must(t, cl.Flush(ctx), "flush")
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		straittest.Must(t, fs.Err0(), "poll")
		got += fs.NumRecords()
	}
	if straittest.Counter(t, s.Registry, "strait_spliced_frames_total", "direction", "response") == 0 {
		t.Fatal("no fetch response was spliced with Fetch capped at v15")
	}
}
