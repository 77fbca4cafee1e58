package proxy_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
)

// TestConnectionHooks: connect hooks run before any request and can refuse;
// upstream hooks run on each fresh upstream connection after the connect
// hooks, and can talk to the broker (as SASL will) before any client request
// is forwarded on it (a RoundTrip would otherwise see a client's response).
func TestConnectionHooks(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "h"))
	var connects, upstreams atomic.Int32
	var refuse atomic.Bool
	ic := &interceptor.Interceptor{
		Name: "test-hooks",
		OnConnect: func(_ context.Context, conn *interceptor.Conn) error {
			connects.Add(1)
			if refuse.Load() {
				return errors.New("refused by test")
			}
			conn.SetPrincipal(interceptor.Principal{Name: "test"})
			return nil
		},
		OnUpstream: func(ctx context.Context, conn *interceptor.Conn, up interceptor.Upstream) error {
			if conn.Principal().Name != "test" {
				return errors.New("upstream hook ran before the connect hook")
			}
			req := kmsg.NewPtrApiVersionsRequest()
			resp, err := up.RoundTrip(ctx, req)
			if err != nil {
				return err
			}
			if len(resp.(*kmsg.ApiVersionsResponse).ApiKeys) == 0 {
				return errors.New("empty ApiVersions from the broker")
			}
			upstreams.Add(1)
			return nil
		},
	}
	s := straittest.Start(t, c.ListenAddrs(), []*interceptor.Interceptor{ic}, nil)
	ctx := ctxT(t, 20*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("h"))
	straittest.Must(t, err, "client")
	defer cl.Close()
	straittest.Must(t, cl.ProduceSync(ctx, kgo.StringRecord("x")).FirstErr(), "produce")
	if connects.Load() == 0 || upstreams.Load() == 0 {
		t.Fatalf("connect hooks %d, upstream hooks %d", connects.Load(), upstreams.Load())
	}

	refuse.Store(true)
	before := straittest.Counter(t, s.Registry, "strait_connection_errors_total", "reason", "refused")
	conn, err := net.Dial("tcp", s.Bootstrap)
	straittest.Must(t, err, "dial")
	expectClosed(t, conn)
	if straittest.Counter(t, s.Registry, "strait_connection_errors_total", "reason", "refused") <= before {
		t.Fatal("a refused connection was not counted")
	}
}

// TestDepartedBrokerListener: a node that leaves the cluster keeps its
// listener while a client is connected to it, and loses it afterwards.
func TestDepartedBrokerListener(t *testing.T) {
	c := straittest.Cluster(t)
	node, _, err := c.AddNode(-1, 0)
	straittest.Must(t, err, "add node")
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	addr := "127.0.0.1:" + strconv.Itoa(s.PortBase+int(node))
	held, err := net.Dial("tcp", addr)
	straittest.Must(t, err, "dial node %d", node)
	defer held.Close()

	straittest.Must(t, c.RemoveNode(node), "remove node")
	time.Sleep(1500 * time.Millisecond) // three metadata refreshes
	if extra, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("listener closed while a connection was open: %v", err)
	} else {
		extra.Close()
	}
	held.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			break // closed, as it should be
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("departed broker's listener still open after its connections ended")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTopicIDResolution: an id that no proxied Metadata response named is
// resolved by asking the cluster (what encryption relies on for Produce and
// Fetch v13+, which name topics by id only); an id the cluster does not know
// stays unresolved.
func TestTopicIDResolution(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "by-id"))
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	ctx := ctxT(t, 20*time.Second)
	direct, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	straittest.Must(t, err, "direct client")
	defer direct.Close()
	req := kmsg.NewPtrMetadataRequest()
	topic := kmsg.NewMetadataRequestTopic()
	topic.Topic = kmsg.StringPtr("by-id")
	req.Topics = append(req.Topics, topic)
	md, err := req.RequestWith(ctx, direct)
	straittest.Must(t, err, "metadata")
	id := md.Topics[0].TopicID
	if _, known := s.Topics().Name(id); known {
		t.Fatal("the id was known before anyone asked")
	}
	name, err := s.Topics().Resolve(ctx, id)
	if err != nil || name != "by-id" {
		t.Fatalf("resolve: %q %v", name, err)
	}
	if _, err := s.Topics().Resolve(ctx, [16]byte{1, 2, 3}); err == nil {
		t.Fatal("an unknown id resolved")
	}
}
