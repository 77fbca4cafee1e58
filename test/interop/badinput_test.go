package interop

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/internal/promtext"
)

// Metric names this test expects on Strait's admin /metrics.
const (
	connErrorsMetric = "strait_connection_errors_total" // counter, label reason="…"
)

// apiVersionsRequest is a framed ApiVersions v0 request (header v1).
func apiVersionsRequest(corr int32) []byte {
	const clientID = "strait-interop"
	body := binary.BigEndian.AppendUint16(nil, 18) // api key
	body = binary.BigEndian.AppendUint16(body, 0)  // version
	body = binary.BigEndian.AppendUint32(body, uint32(corr))
	body = binary.BigEndian.AppendUint16(body, uint16(len(clientID)))
	body = append(body, clientID...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// connEnds reads from conn until it is closed (EOF or reset) and reports
// what it read; a connection still open after d is an error.
func connEnds(conn net.Conn, d time.Duration) (int, error) {
	conn.SetReadDeadline(time.Now().Add(d))
	n, err := io.Copy(io.Discard, conn)
	if err == nil {
		return int(n), nil // EOF
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return int(n), fmt.Errorf("connection still open after %v (read %d bytes)", d, n)
	}
	return int(n), nil // reset and friends: closed too
}

// TestBadInput sends malformed traffic to the plaintext bootstrap port while
// a well-behaved franz-go producer keeps producing and an idle connection sits
// there. Each bad connection must be closed promptly (or, for a well-framed
// unknown API, answered); no other connection may notice; Strait keeps
// running; and /metrics counts the rejections.
func TestBadInput(t *testing.T) {
	need(t, "kcat")
	const topic = "bad-input"
	c := kfakeCluster(t, []string{topic})
	p := startStrait(t, straitConfig{Upstream: c.ListenAddrs(), NoDirect: true})

	// A client that connects and sends nothing, held open throughout.
	idle, err := net.DialTimeout("tcp", p.Bootstrap, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	// A well-behaved producer running through everything below.
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Bootstrap), kgo.DefaultProduceTopic(topic),
		kgo.RecordDeliveryTimeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, stop := context.WithCancel(context.Background())
	var produced, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte(fmt.Sprintf("good-%d", i))}).FirstErr()
			switch {
			case err == nil:
				produced.Add(1)
			case ctx.Err() == nil:
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// Let it get going.
	for deadline := time.Now().Add(20 * time.Second); produced.Load() < 5; {
		if time.Now().After(deadline) {
			stop()
			wg.Wait()
			t.Fatalf("producer through Strait did not get going: %d produced, %d failed (%v)", produced.Load(), failed.Load(), firstErr.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}

	dial := func(t *testing.T) net.Conn {
		conn, err := net.DialTimeout("tcp", p.Bootstrap, 5*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	mustEnd := func(t *testing.T, conn net.Conn) {
		n, err := connEnds(conn, 5*time.Second)
		if err != nil {
			t.Error(err)
		} else {
			t.Logf("connection closed by Strait (%d bytes read first)", n)
		}
	}

	// A size prefix makes Strait either wait for the body or reject it
	// before allocating; these exceed any sane maximum, so: closed.
	for _, tc := range []struct{ name, data string }{
		{"garbage", "\xde\xad\xbe\xef\x00\x01this is not kafka\x00\xff\xfe"},    // negative size
		{"http", "GET /metrics HTTP/1.1\r\nHost: strait\r\n\r\n"},               // size 0x47455420 (~1.1 GiB)
		{"oversized", "\x7f\xff\xff\xff" + strings.Repeat("\x00", 1024)},        // 2 GiB - 1
		{"oversized-slightly", "\x06\x40\x00\x01" + strings.Repeat("\x00", 64)}, // 100 MiB + 1
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dial(t)
			if _, err := conn.Write([]byte(tc.data)); err != nil {
				t.Fatalf("write: %v", err)
			}
			mustEnd(t, conn)
		})
	}

	t.Run("truncated", func(t *testing.T) {
		// A frame announcing 100 bytes, 10 of them sent, then the client
		// half-closes: Strait must drop the connection, not wait forever.
		conn := dial(t)
		frame := apiVersionsRequest(7)
		binary.BigEndian.PutUint32(frame, 100)
		if _, err := conn.Write(frame[:14]); err != nil {
			t.Fatalf("write: %v", err)
		}
		conn.(*net.TCPConn).CloseWrite()
		mustEnd(t, conn)
	})

	t.Run("truncated-then-close", func(t *testing.T) {
		conn := dial(t)
		frame := apiVersionsRequest(8)
		binary.BigEndian.PutUint32(frame, 100)
		conn.Write(frame[:10])
		conn.Close()
	})

	t.Run("tls-on-plaintext", func(t *testing.T) {
		conn := dial(t)
		tc := tls.Client(conn, &tls.Config{ServerName: "strait.test", InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		err := tc.Handshake()
		var ne net.Error
		switch {
		case err == nil:
			t.Fatal("TLS handshake succeeded on the plaintext port")
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("TLS ClientHello on the plaintext port left hanging: %v", err)
		default:
			t.Logf("handshake failed as it should: %v", err)
		}
		mustEnd(t, conn)
	})

	t.Run("unknown-api-key", func(t *testing.T) {
		// Well framed, but API key 32000 does not exist: a clean error
		// response or a closed connection, never a hang.
		conn := dial(t)
		frame := apiVersionsRequest(4242)
		binary.BigEndian.PutUint16(frame[4:], 32000)
		if _, err := conn.Write(frame); err != nil {
			t.Fatalf("write: %v", err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var hdr [8]byte
		_, err := io.ReadFull(conn, hdr[:])
		var ne net.Error
		switch {
		case err == nil:
			if corr := int32(binary.BigEndian.Uint32(hdr[4:])); corr != 4242 {
				t.Errorf("response to an unknown API carries correlation id %d, want 4242", corr)
			} else {
				t.Logf("unknown API answered with a %d-byte response", binary.BigEndian.Uint32(hdr[:]))
			}
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("unknown API key: no answer and no close within 5s")
		default:
			t.Logf("unknown API key: connection closed (%v)", err)
		}
	})

	t.Run("many-bad-at-once", func(t *testing.T) {
		var wg sync.WaitGroup
		var open atomic.Int64
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.DialTimeout("tcp", p.Bootstrap, 5*time.Second)
				if err != nil {
					return
				}
				defer conn.Close()
				conn.Write([]byte("\x7f\xff\xff\xffjunk"))
				if _, err := connEnds(conn, 5*time.Second); err != nil {
					open.Add(1)
				}
			}()
		}
		wg.Wait()
		if n := open.Load(); n > 0 {
			t.Errorf("%d of 20 oversized connections still open after 5s", n)
		}
	})

	// While all that went on: kcat works too.
	t.Run("kcat-meanwhile", func(t *testing.T) {
		md, raw := kcatList(t, nil, p.KcatArgs...)
		assertOnlyStraitAddrs(t, md, raw, func(id int32) string { return p.BrokerAddr(int(id)) }, c.ListenAddrs())
	})

	// The idle connection did not disturb anyone; it still works now, or
	// Strait closed it on an idle timeout (both fine).
	t.Run("idle-client", func(t *testing.T) {
		idle.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := idle.Write(apiVersionsRequest(99)); err != nil {
			t.Logf("idle connection was closed by Strait: %v", err)
			return
		}
		var hdr [8]byte
		if _, err := io.ReadFull(idle, hdr[:]); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("idle connection neither closed nor answering: %v", err)
			} else {
				t.Logf("idle connection was closed by Strait: %v", err)
			}
			return
		}
		if corr := binary.BigEndian.Uint32(hdr[4:]); corr != 99 {
			t.Errorf("ApiVersions on the formerly idle connection: correlation id %d, want 99", corr)
		}
	})

	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()
	if !p.Running() {
		t.Fatal("strait exited during the bad-input test")
	}
	if n := failed.Load(); n > 0 {
		t.Errorf("the good producer saw %d failures during the bad input (first: %v)", n, firstErr.Load())
	}
	good := produced.Load()
	t.Logf("good producer: %d records acknowledged during the bad input", good)

	// Everything the good producer got acknowledged is there, read by kcat.
	r := mustRun(t, defaultTimeout, "", nil, "kcat", append(append([]string(nil), p.KcatArgs...),
		"-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", `%s\n`)...)
	if got := len(lines(r.Stdout)); int64(got) < good {
		t.Errorf("kcat read %d records back, the producer had %d acknowledged", got, good)
	}

	// Each rejected connection left a log line above INFO.
	warn := 0
	for _, l := range lines(p.Output()) {
		if strings.Contains(l, "WARN") || strings.Contains(l, "ERROR") {
			warn++
		}
	}
	if warn < 5 {
		t.Errorf("strait logged %d WARN/ERROR lines for at least 5 rejected connections", warn)
	}

	// And the rejections are counted.
	code, body, err := p.adminGet("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	total, series := sumCounter(body, connErrorsMetric)
	t.Logf("%s series after the bad input:\n%s", connErrorsMetric, strings.Join(series, "\n"))
	if len(series) == 0 {
		t.Errorf("/metrics has no %s{reason=...} counter", connErrorsMetric)
	} else if total < 5 {
		t.Errorf("%s sums to %v after at least 5 rejected connections (garbage, http, oversized x2, tls)", connErrorsMetric, total)
	}
	for _, s := range series {
		if !strings.Contains(s, `reason="`) {
			t.Errorf("series without a reason label: %s", s)
		}
	}
}

// sumCounter adds up every sample of a metric in Prometheus text format.
func sumCounter(body, name string) (float64, []string) {
	return sumCounterWith(body, name, "")
}

// sumCounterWith is sumCounter over the series whose labels contain label
// (e.g. `api="Produce"`).
func sumCounterWith(body, name, label string) (float64, []string) {
	s := promtext.Parse(body)
	var with []string
	if label != "" {
		with = []string{label}
	}
	return s.Sum(name, with...), s.Series(name, with...)
}
