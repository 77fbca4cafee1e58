package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/config"
)

// BenchmarkPassthrough drives one session over loopback TCP: a client writes
// a request frame of an API no interceptor hooks, a minimal broker answers
// with a canned frame, and the client reads it back. The client and broker
// reuse their buffers, so allocs/op are Strait's own: the target is zero.
func BenchmarkPassthrough(b *testing.B) {
	for _, size := range []int{100, 16 << 10} {
		b.Run(byteSize(size), func(b *testing.B) { benchPassthrough(b, size) })
	}
}

func byteSize(n int) string {
	if n >= 1<<10 {
		return itoa(n>>10) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func benchPassthrough(b *testing.B, size int) {
	cfg := config.Default()
	cfg.Upstream.Bootstrap = []string{"127.0.0.1:1"}
	cfg.Listen.Bootstrap = "127.0.0.1:0"
	cfg.Listen.BrokerPortBase = 1
	s, err := New(cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.cluster.Close) // Run would close it; this server is never run
	// Accept Metadata v1 as if the cluster had said so (v1: not hooked by
	// the metadata interceptor? it is: use a key nothing hooks instead).
	const key, version = 12, 4 // Heartbeat v4 (flexible header)
	_, vt := s.vt.Load().clamp([]kmsg.ApiVersionsResponseApiKey{{ApiKey: key, MinVersion: 0, MaxVersion: version}}, versionRules{})
	s.vt.Store(vt)

	clientSide, proxyClient := tcpPair(b)
	proxyUp, brokerSide := tcpPair(b)
	ss := &session{srv: s, client: proxyClient, listener: "bootstrap", node: -1,
		pending: make(chan pending, 16), done: make(chan struct{})}
	ss.up = newUpstream(proxyUp, "broker:9092", 0, vt, 100<<20)
	ss.run2(b)

	// The broker: read a request, answer with a response of the same size.
	go func() {
		r := bufio.NewReader(brokerSide)
		buf := make([]byte, size+64)
		resp := make([]byte, 4+size)
		binary.BigEndian.PutUint32(resp, uint32(size))
		for {
			if _, err := io.ReadFull(r, buf[:4]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(buf)
			if _, err := io.ReadFull(r, buf[:n]); err != nil {
				return
			}
			copy(resp[4:8], buf[4:8]) // correlation id
			if _, err := brokerSide.Write(resp); err != nil {
				return
			}
		}
	}()

	req := make([]byte, 4+size)
	binary.BigEndian.PutUint32(req, uint32(size))
	binary.BigEndian.PutUint16(req[4:], key)
	binary.BigEndian.PutUint16(req[6:], version)
	binary.BigEndian.PutUint16(req[12:], 0) // client id length 0
	req[14] = 0                             // no header tags
	cr := bufio.NewReader(clientSide)
	in := make([]byte, size+64)
	b.SetBytes(int64(2 * size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		binary.BigEndian.PutUint32(req[8:], uint32(i))
		if _, err := clientSide.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(cr, in[:4]); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(cr, in[:binary.BigEndian.Uint32(in)]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	clientSide.Close()
	brokerSide.Close()
}

// run2 starts a session's goroutines without TLS or connect hooks.
func (ss *session) run2(b *testing.B) {
	ss.ic = nil
	ss.crl, ss.cwl = lazyReader{c: ss.client}, lazyWriter{c: ss.client}
	ss.cr = ss.crl.get()
	ss.ic = newTestConn()
	ctx := context.Background()
	go ss.pump(ctx)
	go func() { ss.read(ctx); close(ss.pending) }()
}

func tcpPair(b *testing.B) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn)
	go func() { c, _ := ln.Accept(); acc <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	return c, <-acc
}
