package proxy_test

import (
	"context"
	"errors"

	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
)

// splitter is an interceptor that sends every partition of a Produce after
// the first in a Produce request of its own (Exchange.Split) and merges the
// responses by concatenating their topics.
func splitter(splits *atomic.Int32) *interceptor.Interceptor {
	return &interceptor.Interceptor{
		Name: "test-split",
		Hooks: []interceptor.Hook{{Key: int16(kmsg.Produce), MinVersion: 3, MaxVersion: interceptor.Latest, Request: func(_ context.Context, x *interceptor.Exchange) error {
			req := x.Request.(*kmsg.ProduceRequest)
			var more []kmsg.Request
			for ti := range req.Topics {
				t := &req.Topics[ti]
				first := 0
				if ti == 0 {
					first = 1
				}
				for _, p := range t.Partitions[first:] {
					r := kmsg.NewPtrProduceRequest()
					r.TransactionID, r.Acks, r.TimeoutMillis = req.TransactionID, req.Acks, req.TimeoutMillis
					nt := *t
					nt.Partitions = []kmsg.ProduceRequestTopicPartition{p}
					r.Topics = []kmsg.ProduceRequestTopic{nt}
					more = append(more, r)
				}
				t.Partitions = t.Partitions[:first]
			}
			req.Topics = req.Topics[:1]
			if len(more) == 0 {
				return nil
			}
			splits.Add(1)
			x.MarkModified()
			x.Split(more, func(resps []kmsg.Response) (kmsg.Response, error) {
				if len(resps) != 1+len(more) {
					return nil, fmt.Errorf("%d responses for %d requests", len(resps), 1+len(more))
				}
				out := resps[0].(*kmsg.ProduceResponse)
				for _, r := range resps[1:] {
					out.Topics = append(out.Topics, r.(*kmsg.ProduceResponse).Topics...)
				}
				return out, nil
			})
			return nil
		}}},
	}
}

// TestSplitRequest: a request hook that splits a Produce into one request per
// partition gets every part to the broker, in order on one connection, and
// the client one response covering every partition; with acks=0 every part
// is still sent.
func TestSplitRequest(t *testing.T) {
	for _, acks := range []kgo.Acks{kgo.AllISRAcks(), kgo.NoAck()} {
		t.Run(fmt.Sprint(acks), func(t *testing.T) {
			c := straittest.Cluster(t, kfake.NumBrokers(1), kfake.SeedTopics(4, "s"))
			var splits atomic.Int32
			s := straittest.Start(t, c.ListenAddrs(), []*interceptor.Interceptor{splitter(&splits)}, nil)
			ctx := ctxT(t, 30*time.Second)
			opts := []kgo.Opt{kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("s"),
				kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(50 * time.Millisecond), kgo.RequiredAcks(acks)}
			if acks == kgo.NoAck() {
				opts = append(opts, kgo.DisableIdempotentWrite())
			}
			cl, err := kgo.NewClient(opts...)
			straittest.Must(t, err, "client")
			defer cl.Close()
			const rounds, parts = 20, 4
			for round := range rounds {
				var recs []*kgo.Record
				for p := range int32(parts) {
					recs = append(recs, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "r%d-p%d", round, p)})
				}
				res := cl.ProduceSync(ctx, recs...)
				straittest.Must(t, res.FirstErr(), "produce round %d", round)
				if acks != kgo.NoAck() {
					for _, r := range res {
						if r.Record.Offset != int64(round) {
							t.Fatalf("round %d partition %d: offset %d in the merged response", round, r.Record.Partition, r.Record.Offset)
						}
					}
				}
			}
			if splits.Load() == 0 {
				t.Fatal("no request was split: the test did not test splitting")
			}
			// Read back from kfake directly: each partition holds its
			// records once, in order.
			direct, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("s"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			straittest.Must(t, err, "direct client")
			defer direct.Close()
			seen := map[int32][]string{}
			for n := 0; n < rounds*parts; {
				fs := direct.PollFetches(ctx)
				if err := ctx.Err(); err != nil {
					t.Fatalf("read %d of %d records: %v", n, rounds*parts, err)
				}
				fs.EachRecord(func(r *kgo.Record) {
					seen[r.Partition] = append(seen[r.Partition], string(r.Value))
					n++
				})
			}
			for p := range int32(parts) {
				for round, v := range seen[p] {
					if want := fmt.Sprintf("r%d-p%d", round, p); v != want {
						t.Fatalf("partition %d offset %d holds %q, want %q", p, round, v, want)
					}
				}
				if len(seen[p]) != rounds {
					t.Fatalf("partition %d holds %d records, want %d", p, len(seen[p]), rounds)
				}
			}
		})
	}
}

// TestHookErrorReleasesBudgetOnce: a request hook that fails after the
// exchange took the frame's budget closes the connection, and the budget
// goes back once (the reader used to give it back a second time, which the
// semaphore answers with a panic).
func TestHookErrorReleasesBudgetOnce(t *testing.T) {
	c := straittest.Cluster(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "e"))
	ic := &interceptor.Interceptor{
		Name: "test-fail",
		Hooks: []interceptor.Hook{{Key: int16(kmsg.Produce), MaxVersion: interceptor.Latest, Request: func(context.Context, *interceptor.Exchange) error {
			return errors.New("refused by test")
		}}},
	}
	s := straittest.Start(t, c.ListenAddrs(), []*interceptor.Interceptor{ic}, nil)
	ctx := ctxT(t, 20*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.RequestRetries(0))
	straittest.Must(t, err, "client")
	defer cl.Close()
	for range 3 {
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 1000
		tp := kmsg.NewProduceRequestTopic()
		tp.Topic = "e"
		tp.Partitions = append(tp.Partitions, kmsg.NewProduceRequestTopicPartition())
		req.Topics = append(req.Topics, tp)
		if _, err := cl.Broker(0).Request(ctx, req); err == nil {
			t.Fatal("a produce whose hook failed was answered")
		}
	}
	if n := straittest.Counter(t, s.Registry, "strait_panics_total"); n != 0 {
		t.Fatalf("%v panics: the frame budget was released twice", n)
	}
}
