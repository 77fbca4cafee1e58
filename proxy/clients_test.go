package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/internal/straittest"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// consumeN reads n records of topic through a fresh franz-go consumer.
func consumeN(t *testing.T, ctx context.Context, bootstrap, topic string, n int, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(bootstrap), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	straittest.Must(t, err, "consumer")
	defer cl.Close()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("poll after %d/%d records: %v", len(out), n, err)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func TestIdempotentAndTransactionalProduce(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(3, "idem", "txn"))
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	ctx := ctxT(t, 60*time.Second)

	// Idempotent (franz-go's default) with many in-flight batches.
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("idem"))
	straittest.Must(t, err, "client")
	defer cl.Close()
	const n = 500
	for i := range n {
		cl.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprint(i % 7)), Value: []byte(fmt.Sprint(i))}, nil)
	}
	straittest.Must(t, cl.Flush(ctx), "flush")
	recs := consumeN(t, ctx, s.Bootstrap, "idem", n)
	// Per key, values arrive in the order produced (ordering survives).
	last := map[string]int{}
	for _, r := range recs {
		var v int
		fmt.Sscan(string(r.Value), &v)
		if p, ok := last[string(r.Key)]; ok && v <= p {
			t.Fatalf("key %s: %d after %d", r.Key, v, p)
		}
		last[string(r.Key)] = v
	}

	// Transactions: a committed and an aborted one; read_committed sees
	// only the first.
	tx, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("txn"), kgo.TransactionalID("strait-tx"))
	straittest.Must(t, err, "txn client")
	defer tx.Close()
	for _, commit := range []bool{true, false} {
		straittest.Must(t, tx.BeginTransaction(), "begin")
		for i := range 10 {
			tx.Produce(ctx, kgo.StringRecord(fmt.Sprintf("%v-%d", commit, i)), nil)
		}
		straittest.Must(t, tx.Flush(ctx), "flush")
		straittest.Must(t, tx.EndTransaction(ctx, kgo.TransactionEndTry(commit)), "end")
	}
	got := consumeN(t, ctx, s.Bootstrap, "txn", 10, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	for _, r := range got {
		if string(r.Value[:4]) != "true" {
			t.Fatalf("read_committed saw aborted record %q", r.Value)
		}
	}
}

func TestConsumerGroups(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(4, "g"))
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	ctx := ctxT(t, 60*time.Second)
	p, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("g"))
	straittest.Must(t, err, "producer")
	defer p.Close()
	const n = 200
	for i := range n {
		p.Produce(ctx, kgo.StringRecord(fmt.Sprint(i)), nil)
	}
	straittest.Must(t, p.Flush(ctx), "flush")

	for _, proto := range []struct {
		name string
		opts []kgo.Opt
	}{
		{"classic", []kgo.Opt{kgo.ConsumerGroup("classic")}},
		{"kip848", []kgo.Opt{kgo.ConsumerGroup("next-gen"), kgo.ServerSideBalancer(), kgo.Balancers(kgo.RangeBalancer())}},
	} {
		t.Run(proto.name, func(t *testing.T) {
			// Two members share the partitions; together they see every record once.
			var mu sync.Mutex
			seen := map[string]int{}
			var wg sync.WaitGroup
			for range 2 {
				cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(s.Bootstrap), kgo.ConsumeTopics("g"),
					kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, proto.opts...)...)
				straittest.Must(t, err, "member")
				defer cl.Close()
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						mu.Lock()
						done := len(seen) >= n
						mu.Unlock()
						if done || ctx.Err() != nil {
							return
						}
						pctx, cancel := context.WithTimeout(ctx, time.Second)
						fs := cl.PollFetches(pctx)
						cancel()
						mu.Lock()
						fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++ })
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if len(seen) != n {
				t.Fatalf("group saw %d distinct records, want %d", len(seen), n)
			}
			if proto.name == "kip848" && straittest.Counter(t, s.Registry, "strait_requests_total", "api", "ConsumerGroupHeartbeat") == 0 {
				t.Fatal("the KIP-848 protocol was not used (no ConsumerGroupHeartbeat went through Strait)")
			}
		})
	}
}

func TestAdminThroughStrait(t *testing.T) {
	c := straittest.Cluster(t)
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	ctx := ctxT(t, 30*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap))
	straittest.Must(t, err, "client")
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, 2, 1, nil, "created")
	straittest.Must(t, err, "create")
	straittest.Must(t, resp.Error(), "create topic")
	r, err := cl.Request(ctx, kmsg.NewPtrDescribeClusterRequest()) // rewritten too
	straittest.Must(t, err, "describe cluster")
	for _, b := range r.(*kmsg.DescribeClusterResponse).Brokers {
		if int(b.Port) != s.PortBase+int(b.NodeID) {
			t.Fatalf("DescribeCluster leaked %s:%d", b.Host, b.Port)
		}
	}
	// FindCoordinator (v4+ batched) for a group: the coordinator is Strait's.
	fc := adm.FindGroupCoordinators(ctx, "some-group")
	for _, co := range fc {
		straittest.Must(t, co.Err, "coordinator")
		if int(co.Port) != s.PortBase+int(co.NodeID) {
			t.Fatalf("FindCoordinator leaked %s:%d", co.Host, co.Port)
		}
	}
}

func TestSaramaAndKafkaGo(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "sarama", "kafkago"))
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	ctx := ctxT(t, 60*time.Second)

	t.Run("sarama", func(t *testing.T) {
		cfg := sarama.NewConfig()
		cfg.Version = sarama.V3_6_0_0
		cfg.Producer.Return.Successes = true
		cfg.Producer.Idempotent = true
		cfg.Producer.RequiredAcks = sarama.WaitForAll
		cfg.Net.MaxOpenRequests = 1
		cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
		prod, err := sarama.NewSyncProducer([]string{s.Bootstrap}, cfg)
		straittest.Must(t, err, "sarama producer")
		defer prod.Close()
		for i := range 20 {
			_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "sarama", Value: sarama.StringEncoder(fmt.Sprint(i)),
				Headers: []sarama.RecordHeader{{Key: []byte("h"), Value: []byte("v")}}})
			straittest.Must(t, err, "send")
		}
		cons, err := sarama.NewConsumer([]string{s.Bootstrap}, cfg)
		straittest.Must(t, err, "sarama consumer")
		defer cons.Close()
		pc, err := cons.ConsumePartition("sarama", 0, sarama.OffsetOldest)
		straittest.Must(t, err, "consume partition")
		defer pc.Close()
		for i := range 20 {
			select {
			case m := <-pc.Messages():
				if string(m.Value) != fmt.Sprint(i) || len(m.Headers) != 1 || string(m.Headers[0].Value) != "v" {
					t.Fatalf("record %d: %q headers %v", i, m.Value, m.Headers)
				}
			case <-ctx.Done():
				t.Fatal("timeout")
			}
		}
		// Sarama's cluster admin sees only Strait.
		adm, err := sarama.NewClusterAdmin([]string{s.Bootstrap}, cfg)
		straittest.Must(t, err, "admin")
		defer adm.Close()
		brokers, _, err := adm.DescribeCluster()
		straittest.Must(t, err, "describe")
		for _, b := range brokers {
			if want := fmt.Sprintf("127.0.0.1:%d", s.PortBase+int(b.ID())); b.Addr() != want {
				t.Fatalf("sarama saw broker %s, want %s", b.Addr(), want)
			}
		}
	})

	t.Run("kafka-go", func(t *testing.T) {
		w := &kafkago.Writer{Addr: kafkago.TCP(s.Bootstrap), Topic: "kafkago", RequiredAcks: kafkago.RequireAll, BatchTimeout: 10 * time.Millisecond}
		defer w.Close()
		var msgs []kafkago.Message
		for i := range 20 {
			msgs = append(msgs, kafkago.Message{Value: []byte(fmt.Sprint(i))})
		}
		straittest.Must(t, w.WriteMessages(ctx, msgs...), "write")
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{s.Bootstrap}, Topic: "kafkago", GroupID: "kg", MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond, StartOffset: kafkago.FirstOffset})
		defer r.Close()
		for i := range 20 {
			m, err := r.ReadMessage(ctx)
			straittest.Must(t, err, "read %d", i)
			if string(m.Value) != fmt.Sprint(i) {
				t.Fatalf("record %d: %q", i, m.Value)
			}
		}
	})
}

// TestTopologyChanges adds a broker and moves leaders while clients run:
// Strait opens the new broker's listener without restart and clients follow.
func TestTopologyChanges(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(3, "moving"))
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	ctx := ctxT(t, 60*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("moving"), kgo.MetadataMinAge(100*time.Millisecond), kgo.MetadataMaxAge(250*time.Millisecond))
	straittest.Must(t, err, "client")
	defer cl.Close()
	produce := func(tag string, n int) {
		for i := range n {
			straittest.Must(t, cl.ProduceSync(ctx, kgo.StringRecord(fmt.Sprintf("%s-%d", tag, i))).FirstErr(), "produce %s", tag)
		}
	}
	produce("before", 30)

	node, _, err := c.AddNode(-1, 0)
	straittest.Must(t, err, "add node")
	straittest.Must(t, c.MoveTopicPartition("moving", 0, node), "move partition")
	produce("after-move", 30)

	// The new node got its own listener at base+id, and the client talks to it.
	adm := kadm.NewClient(cl)
	var found bool
	for deadline := time.Now().Add(10 * time.Second); !found && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		md, err := adm.BrokerMetadata(ctx)
		straittest.Must(t, err, "metadata")
		for _, b := range md.Brokers {
			if b.NodeID == node && int(b.Port) == s.PortBase+int(node) {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("new node %d not advertised at port %d", node, s.PortBase+int(node))
	}
	c.ShufflePartitionLeaders()
	produce("after-shuffle", 30)
	recs := consumeN(t, ctx, s.Bootstrap, "moving", 90)
	if len(recs) != 90 {
		t.Fatalf("got %d records", len(recs))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("timeout")
	}
}
