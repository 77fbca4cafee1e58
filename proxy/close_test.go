package proxy_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/interceptor/errresp"
	"github.com/strait-proxy/strait/internal/straittest"
)

// TestCloseAfterResponse: a hook's answer reaches the client, then the
// connection ends (as a broker after a failed SASL login), and the
// connection's OnClose functions run.
func TestCloseAfterResponse(t *testing.T) {
	c := straittest.Cluster(t)
	var closed sync.Map // conn id → true
	var answered atomic.Uint64
	ic := &interceptor.Interceptor{
		Name: "closer",
		OnConnect: func(_ context.Context, c *interceptor.Conn) error {
			c.OnClose(func() { closed.Store(c.ID, true) })
			return nil
		},
		Hooks: []interceptor.Hook{{Key: int16(kmsg.DeleteTopics), MaxVersion: interceptor.Latest, Request: func(_ context.Context, x *interceptor.Exchange) error {
			answered.Store(x.Conn.ID)
			resp, err := errresp.For(x.Request, 73)
			if err != nil {
				return err
			}
			x.Respond(resp)
			x.CloseAfterResponse()
			return nil
		}}},
	}
	s := straittest.Start(t, c.ListenAddrs(), []*interceptor.Interceptor{ic}, nil)
	mustWork(t, s)
	conn, err := net.Dial("tcp", s.Bootstrap)
	straittest.Must(t, err, "dial")
	defer conn.Close()
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.SetVersion(3)
	req.TopicNames = []string{"x"}
	_, err = conn.Write(kmsg.NewRequestFormatter().AppendRequest(nil, req, 9))
	straittest.Must(t, err, "write")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var size [4]byte
	_, err = io.ReadFull(conn, size[:])
	straittest.Must(t, err, "read the answer")
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	_, err = io.ReadFull(conn, body)
	straittest.Must(t, err, "read the answer")
	resp := kmsg.NewPtrDeleteTopicsResponse()
	resp.SetVersion(3)
	straittest.Must(t, resp.ReadFrom(body[4:]), "decode")
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 73 {
		t.Fatalf("answer %+v, want TOPIC_DELETION_DISABLED", resp.Topics)
	}
	expectClosed(t, conn) // without another request
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := closed.Load(answered.Load()); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("OnClose did not run for the closed connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUnreachableBrokerAnswersRetriable: a produce to a broker Strait cannot
// reach gets NOT_LEADER_OR_FOLLOWER (retriable: the client refreshes
// metadata and retries) before the connection closes, never a bare close on
// the first request (which franz-go turns into failed records).
func TestUnreachableBrokerAnswersRetriable(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "gone"))
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	mustWork(t, s) // broker listeners are open
	before := straittest.Counter(t, s.Registry, "strait_connection_errors_total", "reason", "upstream_dial")
	c.Close()
	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(s.PortBase)) // node 0's listener
	straittest.Must(t, err, "dial")
	defer conn.Close()
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(7)
	req.Acks, req.TimeoutMillis = -1, 1000
	req.Topics = []kmsg.ProduceRequestTopic{{Topic: "gone", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: []byte{}}}}}
	_, err = conn.Write(kmsg.NewRequestFormatter().AppendRequest(nil, req, 5))
	straittest.Must(t, err, "write")
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	var size [4]byte
	_, err = io.ReadFull(conn, size[:])
	straittest.Must(t, err, "read the answer")
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	_, err = io.ReadFull(conn, body)
	straittest.Must(t, err, "read the answer")
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(7)
	straittest.Must(t, resp.ReadFrom(body[4:]), "decode")
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 || resp.Topics[0].Partitions[0].ErrorCode != 6 {
		t.Fatalf("answer %+v, want NOT_LEADER_OR_FOLLOWER on the partition", resp.Topics)
	}
	expectClosed(t, conn)
	waitCounter(t, s, "strait_connection_errors_total", before, "reason", "upstream_dial")
}
