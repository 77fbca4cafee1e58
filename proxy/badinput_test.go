package proxy_test

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/straittest"
)

// expectClosed waits for the server to close c.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection was not closed by Strait")
	}
}

func TestBadInput(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "ok"))
	s := straittest.Start(t, c.ListenAddrs(), nil, func(c *config.Config) {
		c.Limits.MaxFrameBytes = 1 << 20
		c.Limits.IdleTimeout = config.Duration(time.Second)
	})
	ctx := ctxT(t, 60*time.Second)

	// A healthy producer keeps going through all of it.
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("ok"))
	straittest.Must(t, err, "client")
	defer cl.Close()
	stop := make(chan struct{})
	healthy := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				healthy <- nil
				return
			default:
			}
			if err := cl.ProduceSync(ctx, kgo.StringRecord("fine")).FirstErr(); err != nil {
				healthy <- err
				return
			}
		}
	}()

	size := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	cases := []struct {
		name, reason string
		send         []byte
		closeWrite   bool
	}{
		{"oversized frame", "frame_too_large", size(0x7fffffff), false},
		{"just over the limit", "frame_too_large", size(1<<20 + 1), false},
		{"garbage", "malformed", append(size(12), []byte("\xff\xff\xff\xffgarbage!")...), false},
		{"unknown api key", "unsupported_api", append(size(10), 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0), false},
		{"truncated frame", "truncated", append(size(100), []byte("short")...), true},
		{"tls on plaintext", "tls_on_plaintext", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}, false},
		{"silent client", "idle_timeout", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := straittest.Counter(t, s.Registry, "strait_connection_errors_total", "reason", tc.reason)
			conn, err := net.Dial("tcp", s.Bootstrap)
			straittest.Must(t, err, "dial")
			defer conn.Close()
			if _, err := conn.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.closeWrite {
				conn.(*net.TCPConn).CloseWrite()
			}
			expectClosed(t, conn)
			deadline := time.Now().Add(3 * time.Second)
			for straittest.Counter(t, s.Registry, "strait_connection_errors_total", "reason", tc.reason) <= before {
				if time.Now().After(deadline) {
					t.Fatalf("strait_connection_errors_total{reason=%q} did not grow", tc.reason)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	close(stop)
	if err := <-healthy; err != nil {
		t.Fatalf("a healthy client was disturbed: %v", err)
	}
}

// TestApiVersionsClamp checks Strait's ApiVersions answer: every API capped
// at what kmsg decodes, internal APIs absent, and a too-new ApiVersions
// version answered with UNSUPPORTED_VERSION at v0.
func TestApiVersionsClamp(t *testing.T) {
	c := straittest.Cluster(t)
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	ctx := ctxT(t, 10*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap))
	straittest.Must(t, err, "client")
	defer cl.Close()
	r, err := cl.Request(ctx, kmsg.NewPtrApiVersionsRequest())
	straittest.Must(t, err, "api versions")
	resp := r.(*kmsg.ApiVersionsResponse)
	if len(resp.ApiKeys) == 0 {
		t.Fatal("no api keys advertised")
	}
	for _, k := range resp.ApiKeys {
		req := kmsg.RequestForKey(k.ApiKey)
		if req == nil {
			t.Fatalf("advertised key %d that kmsg does not know", k.ApiKey)
		}
		if k.MaxVersion > req.MaxVersion() {
			t.Errorf("%s: advertised v%d > kmsg max v%d", kmsg.NameForKey(k.ApiKey), k.MaxVersion, req.MaxVersion())
		}
		switch k.ApiKey {
		case 4, 5, 6, 7, 55, 56, 58, 62, 63:
			t.Errorf("internal API %s advertised", kmsg.NameForKey(k.ApiKey))
		case 17:
			if k.MinVersion < 1 {
				t.Errorf("SaslHandshake v0 advertised")
			}
		}
	}

	// A raw ApiVersions v127: UNSUPPORTED_VERSION, v0 body.
	conn, err := net.Dial("tcp", s.Bootstrap)
	straittest.Must(t, err, "dial")
	defer conn.Close()
	frame := []byte{0, 18, 0, 127, 0, 0, 0, 7, 0, 0, 0}
	conn.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(frame))), frame...))
	var size [4]byte
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadFull(conn, size[:])
	straittest.Must(t, err, "read size")
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	_, err = io.ReadFull(conn, body)
	straittest.Must(t, err, "read body")
	if corr := binary.BigEndian.Uint32(body); corr != 7 {
		t.Fatalf("correlation id %d", corr)
	}
	v0 := kmsg.NewPtrApiVersionsResponse()
	v0.SetVersion(0)
	straittest.Must(t, v0.ReadFrom(body[4:]), "decode v0")
	if v0.ErrorCode != 35 || len(v0.ApiKeys) == 0 {
		t.Fatalf("error code %d, %d keys; want UNSUPPORTED_VERSION with keys", v0.ErrorCode, len(v0.ApiKeys))
	}
}

// TestAcksZero: produce with acks=0 has no response; Strait must not wait
// for one (a later request on the same connection still gets its answer).
func TestAcksZero(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "a0"))
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	ctx := ctxT(t, 30*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("a0"), kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	straittest.Must(t, err, "client")
	defer cl.Close()
	for range 50 {
		straittest.Must(t, cl.ProduceSync(ctx, kgo.StringRecord("x")).FirstErr(), "produce acks=0")
	}
	// The same client's metadata request still round-trips after them.
	_, err = cl.Request(ctx, kmsg.NewPtrMetadataRequest())
	straittest.Must(t, err, "metadata after acks=0")
	if got := len(consumeN(t, ctx, s.Bootstrap, "a0", 50)); got != 50 {
		t.Fatalf("got %d", got)
	}
}

// TestDrain: on shutdown Strait stops accepting and finishes in-flight work.
func TestDrain(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "d"))
	s := straittest.Start(t, c.ListenAddrs(), nil, nil)
	ctx := ctxT(t, 30*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("d"))
	straittest.Must(t, err, "client")
	defer cl.Close()
	straittest.Must(t, cl.ProduceSync(ctx, kgo.StringRecord("before")).FirstErr(), "produce")
	done := make(chan struct{})
	go func() { s.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not finish")
	}
	if _, err := net.DialTimeout("tcp", s.Bootstrap, time.Second); err == nil {
		t.Fatal("still accepting after drain")
	}
}
