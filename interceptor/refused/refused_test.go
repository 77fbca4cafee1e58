package refused

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

type testKey struct{}

func TestProduce(t *testing.T) {
	topic := kmsg.NewProduceRequestTopic()
	topic.Topic = "orders"
	refuse := func() *Produce {
		var r Produce
		r.Add(&topic, 3, kerr.PolicyViolation.Code, "strait: no")
		return &r
	}

	t.Run("nothing refused", func(t *testing.T) {
		x := &interceptor.Exchange{Key: 0, Version: 9}
		var r Produce
		if err := r.Finish(x, kmsg.NewPtrProduceRequest(), testKey{}, "x"); err != nil || x.Response != nil || x.Value(testKey{}) != nil {
			t.Fatalf("err %v, response %v", err, x.Response)
		}
	})
	t.Run("acks=0 closes", func(t *testing.T) {
		req := kmsg.NewPtrProduceRequest()
		req.Acks = 0
		err := refuse().Finish(&interceptor.Exchange{Key: 0, Version: 9}, req, testKey{}, "refused by policy")
		if !errors.Is(err, interceptor.ErrClose) {
			t.Fatalf("err %v, want ErrClose", err)
		}
	})
	t.Run("nothing left: answered", func(t *testing.T) {
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(9)
		req.Acks = -1
		x := &interceptor.Exchange{Key: 0, Version: 9, Request: req}
		if err := refuse().Finish(x, req, testKey{}, "x"); err != nil {
			t.Fatal(err)
		}
		resp, ok := x.Response.(*kmsg.ProduceResponse)
		if !ok || len(resp.Topics) != 1 || resp.Topics[0].Topic != "orders" || len(resp.Topics[0].Partitions) != 1 {
			t.Fatalf("response %+v", x.Response)
		}
		if p := resp.Topics[0].Partitions[0]; p.Partition != 3 || p.ErrorCode != kerr.PolicyViolation.Code || p.ErrorMessage == nil || *p.ErrorMessage != "strait: no" {
			t.Errorf("partition %+v", p)
		}
	})
	t.Run("merged into the broker's response", func(t *testing.T) {
		req := kmsg.NewPtrProduceRequest()
		req.Acks = -1
		kept := kmsg.NewProduceRequestTopic()
		kept.Topic = "orders"
		req.Topics = []kmsg.ProduceRequestTopic{kept}
		x := &interceptor.Exchange{Key: 0, Version: 9, Request: req}
		if err := refuse().Finish(x, req, testKey{}, "x"); err != nil || x.Response != nil {
			t.Fatalf("err %v, response %v", err, x.Response)
		}
		resp := kmsg.NewPtrProduceResponse()
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = "orders"
		rt.Partitions = []kmsg.ProduceResponseTopicPartition{{Partition: 0}}
		resp.Topics = []kmsg.ProduceResponseTopic{rt}
		x.Response = resp
		Merge(x, testKey{})
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 2 || resp.Topics[0].Partitions[1].ErrorCode != kerr.PolicyViolation.Code {
			t.Fatalf("merged %+v", resp.Topics)
		}
		if !x.ResponseModified() {
			t.Error("the merged response is not marked modified")
		}
	})
}
