package examples_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/internal/testpki"
)

// haproxySource is the address HAProxy's backends dial from (the test adds
// `source` to every server line): a broker connection from any other address
// did not come through the private-link endpoint.
const haproxySource = "127.0.0.2"

// examples/hybrid-bridge: on-prem plaintext clients -> the real strait
// binary -> TLS + SNI through one private-link endpoint (a real HAProxy
// routing by SNI, the example's haproxy.cfg) -> a TLS kfake cluster whose
// brokers advertise bN.kafka.test:<endpoint port> and accept connections
// from HAProxy only. Field encryption is on.
func TestHybridBridgeExample(t *testing.T) {
	needHAProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	fields := examples[0] // encrypt-fields: the same topic, record and rule
	if fields.dir != "encrypt-fields" {
		t.Fatalf("examples[0] is %q, want encrypt-fields", fields.dir)
	}
	const dir = "hybrid-bridge"
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		t.Errorf("example has no README.md: %v", err)
	}
	work := t.TempDir()
	yml, err := os.ReadFile(filepath.Join(dir, "strait.yaml"))
	straittest.Must(t, err, "read example")
	straittest.Must(t, os.WriteFile(filepath.Join(work, "strait.yaml"), yml, 0o644), "copy example")

	// The cloud side: a CA, broker certificates for the advertised names,
	// the CA certificate handed to the on-prem team as ca.pem.
	ca := testpki.New(t)
	caPEM, err := os.ReadFile(ca.CertFile)
	straittest.Must(t, err, "read CA")
	straittest.Must(t, os.WriteFile(filepath.Join(work, "ca.pem"), caPEM, 0o644), "write ca.pem")

	// README steps 1 and 2: keyring, validate.
	out, err := strait(t, work, "keys", "generate", "--keyring", "keys.json", "--key", fields.keyID)
	straittest.Must(t, err, "keys generate: %s", out)
	out, err = strait(t, work, "validate", "--config", "strait.yaml")
	if err != nil || strings.TrimSpace(out) != "configuration ok" {
		t.Fatalf("validate: %v\n%s", err, out)
	}

	ports := straittest.FreePortBase(t, 2)
	endpoint := "127.0.0.1:" + strconv.Itoa(ports)
	stats := "127.0.0.1:" + strconv.Itoa(ports+1)
	guard := &brokerGuard{}
	straittest.Cluster(t, kfake.SeedTopics(3, fields.topic),
		kfake.TLS(ca.ServerTLSConfig(t, "b0.kafka.test", "b1.kafka.test", "b2.kafka.test")),
		kfake.ListenFn(guard.listen("b%d.kafka.test:"+strconv.Itoa(ports))))
	if len(guard.real) != 3 {
		t.Fatalf("kfake opened %d listeners, want 3", len(guard.real))
	}
	sessions := startHAProxy(t, filepath.Join(dir, "haproxy.cfg"), work, endpoint, stats, guard.real)
	seed := "b0.kafka.test:" + strconv.Itoa(ports)

	// README step 4: Strait, pointed at the endpoint.
	bridge := startStrait(t, work, []string{seed}, "--upstream-endpoint", endpoint)

	// On-prem applications: plaintext franz-go, bootstrap = the bridge.
	before := sessions()
	const n = 30
	prod := client(t, bridge)
	hdr := []kgo.RecordHeader{{Key: "trace-id", Value: []byte("abc-123")}}
	for i := 0; i < n; i++ {
		rec := &kgo.Record{Topic: fields.topic, Key: []byte(fmt.Sprintf("customer-%d", i)), Value: fields.value, Headers: hdr}
		straittest.Must(t, prod.ProduceSync(ctx, rec).FirstErr(), "produce %d through the bridge", i)
	}
	for _, r := range consumeN(t, ctx, client(t, bridge, kgo.ConsumeTopics(fields.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), n) {
		if !bytes.Equal(r.Value, fields.value) {
			t.Errorf("read through the bridge, key %s: %s, want %s", r.Key, r.Value, fields.value)
		}
		if v, ok := header(r, "trace-id"); !ok || string(v) != "abc-123" || len(r.Headers) != 1 {
			t.Errorf("headers through the bridge, key %s: %v, want only trace-id", r.Key, headerKeys(r))
		}
	}
	after := sessions()

	// The cloud side's view, also through the endpoint (the brokers take no
	// other connection): what is stored is ciphertext in the two fields.
	cloudDial := func(ctx context.Context, network, host string) (net.Conn, error) {
		h, _, err := net.SplitHostPort(host)
		if err != nil {
			return nil, err
		}
		cfg := ca.ClientTLSConfig()
		cfg.ServerName = h
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
		return d.DialContext(ctx, network, endpoint)
	}
	cloud := client(t, seed, kgo.Dialer(cloudDial), kgo.ConsumeTopics(fields.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for i, s := range consumeN(t, ctx, cloud, n) {
		for _, secret := range fields.secrets {
			if bytes.Contains(s.Value, []byte(secret)) {
				t.Errorf("secret %q stored in clear: %s", secret, s.Value)
			}
		}
		if _, ok := header(s, "strait.enc"); !ok {
			t.Errorf("stored record %s has no strait.enc header: %v", s.Key, headerKeys(s))
		}
		fields.checkStored(t, s)
		if i == 0 {
			t.Logf("stored on the broker: key %s value %s", s.Key, s.Value)
		}
	}

	// Every upstream connection went through the endpoint's one port: the
	// brokers accepted connections from HAProxy's source address only, and
	// HAProxy carried new sessions to the backend of every partition leader
	// while Strait produced and consumed (so Strait sent each broker's own
	// name as SNI; a wrong name lands on b0 and fails as not leader).
	if s := guard.strays.Load(); s != 0 {
		t.Errorf("%d connections reached a broker without going through HAProxy", s)
	}
	if guard.accepted.Load() == 0 {
		t.Error("no broker connection was accepted at all")
	}
	md, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cloud)
	straittest.Must(t, err, "metadata")
	leaders := map[int32]bool{}
	for _, tp := range md.Topics {
		for _, p := range tp.Partitions {
			leaders[p.Leader] = true
		}
	}
	if len(leaders) == 0 {
		t.Error("no partition leaders in metadata")
	}
	for l := range leaders {
		b := fmt.Sprintf("b%d", l)
		if after[b] <= before[b] {
			t.Errorf("no Strait session reached leader %s through the endpoint (before %d, after %d)", b, before[b], after[b])
		}
	}
	t.Logf("haproxy sessions per backend: before the round trip %v, after %v; broker connections accepted %d", before, after, guard.accepted.Load())

	// And the guard does refuse a direct connection.
	c, err := net.DialTimeout("tcp", guard.real[0], 5*time.Second)
	straittest.Must(t, err, "dial a broker directly")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a direct connection to a broker was not closed: %v", err)
	}
	c.Close()
}

// brokerGuard is kfake's ListenFn: broker n listens on a free 127.0.0.1
// port, advertises the host:port of the format, and accepts connections from
// haproxySource only.
type brokerGuard struct {
	mu               sync.Mutex
	real             []string
	accepted, strays atomic.Int64
}

type hostAddr string

func (a hostAddr) Network() string { return "tcp" }
func (a hostAddr) String() string  { return string(a) }

type guardedListener struct {
	net.Listener
	advertised hostAddr
	g          *brokerGuard
}

func (l guardedListener) Addr() net.Addr { return l.advertised }

func (l guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if host, _, _ := net.SplitHostPort(c.RemoteAddr().String()); host == haproxySource {
			l.g.accepted.Add(1)
			return c, nil
		}
		l.g.strays.Add(1)
		c.Close()
	}
}

func (g *brokerGuard) listen(advertiseFmt string) func(network, address string) (net.Listener, error) {
	return func(network, _ string) (net.Listener, error) {
		ln, err := net.Listen(network, "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		adv := hostAddr(fmt.Sprintf(advertiseFmt, len(g.real)))
		g.real = append(g.real, ln.Addr().String())
		return guardedListener{ln, adv, g}, nil
	}
}

// startHAProxy runs the example's haproxy.cfg with its addresses replaced:
// the endpoint and stats ports, and backend bN's server the real listener of
// broker N, dialled from haproxySource. It returns a function reading the
// sessions each backend has carried (HAProxy's CSV stats, column stot).
func startHAProxy(t *testing.T, cfgFile, dir, endpoint, stats string, brokers []string) func() map[string]int {
	t.Helper()
	pairs := []string{"bind 127.0.0.1:9192", "bind " + endpoint, "bind 127.0.0.1:9193", "bind " + stats}
	for i, addr := range brokers {
		pairs = append(pairs, fmt.Sprintf("server b%d 10.0.0.1%d:9093", i, i), fmt.Sprintf("server b%d %s source %s", i, addr, haproxySource))
	}
	exited, output := runHAProxy(t, cfgFile, dir, pairs)
	read := func() (map[string]int, error) {
		hc := http.Client{Timeout: 5 * time.Second}
		resp, err := hc.Get("http://" + stats + "/stats;csv")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		rows, err := csv.NewReader(resp.Body).ReadAll()
		if err != nil || len(rows) < 2 {
			return nil, fmt.Errorf("stats CSV: %v (%d rows)", err, len(rows))
		}
		idx := map[string]int{}
		for i, h := range rows[0] {
			idx[strings.TrimSpace(strings.TrimPrefix(h, "# "))] = i
		}
		px, sv, stot := idx["pxname"], idx["svname"], idx["stot"]
		got := map[string]int{}
		for _, r := range rows[1:] {
			if len(r) > stot && r[sv] == "BACKEND" {
				got[r[px]], _ = strconv.Atoi(r[stot])
			}
		}
		return got, nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := read(); err == nil {
			if c, err := net.DialTimeout("tcp", endpoint, time.Second); err == nil {
				c.Close()
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("haproxy exited:\n%s", output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("haproxy did not start listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() map[string]int {
		got, err := read()
		straittest.Must(t, err, "haproxy stats")
		return got
	}
}

// consumeN polls cl until it has n records.
func consumeN(t *testing.T, ctx context.Context, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume: %v (%d of %d records)", err, len(recs), n)
		}
		recs = append(recs, fs.Records()...)
	}
	if len(recs) != n {
		t.Fatalf("consumed %d records, want %d", len(recs), n)
	}
	return recs
}
