package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kcatMetadata is the subset of `kcat -L -J` we check.
type kcatMetadata struct {
	OriginatingBroker struct {
		ID   int32  `json:"id"`
		Name string `json:"name"`
	} `json:"originating_broker"`
	Brokers []struct {
		ID   int32  `json:"id"`
		Name string `json:"name"`
	} `json:"brokers"`
	Topics []struct {
		Topic      string `json:"topic"`
		Partitions []struct {
			Partition int32 `json:"partition"`
			Leader    int32 `json:"leader"`
		} `json:"partitions"`
	} `json:"topics"`
}

func kcatList(t testing.TB, env []string, args ...string) (kcatMetadata, string) {
	t.Helper()
	r := mustRun(t, defaultTimeout, "", env, "kcat", append(append([]string(nil), args...), "-L", "-J", "-m", "15")...)
	return parseKcatMetadata(t, r.Stdout)
}

func parseKcatMetadata(t testing.TB, out string) (kcatMetadata, string) {
	t.Helper()
	var md kcatMetadata
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &md); err != nil {
		t.Fatalf("kcat -L -J output is not JSON: %v\n%s", err, out)
	}
	return md, out
}

// assertOnlyStraitAddrs checks that metadata names exactly the three brokers
// at the addresses Strait serves them on, and that no upstream address leaks
// anywhere in the raw output.
func assertOnlyStraitAddrs(t testing.TB, md kcatMetadata, raw string, want func(id int32) string, upstream []string) {
	t.Helper()
	if len(md.Brokers) != 3 {
		t.Errorf("metadata lists %d brokers, want 3: %s", len(md.Brokers), raw)
	}
	for _, b := range md.Brokers {
		if w := want(b.ID); b.Name != w {
			t.Errorf("broker %d advertised as %q, want %q", b.ID, b.Name, w)
		}
	}
	for _, u := range upstream {
		_, port, _ := net.SplitHostPort(u)
		if strings.Contains(raw, u) || strings.Contains(raw, ":"+port+"\"") || strings.Contains(raw, ":"+port+"/") {
			t.Errorf("upstream address %s leaks through Strait's metadata: %s", u, raw)
		}
	}
}

func TestKcatMetadataShowsOnlyStrait(t *testing.T) {
	need(t, "kcat")
	c := kfakeCluster(t, []string{"kcat-meta"})
	p := startStrait(t, straitConfig{Upstream: c.ListenAddrs(), NoDirect: true})
	md, raw := kcatList(t, nil, "-b", p.Bootstrap)
	assertOnlyStraitAddrs(t, md, raw, func(id int32) string { return p.BrokerAddr(int(id)) }, c.ListenAddrs())
	found := false
	for _, tp := range md.Topics {
		if tp.Topic == "kcat-meta" {
			found = len(tp.Partitions) == 3
		}
	}
	if !found {
		t.Errorf("topic kcat-meta with 3 partitions not in metadata: %s", raw)
	}
	// Each per-broker port answers metadata by itself too.
	for n := 0; n < 3; n++ {
		md, raw := kcatList(t, nil, "-b", p.BrokerAddr(n))
		assertOnlyStraitAddrs(t, md, raw, func(id int32) string { return p.BrokerAddr(int(id)) }, c.ListenAddrs())
	}
}

// codecs: kcat -z name → Kafka's compression attribute.
var codecs = []struct {
	name string
	attr uint8
}{{"none", 0}, {"gzip", 1}, {"snappy", 2}, {"lz4", 3}, {"zstd", 4}}

func TestKcatProduceConsumeCodecs(t *testing.T) {
	need(t, "kcat")
	var topics []string
	for _, cc := range codecs {
		topics = append(topics, "kcat-"+cc.name)
	}
	c := kfakeCluster(t, topics)
	p := startStrait(t, straitConfig{Upstream: c.ListenAddrs()})

	for _, cc := range codecs {
		t.Run(cc.name, func(t *testing.T) {
			topic := "kcat-" + cc.name
			const n = 150
			recs := records("kcat-"+cc.name, n)
			var in strings.Builder
			var want []string
			for i, r := range recs {
				fmt.Fprintf(&in, "kc%d:%s\n", i, r)
				want = append(want, fmt.Sprintf("kc%d=%s", i, r))
			}
			mustRun(t, defaultTimeout, in.String(), nil, "kcat", "-b", p.Bootstrap, "-P", "-t", topic,
				"-z", cc.name, "-K", ":", "-X", "linger.ms=20", "-X", "acks=all")

			// librdkafka 2.0.2 decides which codecs a broker supports from
			// ApiVersions ranges: kfake (and so Strait) advertise Produce from
			// v3 only, so librdkafka compresses with zstd alone and sends
			// gzip/snappy/lz4 uncompressed ("Broker does not support
			// compression type"). franz-go compresses with every codec, so
			// its batches carry each codec through Strait in both directions
			// and kcat (librdkafka) decompresses them.
			cl, err := kgo.NewClient(kgo.SeedBrokers(p.Bootstrap), kgo.DefaultProduceTopic(topic),
				kgo.ProducerBatchCompression(codecOf(cc.attr)), kgo.ProducerLinger(20*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			for i, r := range recs {
				cl.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprintf("fg%d", i)), Value: []byte(r)}, func(_ *kgo.Record, err error) {
					if err != nil {
						t.Errorf("franz-go produce through Strait: %v", err)
					}
				})
				want = append(want, fmt.Sprintf("fg%d=%s", i, r))
			}
			if err := cl.Flush(ctx); err != nil {
				t.Fatalf("flush: %v", err)
			}
			cancel()
			cl.Close()

			r := mustRun(t, defaultTimeout, "", nil, "kcat", "-b", p.Bootstrap, "-C", "-t", topic,
				"-o", "beginning", "-e", "-q", "-f", `%k=%s\n`)
			sameSet(t, "kcat "+cc.name+" round trip", want, lines(r.Stdout))
			p.assertThrough(t, "Produce", "Fetch", "ListOffsets")

			// What reached the broker: franz-go's batches with the codec it
			// chose (Strait passes them through or recompresses with the same
			// codec), kcat's with zstd or none.
			byKey := directCompression(t, c.ListenAddrs(), topic, 2*n)
			for k, a := range byKey {
				switch {
				case strings.HasPrefix(k, "fg") && a != cc.attr:
					t.Errorf("franz-go record %s stored with compression %d, want %d", k, a, cc.attr)
				case strings.HasPrefix(k, "kc") && (cc.name == "zstd" || cc.name == "none") && a != cc.attr:
					t.Errorf("kcat record %s stored with compression %d, want %d", k, a, cc.attr)
				}
			}
		})
	}
}

func codecOf(attr uint8) kgo.CompressionCodec {
	switch attr {
	case 1:
		return kgo.GzipCompression()
	case 2:
		return kgo.SnappyCompression()
	case 3:
		return kgo.Lz4Compression()
	case 4:
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

// directCompression reads n records of a topic straight from the upstream
// cluster and returns each record key's batch compression codec.
func directCompression(t testing.TB, brokers []string, topic string, n int, opts ...kgo.Opt) map[string]uint8 {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seen := map[string]uint8{}
	for len(seen) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s directly from the cluster: got %d of %d records", topic, len(seen), n)
		}
		fs.EachRecord(func(r *kgo.Record) { seen[string(r.Key)] = r.Attrs.CompressionType() })
	}
	return seen
}

func TestKcatConsumerGroup(t *testing.T) {
	need(t, "kcat")
	const topic, group, n = "kcat-group", "kcat-interop-group", 60
	c := kfakeCluster(t, []string{topic})
	p := startStrait(t, straitConfig{Upstream: c.ListenAddrs()})

	recs := records("grp", n)
	mustRun(t, defaultTimeout, strings.Join(recs, "\n")+"\n", nil, "kcat", "-b", p.Bootstrap, "-P", "-t", topic)
	r := mustRun(t, defaultTimeout, "", nil, "kcat", "-b", p.Bootstrap, "-G", group,
		"-X", "auto.offset.reset=earliest", "-c", fmt.Sprint(n), "-q", "-f", `%s\n`, topic)
	sameSet(t, "kcat -G", recs, lines(r.Stdout))
	p.assertThrough(t, "Produce", "Fetch", "FindCoordinator", "JoinGroup", "SyncGroup", "OffsetCommit")

	// The group committed its offsets through Strait (FindCoordinator,
	// OffsetCommit against the coordinator's Strait port).
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch committed offsets through Strait: %v", err)
	}
	var total int64
	offs.Each(func(o kadm.OffsetResponse) { total += o.At })
	if total != n {
		t.Errorf("group %s committed offsets summing to %d, want %d", group, total, n)
	}
	dg, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatalf("describe group: %v", err)
	}
	if g := dg[group]; g.Err != nil || g.ProtocolType != "consumer" {
		t.Errorf("describe group %s through Strait: %+v", group, g)
	}
}
