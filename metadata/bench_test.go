package metadata

import (
	"context"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/topicid"
)

// benchMapper advertises strait.local:20000+id without recording anything,
// like a proxy whose listeners are all open already.
type benchMapper struct{}

func (benchMapper) Advertise(_ *interceptor.Conn, nodeID int32, _ string, _ int32) (string, int32, error) {
	return advHost, advPortBase + nodeID, nil
}

// bigMetadata is a Metadata v12 response of a mid-size cluster: 12 brokers,
// 200 topics of 12 partitions.
func bigMetadata() *kmsg.MetadataResponse {
	r := &kmsg.MetadataResponse{Version: 12, ClusterID: ptr("cluster-1"), ControllerID: 1}
	for id := int32(0); id < 12; id++ {
		r.Brokers = append(r.Brokers, kmsg.MetadataResponseBroker{NodeID: id, Host: upstreamHost(id), Port: upstreamPort, Rack: ptr("az")})
	}
	for i := range 200 {
		tp := kmsg.MetadataResponseTopic{Topic: ptr(fmt.Sprintf("topic-%03d", i)), TopicID: [16]byte{byte(i), byte(i >> 8), 1}}
		for p := int32(0); p < 12; p++ {
			tp.Partitions = append(tp.Partitions, kmsg.MetadataResponseTopicPartition{
				Partition: p, Leader: p, Replicas: []int32{p, (p + 1) % 12, (p + 2) % 12}, ISR: []int32{p, (p + 1) % 12, (p + 2) % 12},
			})
		}
		r.Topics = append(r.Topics, tp)
	}
	return r
}

func BenchmarkMetadataRewrite(b *testing.B) {
	ctx := context.Background()
	chain, err := interceptor.NewChain(New(benchMapper{}, topicid.New()))
	if err != nil {
		b.Fatal(err)
	}
	runOn := func(b *testing.B, chain *interceptor.Chain, resp kmsg.Response) {
		x := &interceptor.Exchange{Key: 3, Version: 12}
		if err := chain.Request(ctx, x); err != nil {
			b.Fatal(err)
		}
		x.Response = resp
		if err := chain.Response(ctx, x); err != nil {
			b.Fatal(err)
		}
		if !x.ResponseModified() {
			b.Fatal("not modified")
		}
	}
	run := func(b *testing.B, resp kmsg.Response) { runOn(b, chain, resp) }

	// hook: the rewrite alone, on a decoded response (brokers reset each
	// iteration so every pass changes all 12 addresses).
	b.Run("hook", func(b *testing.B) {
		resp := bigMetadata()
		orig := append([]kmsg.MetadataResponseBroker(nil), resp.Brokers...)
		b.ReportAllocs()
		for b.Loop() {
			copy(resp.Brokers, orig)
			run(b, resp)
		}
	})

	// hook-no-topics: the same without a TopicNames, i.e. the cost of the
	// address rewrite alone; the difference is Learn checking 200 known ids.
	b.Run("hook-no-topics", func(b *testing.B) {
		plain, err := interceptor.NewChain(New(benchMapper{}, nil))
		if err != nil {
			b.Fatal(err)
		}
		resp := bigMetadata()
		orig := append([]kmsg.MetadataResponseBroker(nil), resp.Brokers...)
		b.ReportAllocs()
		for b.Loop() {
			copy(resp.Brokers, orig)
			runOn(b, plain, resp)
		}
	})

	// decode-rewrite-encode: what a hooked Metadata frame costs the proxy: decode,
	// rewrite, encode into a reused buffer.
	b.Run("decode-rewrite-encode", func(b *testing.B) {
		wire := bigMetadata().AppendTo(nil)
		out := make([]byte, 0, 2*len(wire))
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		for b.Loop() {
			resp := &kmsg.MetadataResponse{Version: 12}
			if err := resp.ReadFrom(wire); err != nil {
				b.Fatal(err)
			}
			run(b, resp)
			out = resp.AppendTo(out[:0])
		}
	})
}
