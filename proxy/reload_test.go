package proxy_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/interceptor/errresp"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/internal/testpki"
)

// answering is an interceptor that answers DeleteTopics itself with code,
// and counts its Close.
func answering(name string, code int16, closed *atomic.Int32) *interceptor.Interceptor {
	return &interceptor.Interceptor{
		Name: name,
		Hooks: []interceptor.Hook{{Key: int16(kmsg.DeleteTopics), MaxVersion: interceptor.Latest, Request: func(_ context.Context, x *interceptor.Exchange) error {
			resp, err := errresp.For(x.Request, code)
			if err != nil {
				return err
			}
			x.Respond(resp)
			return nil
		}}},
		Close: func() error { closed.Add(1); return nil },
	}
}

func deleteTopicCode(t *testing.T, ctx context.Context, cl *kgo.Client) int16 {
	t.Helper()
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TopicNames = []string{"r"}
	req.Topics = []kmsg.DeleteTopicsRequestTopic{{Topic: kmsg.StringPtr("r")}}
	r, err := cl.Request(ctx, req)
	straittest.Must(t, err, "delete topics")
	return r.(*kmsg.DeleteTopicsResponse).Topics[0].ErrorCode
}

// TestReload: a reload swaps the chain for new requests on connections that
// stay open, closes the old generation once unused, moves the bootstrap
// listener, and a rejected reload changes nothing.
func TestReload(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "r"))
	var closed1, closed2 atomic.Int32
	s := straittest.Start(t, c.ListenAddrs(), []*interceptor.Interceptor{answering("gen1", 29, &closed1)}, nil)
	ctx := ctxT(t, 30*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap))
	straittest.Must(t, err, "client")
	defer cl.Close()
	if got := deleteTopicCode(t, ctx, cl); got != 29 {
		t.Fatalf("before reload: code %d, want 29 from gen1", got)
	}
	conns := straittest.Counter(t, s.Registry, "strait_connections_total", "listener", "bootstrap")

	cfg := s.Config
	newPort := straittest.FreePortBase(t, 1)
	cfg.Listen.Bootstrap = "127.0.0.1:" + strconv.Itoa(newPort)
	restart, err := s.Reload(cfg, []*interceptor.Interceptor{answering("gen2", 73, &closed2)})
	straittest.Must(t, err, "reload")
	if len(restart) != 0 {
		t.Fatalf("reload says %v need a restart; nothing of the kind changed", restart)
	}
	// The same client, on the connections it already has.
	if got := deleteTopicCode(t, ctx, cl); got != 73 {
		t.Fatalf("after reload: code %d, want 73 from gen2", got)
	}
	if got := straittest.Counter(t, s.Registry, "strait_connections_total", "listener", "bootstrap"); got != conns {
		t.Fatalf("the client opened %v new bootstrap connections across the reload", got-conns)
	}
	if closed1.Load() != 1 || closed2.Load() != 0 {
		t.Fatalf("closes: gen1 %d (want 1), gen2 %d (want 0)", closed1.Load(), closed2.Load())
	}
	// The bootstrap listener moved: the new address serves, the old one
	// takes no new connections.
	cl2, err := kgo.NewClient(kgo.SeedBrokers(cfg.Listen.Bootstrap))
	straittest.Must(t, err, "client on the new address")
	defer cl2.Close()
	if got := deleteTopicCode(t, ctx, cl2); got != 73 {
		t.Fatalf("new listener: code %d, want 73", got)
	}
	if conn, err := net.DialTimeout("tcp", s.Bootstrap, time.Second); err == nil {
		conn.Close()
		t.Fatal("the old bootstrap address still accepts connections")
	}

	// A rejected reload changes nothing.
	bad := cfg
	bad.Limits.MaxInFlight = 0
	var closed3 atomic.Int32
	if _, err := s.Reload(bad, []*interceptor.Interceptor{answering("gen3", 42, &closed3)}); err == nil {
		t.Fatal("an invalid configuration was accepted")
	}
	if got := deleteTopicCode(t, ctx, cl); got != 73 {
		t.Fatalf("after a rejected reload: code %d, want 73 from gen2", got)
	}
}

// TestReloadRotatesCertificate: a reload re-reads listen.tls; new handshakes
// get the new certificate, a connection made before keeps working.
func TestReloadRotatesCertificate(t *testing.T) {
	c := straittest.Cluster(t)
	ca := testpki.New(t)
	cert1, key1 := ca.Leaf(t, "127.0.0.1", "localhost")
	s := straittest.Start(t, c.ListenAddrs(), nil, func(c *config.Config) {
		c.Listen.TLS.CertFile, c.Listen.TLS.KeyFile = cert1, key1
	})
	serialOf := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", s.Bootstrap, ca.ClientTLSConfig())
		straittest.Must(t, err, "TLS dial")
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serialOf()
	old, err := tls.Dial("tcp", s.Bootstrap, ca.ClientTLSConfig())
	straittest.Must(t, err, "TLS dial")
	defer old.Close()

	cfg := s.Config
	cfg.Listen.TLS.CertFile, cfg.Listen.TLS.KeyFile = ca.Leaf(t, "127.0.0.1", "localhost")
	_, err = s.Reload(cfg, nil)
	straittest.Must(t, err, "reload")
	if after := serialOf(); after == before {
		t.Fatalf("the listener still presents certificate %s after the reload", before)
	}
	// The connection from before the rotation still round-trips.
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(1)
	_, err = old.Write(kmsg.NewRequestFormatter().AppendRequest(nil, md, 1))
	straittest.Must(t, err, "write on the old connection")
	_ = old.SetReadDeadline(time.Now().Add(5 * time.Second))
	var size [4]byte
	_, err = io.ReadFull(old, size[:])
	straittest.Must(t, err, "read on the old connection")
}
