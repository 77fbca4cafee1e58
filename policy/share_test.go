package policy_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/policy"
	"github.com/strait-proxy/strait/proxy"
	"github.com/strait-proxy/strait/topicid"
)

// stripGaps removes GAP acknowledgements from a client's ShareFetch and
// ShareAcknowledge requests: a client that, unlike franz-go, says nothing
// about acquired offsets it got no record for.
func stripGaps() *interceptor.Interceptor {
	keep := func(types []int8, first, last int64) [][3]int64 { // runs of non-gap offsets: first, last, index
		var out [][3]int64
		for o := first; o <= last; o++ {
			t := types[0]
			if len(types) > 1 {
				t = types[o-first]
			}
			if t == 0 {
				continue
			}
			if n := len(out); n > 0 && out[n-1][1] == o-1 {
				out[n-1][1] = o
			} else {
				out = append(out, [3]int64{o, o, o - first})
			}
		}
		return out
	}
	slice := func(types []int8, first int64, r [3]int64) []int8 {
		if len(types) == 1 {
			return types
		}
		return types[r[2] : r[2]+r[1]-r[0]+1]
	}
	return &interceptor.Interceptor{Name: "strip-gaps", Hooks: []interceptor.Hook{
		{Key: 78, MaxVersion: interceptor.Latest, Request: func(_ context.Context, x *interceptor.Exchange) error {
			req := x.Request.(*kmsg.ShareFetchRequest)
			for ti := range req.Topics {
				for pi := range req.Topics[ti].Partitions {
					pt := &req.Topics[ti].Partitions[pi]
					var out []kmsg.ShareFetchRequestTopicPartitionAcknowledgementBatch
					for _, b := range pt.AcknowledgementBatches {
						for _, r := range keep(b.AcknowledgeTypes, b.FirstOffset, b.LastOffset) {
							out = append(out, kmsg.ShareFetchRequestTopicPartitionAcknowledgementBatch{FirstOffset: r[0], LastOffset: r[1], AcknowledgeTypes: slice(b.AcknowledgeTypes, b.FirstOffset, r)})
						}
					}
					pt.AcknowledgementBatches = out
				}
			}
			x.MarkModified()
			return nil
		}},
		{Key: 79, MaxVersion: interceptor.Latest, Request: func(_ context.Context, x *interceptor.Exchange) error {
			req := x.Request.(*kmsg.ShareAcknowledgeRequest)
			for ti := range req.Topics {
				for pi := range req.Topics[ti].Partitions {
					pt := &req.Topics[ti].Partitions[pi]
					var out []kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch
					for _, b := range pt.AcknowledgementBatches {
						for _, r := range keep(b.AcknowledgeTypes, b.FirstOffset, b.LastOffset) {
							out = append(out, kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch{FirstOffset: r[0], LastOffset: r[1], AcknowledgeTypes: slice(b.AcknowledgeTypes, b.FirstOffset, r)})
						}
					}
					pt.AcknowledgementBatches = out
				}
			}
			x.MarkModified()
			return nil
		}},
	}}
}

// acquisitions sees every ShareFetch response as the client gets it and
// counts, per offset, the highest delivery count the broker acquired it
// with.
type acquisitions struct {
	mu    sync.Mutex
	count map[int64]int16
}

func (a *acquisitions) interceptor() *interceptor.Interceptor {
	return &interceptor.Interceptor{Name: "acquisitions", Hooks: []interceptor.Hook{{Key: 78, MaxVersion: interceptor.Latest,
		Response: func(_ context.Context, x *interceptor.Exchange) error {
			a.mu.Lock()
			defer a.mu.Unlock()
			for _, t := range x.Response.(*kmsg.ShareFetchResponse).Topics {
				for _, pt := range t.Partitions {
					for _, r := range pt.AcquiredRecords {
						for o := r.FirstOffset; o <= r.LastOffset; o++ {
							a.count[o] = max(a.count[o], r.DeliveryCount)
						}
					}
				}
			}
			return nil
		}}}}
}

// brokerAcks records, at the broker, every acknowledgement batch of every
// ShareFetch and ShareAcknowledge, and checks each partition's batches
// are sorted and do not overlap (the broker refuses them otherwise).
type brokerAcks struct {
	mu       sync.Mutex
	types    map[int64][]int8 // offset -> every type it was acknowledged with
	unsorted string
}

func (b *brokerAcks) add(first, last int64, types []int8, prevEnd *int64) {
	if first <= *prevEnd && b.unsorted == "" {
		b.unsorted = fmt.Sprintf("batch %d-%d after one ending at %d", first, last, *prevEnd)
	}
	*prevEnd = last
	for o := first; o <= last; o++ {
		t := types[0]
		if len(types) > 1 {
			t = types[o-first]
		}
		b.types[o] = append(b.types[o], t)
	}
}

func (b *brokerAcks) watch(c *kfake.Cluster) {
	c.ControlKey(78, func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, t := range r.(*kmsg.ShareFetchRequest).Topics {
			for _, pt := range t.Partitions {
				end := int64(-1)
				for _, a := range pt.AcknowledgementBatches {
					b.add(a.FirstOffset, a.LastOffset, a.AcknowledgeTypes, &end)
				}
			}
		}
		return nil, nil, false
	})
	c.ControlKey(79, func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, t := range r.(*kmsg.ShareAcknowledgeRequest).Topics {
			for _, pt := range t.Partitions {
				end := int64(-1)
				for _, a := range pt.AcknowledgementBatches {
					b.add(a.FirstOffset, a.LastOffset, a.AcknowledgeTypes, &end)
				}
			}
		}
		return nil, nil, false
	})
}

// TestShareGroupDroppedAcknowledged: records the policy drops from a
// ShareFetch response are acknowledged (ACCEPT) by Strait in the
// consumer's next request, merged with the consumer's own
// acknowledgements, and are not redelivered after the acquisition lock
// (1 s here) expires: with a client that says nothing about them
// (strip-gaps) and with franz-go, which acknowledges them as GAP (made
// ACCEPT).
func TestShareGroupDroppedAcknowledged(t *testing.T) {
	for _, tc := range []struct {
		name  string
		strip bool
	}{{"silent-client", true}, {"franz-go-gaps", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cluster := straittest.Cluster(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"), kfake.BrokerConfigs(map[string]string{
				"group.share.record.lock.duration.ms": "1000",
				"share.record.lock.sweep.interval.ms": "100",
			}))
			acks := &brokerAcks{types: map[int64][]int8{}}
			acks.watch(cluster)
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
			reg := prometheus.NewRegistry()
			pol, err := policy.New(policy.Config{Policies: []string{"testdata/demo/policy.rego"}, Catalog: "testdata/demo/catalog.yaml"}, policy.Env{Topics: topics, Metrics: reg})
			straittest.Must(t, err, "policy")
			acq := &acquisitions{count: map[int64]int16{}}
			chain := []*interceptor.Interceptor{acq.interceptor(), principalFromClientID()}
			if tc.strip {
				chain = append(chain, stripGaps())
			}
			chain = append(chain, pol)
			s := straittest.StartOpts(t, cluster.ListenAddrs(), proxy.Options{Interceptors: chain, Topics: topics}, nil)

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

			c, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.ClientID("us-financial"), kgo.ConsumeTopics("orders"),
				kgo.ShareGroup("sharers"), kgo.FetchMaxWait(200*time.Millisecond))
			straittest.Must(t, err, "share consumer")
			defer c.Close()
			seen := 0
			// Poll past several lock durations: a dropped record that was
			// not acknowledged would be acquired again (delivery count 2).
			deadline := time.Now().Add(4 * time.Second)
			for seen < 5 || time.Now().Before(deadline) {
				pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
				fs := c.PollFetches(pctx)
				pcancel()
				fs.EachError(func(_ string, _ int32, err error) {
					if ctx.Err() == nil && !strings.Contains(err.Error(), "context deadline exceeded") {
						t.Fatalf("share fetch: %v", err)
					}
				})
				fs.EachRecord(func(r *kgo.Record) {
					if !strings.Contains(string(r.Value), `"account":"6789`) || strings.Contains(string(r.Value), "brazil") {
						t.Fatalf("share consumer saw %s", r.Value)
					}
					seen++
				})
				if ctx.Err() != nil {
					t.Fatalf("after %d records: %v", seen, ctx.Err())
				}
			}
			if seen != 5 {
				t.Fatalf("consumer saw %d records, want the 5 US orders once each", seen)
			}
			acq.mu.Lock()
			defer acq.mu.Unlock()
			acks.mu.Lock()
			defer acks.mu.Unlock()
			if acks.unsorted != "" {
				t.Fatalf("acknowledgement batches out of order: %s", acks.unsorted)
			}
			for o := int64(1); o < 10; o += 2 { // the brazil orders
				if acq.count[o] != 1 {
					t.Errorf("dropped offset %d acquired with delivery count %d, want 1 (acknowledged, not redelivered)", o, acq.count[o])
				}
				if got := acks.types[o]; len(got) != 1 || got[0] != 1 {
					t.Errorf("dropped offset %d acknowledged with types %v at the broker, want [1] (ACCEPT, once)", o, got)
				}
			}
			if n := straittest.Counter(t, reg, "strait_policy_share_ack_errors_total"); n != 0 {
				t.Errorf("%v acknowledgement errors", n)
			}
			if n := straittest.Counter(t, reg, "strait_policy_share_acknowledged_total"); n != 5 {
				t.Errorf("%v records acknowledged by Strait, want 5", n)
			}
		})
	}
}
