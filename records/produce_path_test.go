package records

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestProducePath rewrites Produce requests in flight, as the proxy does:
// a kfake control function runs Rewrite (strict) on every partition of every
// ProduceRequest a real kgo producer sends, before kfake validates the
// batch (CRC, length, idempotent sequence, transaction state) and appends
// it. The producer must see no error, and a read_committed kgo consumer
// must read the rewritten values (kgo checks CRCs and decompresses).
// Every codec, non-idempotent, idempotent and transactional producers.
func TestProducePath(t *testing.T) {
	var topics []string
	for _, c := range testCodecs {
		for _, m := range testModes {
			topics = append(topics, "pp-"+c.name+"-"+m)
		}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics...))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()

	var rewritten, batches atomic.Int64
	rw := &Rewriter{Strict: true}
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		for ti := range req.Topics {
			for pi := range req.Topics[ti].Partitions {
				p := &req.Topics[ti].Partitions[pi]
				batches.Add(1)
				out, changed, err := rw.Rewrite(nil, p.Records, testFnAll)
				if err != nil {
					t.Errorf("rewrite in produce path: %v", err)
					continue
				}
				if changed {
					rewritten.Add(1)
					p.Records = out
				}
			}
		}
		return nil, nil, false // kfake handles the (rewritten) request
	})

	for _, cc := range testCodecs {
		for _, mode := range testModes {
			t.Run(cc.name+"/"+mode, func(t *testing.T) {
				topic := "pp-" + cc.name + "-" + mode
				produceRounds(t, addrs, topic, mode, cc.cc)
				cons, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
					kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
				if err != nil {
					t.Fatal(err)
				}
				defer cons.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				got := 0
				for got < total {
					fs := cons.PollFetches(ctx)
					for _, e := range fs.Errors() {
						t.Fatalf("consume: %v", e.Err)
					}
					fs.EachRecord(func(r *kgo.Record) {
						idx := -1
						for _, h := range r.Headers {
							if h.Key == "idx" {
								fmt.Sscanf(string(h.Value), "%d", &idx)
							}
						}
						want := testValue(idx)
						if idx%2 == 0 && want != nil {
							want = append(want, '!')
						}
						if !bytes.Equal(r.Value, want) || (r.Value == nil) != (want == nil) {
							t.Errorf("record %d: value %q, want %q", idx, r.Value, want)
						}
						if idx != got {
							t.Errorf("record %d at position %d", idx, got)
						}
						if (mode == "txn") != r.Attrs.IsTransactional() {
							t.Errorf("record %d: transactional=%v", idx, r.Attrs.IsTransactional())
						}
						got++
					})
				}
			})
		}
	}
	t.Logf("%d partition batches seen, %d rewritten", batches.Load(), rewritten.Load())
	if rewritten.Load() == 0 {
		t.Fatal("nothing rewritten")
	}
}

// testFnAll appends "!" to the value of every even record, whatever the
// round; null values stay null but get a header.
func testFnAll(r *Record) (bool, error) {
	v, _ := r.Header("idx")
	var i int
	fmt.Sscanf(string(v), "%d", &i)
	if i%2 != 0 {
		return false, nil
	}
	if r.Value != nil {
		r.Value = append(bytes.Clone(r.Value), '!')
	}
	r.AddHeader("strait", []byte("x"))
	return true, nil
}
