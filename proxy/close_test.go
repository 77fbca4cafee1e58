package proxy_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
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
		Hooks: []interceptor.Hook{{Key: int16(kmsg.DeleteTopics), Request: func(_ context.Context, x *interceptor.Exchange) error {
			answered.Store(x.Conn.ID)
			resp, err := interceptor.ErrorResponse(x.Request, 73)
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
