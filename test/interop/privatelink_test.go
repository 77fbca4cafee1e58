package interop

import (
	"context"
	"crypto/tls"
	"encoding/csv"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strait-proxy/strait/internal/testpki"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// advertisedListener is a real listener whose Addr() reports another
// address: kfake advertises Addr().String() in its metadata.
type advertisedListener struct {
	net.Listener
	addr advertisedAddr
}

type advertisedAddr string

func (a advertisedAddr) Network() string    { return "tcp" }
func (a advertisedAddr) String() string     { return string(a) }
func (l advertisedListener) Addr() net.Addr { return l.addr }

// advertiseAs returns a kfake ListenFn under which broker n (in creation
// order) listens on a free 127.0.0.1 port but advertises hostFmt(n):port; the
// real addresses are returned through *real.
func advertiseAs(hostFmt string, port int, real *[]string) kfake.Opt {
	var mu sync.Mutex
	return kfake.ListenFn(func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		n := len(*real)
		*real = append(*real, ln.Addr().String())
		return advertisedListener{ln, advertisedAddr(net.JoinHostPort(fmt.Sprintf(hostFmt, n), strconv.Itoa(port)))}, nil
	})
}

// startHAProxy runs HAProxy as a TLS-passthrough SNI router on 127.0.0.1:port:
// SNI bN.kafka.test goes to backends[N] (b0 is also the default). It returns
// a function reporting how many sessions each backend has carried so far.
func startHAProxy(t testing.TB, port int, backends []string) (sessions func() map[string]int) {
	t.Helper()
	need(t, "haproxy")
	statsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `global
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend stats
  mode http
  bind %s
  stats enable
  stats uri /stats
frontend privatelink
  bind 127.0.0.1:%d
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
`, statsAddr, port)
	for i := range backends {
		if i > 0 {
			fmt.Fprintf(&cfg, "  use_backend b%d if { req_ssl_sni -i b%d.kafka.test }\n", i, i)
		}
	}
	cfg.WriteString("  default_backend b0\n")
	for i, b := range backends {
		fmt.Fprintf(&cfg, "backend b%d\n  server s %s\n", i, b)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd := exec.Command("haproxy", "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("---- haproxy config ----\n%s---- haproxy output ----\n%s", cfg.String(), out.String())
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return func() map[string]int { return haproxySessions(t, statsAddr) }
		}
		select {
		case <-exited:
			t.Fatalf("haproxy exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy not listening on %s: %v\n%s", addr, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// haproxySessions reads HAProxy's CSV statistics: total sessions (stot) per
// backend.
func haproxySessions(t testing.TB, statsAddr string) map[string]int {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + statsAddr + "/stats;csv")
	if err != nil {
		t.Fatalf("haproxy stats: %v", err)
	}
	defer resp.Body.Close()
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil || len(rows) == 0 {
		t.Fatalf("haproxy stats CSV: %v", err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[strings.TrimPrefix(strings.TrimSpace(h), "# ")] = i
	}
	out := map[string]int{}
	for _, r := range rows[1:] {
		if len(r) > col["stot"] && r[col["svname"]] == "BACKEND" {
			out[r[col["pxname"]]], _ = strconv.Atoi(r[col["stot"]])
		}
	}
	return out
}

// TestPrivateLink: TLS brokers that advertise bN.kafka.test:<endpoint port>
// are reachable only through one HAProxy port that routes by SNI. Strait
// dials only that endpoint and sends each broker's host name as SNI
// (verifying the certificate against that name). Records are keyed over
// three partitions led by three brokers, so a wrong SNI would land requests
// on the wrong broker (HAProxy's default backend) and fail with
// NOT_LEADER_FOR_PARTITION.
func TestPrivateLink(t *testing.T) {
	need(t, "kcat")
	need(t, "haproxy")
	ca := testpki.New(t)
	port := freePort(t)
	var real []string
	kfakeCluster(t, []string{"privatelink", "privatelink-fixture", "privatelink-fixture-go"},
		kfake.SeedTopics(6, "privatelink"),
		kfake.TLS(ca.ServerTLSConfig(t, "*.kafka.test", "b0.kafka.test", "b1.kafka.test", "b2.kafka.test")),
		advertiseAs("b%d.kafka.test", port, &real))
	if len(real) != 3 {
		t.Fatalf("kfake opened %d listeners, want 3", len(real))
	}
	sessions := startHAProxy(t, port, real)
	endpoint := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	seed := net.JoinHostPort("b0.kafka.test", strconv.Itoa(port))

	// The fixture itself: a client that dials the endpoint with per-broker
	// SNI works (so a failure below is Strait's).
	t.Run("fixture", func(t *testing.T) {
		dialer := func(ctx context.Context, network, host string) (net.Conn, error) {
			h, _, err := net.SplitHostPort(host)
			if err != nil {
				return nil, err
			}
			cfg := ca.ClientTLSConfig()
			cfg.ServerName = h
			d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
			return d.DialContext(ctx, network, endpoint)
		}
		produceConsumeGo(t, []kgo.Opt{kgo.SeedBrokers(seed), kgo.Dialer(dialer)}, "privatelink-fixture-go", 30)

		// And kcat with the names resolved by a private hosts file (the
		// TESTING.md recipe).
		ns := hostsNamespace(t, "b0.kafka.test", "b1.kafka.test", "b2.kafka.test")
		kcatRoundTrip(t, append(ns, "kcat"), []string{"-b", seed, "-X", "security.protocol=SSL",
			"-X", "ssl.ca.location=" + ca.CertFile}, "privatelink-fixture", 30)
	})

	t.Run("strait", func(t *testing.T) {
		p := startStrait(t, straitConfig{Upstream: []string{seed}, NoDirect: true, Args: []string{
			"--upstream-tls", "--upstream-ca", ca.CertFile, "--upstream-endpoint", endpoint}})
		md, raw := kcatList(t, nil, p.KcatArgs...)
		assertOnlyStraitAddrs(t, md, raw, func(id int32) string { return p.BrokerAddr(int(id)) }, append(real, endpoint))
		if strings.Contains(raw, "kafka.test") {
			t.Errorf("upstream host names leak through Strait: %s", raw)
		}
		if t.Failed() {
			t.FailNow()
		}
		before := sessions()
		kcatRoundTrip(t, []string{"kcat"}, p.KcatArgs, "privatelink", 90)
		p.assertThrough(t, "Produce", "Fetch")

		// Strait reached every partition leader through the endpoint, each
		// with its own SNI name: HAProxy counted new sessions on the backend
		// of every leader (kfake picks leaders at random, so not
		// necessarily all three).
		after := sessions()
		leaders := map[int32]bool{}
		for _, tp := range md.Topics {
			if tp.Topic == "privatelink" {
				for _, pt := range tp.Partitions {
					leaders[pt.Leader] = true
				}
			}
		}
		if len(leaders) == 0 {
			t.Errorf("topic privatelink has no partition leaders in metadata: %s", raw)
		}
		for l := range leaders {
			b := fmt.Sprintf("b%d", l)
			if after[b] <= before[b] {
				t.Errorf("no Strait session reached leader %s through the endpoint (sessions before %d, after %d)", b, before[b], after[b])
			}
		}
		t.Logf("haproxy sessions per backend: before Strait's round trip %v, after %v", before, after)
	})
}

// produceConsumeGo produces n keyed records with franz-go and reads them
// back (all partitions), failing the test on any difference.
func produceConsumeGo(t testing.TB, opts []kgo.Opt, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append(opts, kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var want []string
	for i := 0; i < n; i++ {
		k, v := fmt.Sprintf("go%d", i), fmt.Sprintf("%s-go-%d", topic, i)
		want = append(want, k+"="+v)
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(k), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	cons, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var got []string
	for {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachRecord(func(r *kgo.Record) {
			if strings.HasPrefix(string(r.Key), "go") {
				got = append(got, string(r.Key)+"="+string(r.Value))
			}
		})
		if len(got) >= n {
			break
		}
	}
	sameSet(t, "franz-go round trip on "+topic, want, got)
}
