package gssapi

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/internal/krbtest"
)

// TestKcat authenticates a real librdkafka client (kcat, through Cyrus SASL
// and MIT krb5, with mutual authentication) against the acceptor, with both
// framings librdkafka uses: SaslHandshake v1 + SaslAuthenticate (KIP-152),
// and SaslHandshake v0 + raw size-prefixed tokens (when the broker does not
// advertise SaslAuthenticate).
func TestKcat(t *testing.T) {
	bins := krbtest.Need(t, "kcat", "kinit")
	kcat := bins[0]
	r := newRealm(t)
	acc := r.acceptor(t, r.svcKeytab, "kafka/localhost")
	runKcat := func(t *testing.T, port int, metadataTimeout string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, kcat,
			"-b", "localhost:"+strconv.Itoa(port), "-L", "-m", metadataTimeout,
			"-X", "security.protocol=SASL_PLAINTEXT",
			"-X", "sasl.mechanisms=GSSAPI",
			"-X", "sasl.kerberos.service.name=kafka",
			"-X", "sasl.kerberos.principal=client@STRAIT.TEST",
			"-X", "sasl.kerberos.keytab="+r.clientKeytab,
			"-X", "debug=security,broker,protocol",
		)
		cmd.Env = append(os.Environ(), r.kdc.Env()...)
		return cmd.CombinedOutput()
	}

	for _, mode := range []struct {
		name string
		raw  bool // do not advertise SaslAuthenticate: v0 handshake, raw tokens
	}{{"SaslAuthenticate", false}, {"v0 raw tokens", true}} {
		t.Run(mode.name, func(t *testing.T) {
			srv := startBroker(t, acc, mode.raw)
			out, err := runKcat(t, srv.port, "30")
			conns := srv.stop()
			var ok *connResult
			for i := range conns {
				c := &conns[i]
				t.Logf("connection %d: steps %v principal %q metadata %v err %v", i, c.steps, c.principal, c.metadata, c.err)
				if c.principal == wantPrincipal && c.metadata {
					ok = c
				}
			}
			if err != nil || ok == nil {
				t.Fatalf("kcat: %v\n%s", err, lastLines(string(out), 60))
			}
			if !strings.Contains(string(out), "1 brokers:") || !strings.Contains(string(out), "localhost:"+strconv.Itoa(srv.port)) {
				t.Fatalf("kcat did not print the broker list:\n%s", lastLines(string(out), 40))
			}
			wantFraming := "SaslAuthenticate"
			if mode.raw {
				wantFraming = "raw"
			}
			for _, st := range ok.steps {
				if !strings.HasPrefix(st, wantFraming) && !strings.HasPrefix(st, "SaslHandshake") {
					t.Fatalf("step %q: want %s framing (steps %v)", st, wantFraming, ok.steps)
				}
			}
			// librdkafka asks for mutual authentication: AP-REQ, empty
			// token, choice = three client tokens.
			if n := countPrefix(ok.steps, wantFraming); n != 3 {
				t.Fatalf("%d GSSAPI tokens from kcat, want 3 (mutual authentication): %v", n, ok.steps)
			}
		})
	}

	// confluent-kafka-python (the same librdkafka, from Python).
	t.Run("confluent-kafka-python", func(t *testing.T) {
		py := "/usr/bin/python3" // Debian's, which sees python3-confluent-kafka
		if _, err := os.Stat(py); err != nil {
			krbtest.Need(t, "strait-missing-/usr/bin/python3")
		}
		if err := exec.Command(py, "-c", "import confluent_kafka").Run(); err != nil {
			krbtest.Need(t, "strait-missing-python3-confluent-kafka")
		}
		srv := startBroker(t, acc, false)
		script := `
import sys
from confluent_kafka.admin import AdminClient
a = AdminClient({
    "bootstrap.servers": sys.argv[1],
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanisms": "GSSAPI",
    "sasl.kerberos.service.name": "kafka",
    "sasl.kerberos.principal": "client@STRAIT.TEST",
    "sasl.kerberos.keytab": sys.argv[2],
})
md = a.list_topics(timeout=30)
print("brokers", sorted("%s:%d" % (b.host, b.port) for b in md.brokers.values()))
`
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, py, "-c", script, "localhost:"+strconv.Itoa(srv.port), r.clientKeytab)
		cmd.Env = append(os.Environ(), r.kdc.Env()...)
		out, err := cmd.CombinedOutput()
		conns := srv.stop()
		authed := false
		for _, c := range conns {
			authed = authed || (c.principal == wantPrincipal && c.metadata && countPrefix(c.steps, "SaslAuthenticate") == 3)
		}
		if err != nil || !authed || !strings.Contains(string(out), "localhost:"+strconv.Itoa(srv.port)) {
			t.Fatalf("confluent-kafka-python: %v, connections %+v\n%s", err, conns, lastLines(string(out), 30))
		}
	})

	// The service key changes after the acceptor's keytab was exported:
	// kcat's new tickets no longer decrypt, every connection is refused,
	// none authenticates, kcat fails.
	t.Run("stale service keytab refused", func(t *testing.T) {
		old := r.acceptor(t, r.kdc.Keytab(t, "before-rekey.keytab", "kafka/localhost"), "kafka/localhost")
		r.kdc.Rekey(t, "kafka/localhost")
		os.Remove(r.kdc.Ccache) // no cached service ticket under the old key
		srv := startBroker(t, old, false)
		out, err := runKcat(t, srv.port, "5")
		conns := srv.stop()
		if err == nil {
			t.Fatalf("kcat succeeded against a stale keytab:\n%s", lastLines(string(out), 20))
		}
		refused := 0
		for _, c := range conns {
			if c.principal != "" || c.metadata {
				t.Fatalf("a connection authenticated: %+v", c)
			}
			if c.err != nil && errors.Is(c.err, ErrAuthentication) && strings.Contains(c.err.Error(), "decrypt") {
				refused++
			}
		}
		if refused == 0 {
			t.Fatalf("no connection was refused for the stale key: %+v\n%s", conns, lastLines(string(out), 20))
		}
	})
}

func countPrefix(ss []string, p string) int {
	n := 0
	for _, s := range ss {
		if strings.HasPrefix(s, p) {
			n++
		}
	}
	return n
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// broker is just enough of a Kafka broker for kcat -L behind SASL GSSAPI:
// ApiVersions, SaslHandshake, SaslAuthenticate (or raw tokens), and a
// Metadata answer listing itself, served only after authentication.
type broker struct {
	ln    net.Listener
	port  int
	acc   *Acceptor
	raw   bool
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []connResult
	open  map[net.Conn]struct{}
}

type connResult struct {
	steps     []string // what the client sent, in order
	principal string   // Session.Principal() when done
	metadata  bool     // a Metadata request was answered after authentication
	err       error
}

func startBroker(t *testing.T, acc *Acceptor, raw bool) *broker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &broker{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, acc: acc, raw: raw, open: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.open[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				res := b.serve(c)
				c.Close()
				b.mu.Lock()
				delete(b.open, c)
				b.conns = append(b.conns, res)
				b.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() { b.stop() })
	return b
}

// stop closes the listener and every connection and returns what each
// connection did.
func (b *broker) stop() []connResult {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.open {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]connResult(nil), b.conns...)
}

func readFrame(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := int32(binary.BigEndian.Uint32(n[:]))
	if size < 0 || size > 1<<20 {
		return nil, fmt.Errorf("frame size %d", size)
	}
	b := make([]byte, size)
	_, err := io.ReadFull(r, b)
	return b, err
}

func writeFrame(w io.Writer, b []byte) error {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	_, err := w.Write(append(out, b...))
	return err
}

func (b *broker) serve(c net.Conn) (res connResult) {
	br := bufio.NewReader(c)
	sess := b.acc.Start()
	authed, rawMode := false, false
	for {
		frame, err := readFrame(br)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				res.err = err
			}
			return res
		}
		if rawMode {
			// After a v0 SaslHandshake: each frame is a bare GSSAPI token,
			// each answer a bare size-prefixed token; nothing is written
			// once the exchange is done.
			res.steps = append(res.steps, fmt.Sprintf("raw(%d)", len(frame)))
			out, done, err := sess.Next(context.Background(), frame)
			if err != nil {
				res.err = err
				return res
			}
			if done {
				rawMode, authed = false, true
				res.principal = sess.Principal()
				continue
			}
			if err := writeFrame(c, out); err != nil {
				res.err = err
				return res
			}
			continue
		}

		if len(frame) < 8 {
			res.err = fmt.Errorf("short request of %d bytes", len(frame))
			return res
		}
		key := int16(binary.BigEndian.Uint16(frame[0:2]))
		version := int16(binary.BigEndian.Uint16(frame[2:4]))
		corr := int32(binary.BigEndian.Uint32(frame[4:8]))
		req := kmsg.RequestForKey(key)
		if req == nil {
			res.err = fmt.Errorf("unknown api key %d", key)
			return res
		}
		req.SetVersion(version)
		off := 8
		idLen := int(int16(binary.BigEndian.Uint16(frame[off:])))
		off += 2
		if idLen > 0 {
			off += idLen
		}
		if req.IsFlexible() {
			off++ // empty header tag buffer (librdkafka sends none)
		}
		if off > len(frame) {
			res.err = fmt.Errorf("bad request header")
			return res
		}
		if err := req.ReadFrom(frame[off:]); err != nil {
			res.err = fmt.Errorf("%s v%d: %v", kmsg.NameForKey(key), version, err)
			return res
		}

		var resp kmsg.Response
		switch req := req.(type) {
		case *kmsg.ApiVersionsRequest:
			r := req.ResponseKind().(*kmsg.ApiVersionsResponse)
			if version > 3 {
				r.ErrorCode = 35 // UNSUPPORTED_VERSION: client retries with v0
				r.SetVersion(0)
			}
			add := func(k int16, lo, hi int16) {
				r.ApiKeys = append(r.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: k, MinVersion: lo, MaxVersion: hi})
			}
			add(18, 0, 3) // ApiVersions
			add(3, 0, 4)  // Metadata
			if b.raw {
				add(17, 0, 0) // SaslHandshake v0 only: raw tokens follow
			} else {
				add(17, 0, 1) // SaslHandshake
			}
			// librdkafka only attempts GSSAPI with brokers that have
			// JoinGroup (its "broker 0.9+" test); never called here.
			add(11, 0, 0)
			if !b.raw {
				add(36, 0, 2) // SaslAuthenticate
			}
			resp = r
		case *kmsg.SASLHandshakeRequest:
			res.steps = append(res.steps, fmt.Sprintf("SaslHandshake v%d %s", version, req.Mechanism))
			r := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
			r.SupportedMechanisms = []string{"GSSAPI"}
			if req.Mechanism != "GSSAPI" {
				r.ErrorCode = 33 // UNSUPPORTED_SASL_MECHANISM
			}
			if version == 0 {
				rawMode = true
			}
			resp = r
		case *kmsg.SASLAuthenticateRequest:
			res.steps = append(res.steps, fmt.Sprintf("SaslAuthenticate v%d (%d)", version, len(req.SASLAuthBytes)))
			r := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
			out, done, err := sess.Next(context.Background(), req.SASLAuthBytes)
			if err != nil {
				res.err = err
				msg := err.Error()
				r.ErrorCode, r.ErrorMessage = 58, &msg // SASL_AUTHENTICATION_FAILED
			} else {
				r.SASLAuthBytes = out
				if done {
					authed = true
					res.principal = sess.Principal()
				}
			}
			resp = r
		case *kmsg.MetadataRequest:
			if !authed {
				res.err = errors.New("Metadata before authentication")
				return res
			}
			r := req.ResponseKind().(*kmsg.MetadataResponse)
			r.Brokers = []kmsg.MetadataResponseBroker{{NodeID: 1, Host: "localhost", Port: int32(b.port)}}
			r.ControllerID = 1
			res.metadata = true
			resp = r
		default:
			res.err = fmt.Errorf("unexpected %s", kmsg.NameForKey(key))
			return res
		}
		resp.SetVersion(version)
		if ar, ok := resp.(*kmsg.ApiVersionsResponse); ok && ar.ErrorCode != 0 {
			ar.SetVersion(0)
		}
		out := binary.BigEndian.AppendUint32(nil, uint32(corr))
		if resp.IsFlexible() && key != 18 { // ApiVersions responses keep header v0
			out = append(out, 0)
		}
		out = resp.AppendTo(out)
		if err := writeFrame(c, out); err != nil {
			res.err = err
			return res
		}
		if res.err != nil { // authentication failed: answer, then close
			return res
		}
	}
}
