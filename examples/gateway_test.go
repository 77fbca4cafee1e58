package examples_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/internal/straittest"
)

// The gateway example (examples/gateway): two Strait replicas with the same
// port plan behind HAProxy. On one machine the replicas stand on their own
// loopback addresses (127.0.0.2 and 127.0.0.3, the "10.0.0.11/12" of the
// README) with the same port numbers, and HAProxy on 127.0.0.1 exposes those
// numbers too, so what the replicas advertise (--advertise-host 127.0.0.1)
// is the load balancer.

const (
	gwTopic   = "orders"
	gwKeyID   = "orders-kek"
	gwHostA   = "127.0.0.2"
	gwHostB   = "127.0.0.3"
	gwLBHost  = "127.0.0.1"
	gwBrokers = 3
)

func gwValue(key string) []byte {
	return []byte(`{"order":"` + key + `","card":"4111 1111 1111 1111"}`)
}

// gwPorts is the port plan shared by the load balancer and both replicas.
type gwPorts struct{ base, bootstrap, admin, stats int }

func (p gwPorts) broker(n int) int { return p.base + n }

// gwPortPlan finds a port range free on all three loopback addresses.
func gwPortPlan(t *testing.T) gwPorts {
	t.Helper()
	for i := 0; i < 20; i++ {
		base := straittest.FreePortBase(t, 12)
		ok := true
		for _, h := range []string{gwHostA, gwHostB} {
			for p := base; p < base+12 && ok; p++ {
				ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(p)))
				if err != nil {
					ok = false
					break
				}
				ln.Close()
			}
		}
		if ok {
			return gwPorts{base: base, bootstrap: base + 10, admin: base + 11, stats: base + 5}
		}
	}
	t.Fatal("no port range free on 127.0.0.1-3")
	return gwPorts{}
}

// gwReplica is one `strait run` of the example, restartable on its ports.
type gwReplica struct {
	name, dir, host string
	args            []string
	logMu           sync.Mutex
	logs            bytes.Buffer
	cmd             *exec.Cmd
	exited          chan error
}

func gwNewReplica(t *testing.T, name, dir, host string, p gwPorts, upstream []string) *gwReplica {
	r := &gwReplica{name: name, dir: dir, host: host}
	r.args = []string{"run", "--config", "strait.yaml", "--upstream", strings.Join(upstream, ","),
		"--listen", net.JoinHostPort(host, strconv.Itoa(p.bootstrap)),
		"--broker-port-base", strconv.Itoa(p.base), "--advertise-host", gwLBHost,
		"--admin-listen", net.JoinHostPort(host, strconv.Itoa(p.admin)), "--log-level", "info"}
	t.Cleanup(func() {
		if r.cmd != nil {
			r.signal(syscall.SIGKILL)
			<-r.exited
		}
		if t.Failed() {
			r.logMu.Lock()
			t.Logf("---- strait %s output ----\n%s", r.name, r.logs.String())
			r.logMu.Unlock()
		}
	})
	return r
}

func (r *gwReplica) start(t *testing.T, admin string) {
	t.Helper()
	r.logMu.Lock()
	fmt.Fprintf(&r.logs, "==== start at %s ====\n", time.Now().UTC().Format(time.RFC3339Nano))
	r.logMu.Unlock()
	cmd := exec.Command(straitBin(t), r.args...)
	cmd.Dir = r.dir
	cmd.Stdout = &lockedWriter{&r.logMu, &r.logs}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	straittest.Must(t, cmd.Start(), "start strait %s", r.name)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	r.cmd, r.exited = cmd, exited
	deadline := time.Now().Add(20 * time.Second)
	hc := http.Client{Timeout: time.Second}
	for {
		select {
		case err := <-exited:
			r.cmd = nil
			t.Fatalf("strait %s exited before ready: %v", r.name, err)
		default:
		}
		if resp, err := hc.Get("http://" + net.JoinHostPort(r.host, admin) + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("strait %s not ready after 20s", r.name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *gwReplica) signal(sig syscall.Signal) { _ = r.cmd.Process.Signal(sig) }

// stop sends sig and waits for the process to exit; it returns how long that
// took.
func (r *gwReplica) stop(t *testing.T, sig syscall.Signal) time.Duration {
	t.Helper()
	start := time.Now()
	r.signal(sig)
	select {
	case <-r.exited:
	case <-time.After(25 * time.Second):
		t.Fatalf("strait %s still running 25s after %v", r.name, sig)
	}
	r.cmd = nil
	return time.Since(start)
}

// gwHAProxy runs the example's haproxy.cfg with its addresses and ports
// replaced by the test's (each replaced literal must be in the file, so the
// README's file is the one tested).
func gwHAProxy(t *testing.T, p gwPorts) (statsURL string) {
	t.Helper()
	lb := gwLBHost + ":"
	pairs := []string{
		"bind :9092", "bind " + lb + strconv.Itoa(p.bootstrap),
		"127.0.0.1:8404", lb + strconv.Itoa(p.stats),
		"10.0.0.11", gwHostA,
		"10.0.0.12", gwHostB,
		":9092", ":" + strconv.Itoa(p.bootstrap),
		"port 9644", "port " + strconv.Itoa(p.admin),
	}
	for n := 0; n < gwBrokers; n++ {
		port := strconv.Itoa(9100 + n)
		pairs = append(pairs, "bind :"+port, "bind "+lb+strconv.Itoa(p.broker(n)), ":"+port, ":"+strconv.Itoa(p.broker(n)))
	}
	runHAProxy(t, filepath.Join("gateway", "haproxy.cfg"), t.TempDir(), pairs)
	return "http://" + lb + strconv.Itoa(p.stats) + "/stats;csv"
}

// gwServer is one server line of HAProxy's statistics.
type gwServer struct {
	status string // UP, DOWN, ...
	cur    int    // sessions open now
}

// gwServerStatus reads HAProxy's CSV statistics of every server, keyed
// "backend/server".
func gwServerStatus(statsURL string) (map[string]gwServer, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(statsURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, fmt.Errorf("stats CSV: %v", err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[strings.TrimPrefix(strings.TrimSpace(h), "# ")] = i
	}
	out := map[string]gwServer{}
	for _, r := range rows[1:] {
		if len(r) <= col["status"] || len(r) <= col["scur"] {
			continue
		}
		if sv := r[col["svname"]]; sv != "FRONTEND" && sv != "BACKEND" && r[col["pxname"]] != "stats" {
			cur, _ := strconv.Atoi(r[col["scur"]])
			out[r[col["pxname"]]+"/"+sv] = gwServer{status: r[col["status"]], cur: cur}
		}
	}
	return out, nil
}

// gwWaitUp waits until HAProxy's health checks report every server UP.
func gwWaitUp(t *testing.T, statsURL string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last map[string]gwServer
	var lastErr error
	for time.Since(start) < d {
		st, err := gwServerStatus(statsURL)
		lastErr = err
		if err == nil {
			last = st
			up := 0
			for _, s := range st {
				if s.status == "UP" {
					up++
				}
			}
			if len(st) == 2*(gwBrokers+1) && up == len(st) {
				return time.Since(start)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("haproxy: not every server UP after %v: %v (last error %v)", d, last, lastErr)
	return 0
}

// gwProducer produces distinct keys and remembers which were acknowledged.
type gwProducer struct {
	mu       sync.Mutex
	sent     int
	acked    map[string]bool
	failed   map[string]error
	lastAck  time.Time
	maxStall time.Duration // longest gap between two acknowledgements
}

func (p *gwProducer) ackCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// gwHooks counts the connections a client lost.
type gwHooks struct{ disconnects atomic.Int64 }

func (h *gwHooks) OnBrokerDisconnect(kgo.BrokerMetadata, net.Conn) { h.disconnects.Add(1) }

// gwConsumer is what the consumer group saw.
type gwConsumer struct {
	mu      sync.Mutex
	seen    map[string]int
	bad     []string
	records int
}

func (c *gwConsumer) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.records
}

// TestGateway runs examples/gateway: kfake (3 brokers), two `strait run`
// replicas behind the example's haproxy.cfg, an idempotent producer and a
// consumer group through the load balancer. One replica is SIGKILLed and
// restarted, then the other is drained (SIGTERM) and restarted.
func TestGateway(t *testing.T) {
	needHAProxy(t)
	testStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	if _, err := os.Stat(filepath.Join("gateway", "README.md")); err != nil {
		t.Errorf("example has no README.md: %v", err)
	}

	// The example's files as the README has the engineer lay them out: one
	// strait.yaml and one keyring, the same for both replicas.
	work := t.TempDir()
	yaml, err := os.ReadFile(filepath.Join("gateway", "strait.yaml"))
	straittest.Must(t, err, "read example")
	straittest.Must(t, os.WriteFile(filepath.Join(work, "strait.yaml"), yaml, 0o644), "copy example")
	out, err := strait(t, work, "keys", "generate", "--keyring", "keys.json", "--key", gwKeyID)
	straittest.Must(t, err, "keys generate: %s", out)
	out, err = strait(t, work, "validate", "--config", "strait.yaml")
	if err != nil || strings.TrimSpace(out) != "configuration ok" {
		t.Fatalf("validate: %v\n%s", err, out)
	}

	cluster := straittest.Cluster(t, kfake.NumBrokers(gwBrokers), kfake.SeedTopics(6, gwTopic))
	p := gwPortPlan(t)
	admin := strconv.Itoa(p.admin)
	a := gwNewReplica(t, "a", work, gwHostA, p, cluster.ListenAddrs())
	b := gwNewReplica(t, "b", work, gwHostB, p, cluster.ListenAddrs())
	a.start(t, admin)
	b.start(t, admin)
	stats := gwHAProxy(t, p)
	gwWaitUp(t, stats, 15*time.Second)
	lb := net.JoinHostPort(gwLBHost, strconv.Itoa(p.bootstrap))

	// Clients know only the load balancer.
	// The producer has franz-go's defaults: idempotent, acks=all, unlimited
	// retries.
	prodHooks, consHooks := &gwHooks{}, &gwHooks{}
	prodCl := client(t, lb, kgo.ClientID("gateway-producer"), kgo.DefaultProduceTopic(gwTopic), kgo.WithHooks(prodHooks))
	consCl := client(t, lb, kgo.ClientID("gateway-consumer"), kgo.ConsumerGroup("gateway-consumers"),
		kgo.ConsumeTopics(gwTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.WithHooks(consHooks))

	prod := &gwProducer{acked: map[string]bool{}, failed: map[string]error{}}
	cons := &gwConsumer{seen: map[string]int{}}
	prodCtx, stopProducing := context.WithCancel(ctx)
	defer stopProducing()
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-prodCtx.Done():
				return
			case <-tick.C:
			}
			key := fmt.Sprintf("order-%06d", i)
			prod.mu.Lock()
			prod.sent++
			prod.mu.Unlock()
			prodCl.Produce(ctx, &kgo.Record{Key: []byte(key), Value: gwValue(key)}, func(r *kgo.Record, err error) {
				now := time.Now()
				prod.mu.Lock()
				defer prod.mu.Unlock()
				if err != nil {
					prod.failed[key] = err
					return
				}
				prod.acked[key] = true
				if !prod.lastAck.IsZero() && now.Sub(prod.lastAck) > prod.maxStall {
					prod.maxStall = now.Sub(prod.lastAck)
				}
				prod.lastAck = now
			})
		}
	}()
	consCtx, stopConsuming := context.WithCancel(ctx)
	defer stopConsuming()
	consDone := make(chan struct{})
	go func() {
		defer close(consDone)
		for {
			fs := consCl.PollFetches(consCtx)
			if consCtx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				cons.mu.Lock()
				cons.records++
				cons.seen[string(r.Key)]++
				if !bytes.Equal(r.Value, gwValue(string(r.Key))) && len(cons.bad) < 5 {
					cons.bad = append(cons.bad, fmt.Sprintf("key %s: value %q", r.Key, r.Value))
				}
				cons.mu.Unlock()
			})
		}
	}()

	// progress waits until both clients move on after an event, and returns
	// how long that took.
	progress := func(what string) (prodAfter, consAfter time.Duration) {
		t.Helper()
		start := time.Now()
		p0, c0 := prod.ackCount(), cons.count()
		for prodAfter == 0 || consAfter == 0 {
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%s: no progress within 20s (acknowledged %d -> %d, consumed %d -> %d)",
					what, p0, prod.ackCount(), c0, cons.count())
			}
			time.Sleep(20 * time.Millisecond)
			if prodAfter == 0 && prod.ackCount() > p0+50 {
				prodAfter = time.Since(start)
			}
			if consAfter == 0 && cons.count() > c0+50 {
				consAfter = time.Since(start)
			}
		}
		return prodAfter, consAfter
	}

	// sessions is how many client connections HAProxy has open to replica
	// name now: a fault on a replica that carries none would prove nothing.
	sessions := func(name string) int {
		t.Helper()
		st, err := gwServerStatus(stats)
		straittest.Must(t, err, "haproxy stats")
		n := 0
		for k, s := range st {
			if strings.HasSuffix(k, "/strait-"+name) {
				n += s.cur
			}
		}
		return n
	}

	progress("warm-up")
	time.Sleep(2 * time.Second)
	if n := sessions("a"); n == 0 {
		t.Fatalf("replica a carries no client connection before its SIGKILL")
	} else {
		t.Logf("before SIGKILL: replica a carries %d client connections, b %d", n, sessions("b"))
	}

	// 1. SIGKILL replica a: its connections die mid-request.
	killedAt := time.Now()
	a.stop(t, syscall.SIGKILL)
	pk, ck := progress("after SIGKILL of replica a")
	t.Logf("SIGKILL a: producer acknowledging again %v later, consumer consuming %v later", pk.Round(time.Millisecond), ck.Round(time.Millisecond))
	time.Sleep(time.Second)
	a.start(t, admin)
	upA := gwWaitUp(t, stats, 15*time.Second)
	t.Logf("replica a restarted %v after the kill; HAProxy saw it UP %v after ready", time.Since(killedAt).Round(time.Millisecond), upA.Round(time.Millisecond))
	time.Sleep(2 * time.Second)

	// 2. SIGTERM replica b: it drains.
	if n := sessions("b"); n == 0 {
		t.Fatalf("replica b carries no client connection before its SIGTERM")
	} else {
		t.Logf("before SIGTERM: replica b carries %d client connections, a %d", n, sessions("a"))
	}
	drainedAt := time.Now()
	drain := b.stop(t, syscall.SIGTERM)
	t.Logf("SIGTERM b: drained and exited in %v", drain.Round(time.Millisecond))
	pt, ct := progress("after SIGTERM of replica b")
	t.Logf("SIGTERM b: producer acknowledging again %v after exit, consumer %v after exit", pt.Round(time.Millisecond), ct.Round(time.Millisecond))
	b.start(t, admin)
	upB := gwWaitUp(t, stats, 15*time.Second)
	t.Logf("replica b restarted %v after SIGTERM; HAProxy saw it UP %v after ready", time.Since(drainedAt).Round(time.Millisecond), upB.Round(time.Millisecond))
	progress("after both restarts")
	time.Sleep(2 * time.Second)

	// Stop producing; every record handed to the client is acknowledged or
	// failed within the flush.
	stopProducing()
	<-prodDone
	flushCtx, flushCancel := context.WithTimeout(ctx, 20*time.Second)
	defer flushCancel()
	if err := prodCl.Flush(flushCtx); err != nil {
		t.Errorf("producer flush: %v", err)
	}
	prod.mu.Lock()
	sent, ackedN, failedN, maxStall := prod.sent, len(prod.acked), len(prod.failed), prod.maxStall
	var failures []string
	for k, err := range prod.failed {
		if len(failures) < 5 {
			failures = append(failures, k+": "+err.Error())
		}
	}
	acked := make([]string, 0, ackedN)
	for k := range prod.acked {
		acked = append(acked, k)
	}
	prod.mu.Unlock()
	sort.Strings(acked)
	t.Logf("producer: %d records sent, %d acknowledged, %d failed %v; longest gap between acknowledgements %v",
		sent, ackedN, failedN, failures, maxStall.Round(time.Millisecond))
	if ackedN == 0 || ackedN+failedN != sent {
		t.Errorf("producer: %d sent, %d acknowledged + %d failed", sent, ackedN, failedN)
	}

	// The group sees every acknowledged record at least once.
	var missing []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		missing = missing[:0]
		cons.mu.Lock()
		for _, k := range acked {
			if cons.seen[k] == 0 {
				missing = append(missing, k)
			}
		}
		cons.mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopConsuming()
	<-consDone
	cons.mu.Lock()
	t.Logf("consumer group: %d records consumed, %d distinct keys, %d acknowledged keys not seen", cons.records, len(cons.seen), len(missing))
	if len(missing) > 0 {
		t.Errorf("consumer group never saw %d acknowledged records, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	if len(cons.bad) > 0 {
		t.Errorf("consumer got values that are not the producer's: %v", cons.bad)
	}
	cons.mu.Unlock()

	// As stored, read directly from the brokers up to the end offsets: each
	// acknowledged key exactly once, encrypted.
	stored := gwReadStored(t, ctx, cluster.ListenAddrs())
	var lost, dup []string
	for _, k := range acked {
		switch n := stored[k]; {
		case n == 0:
			lost = append(lost, k)
		case n > 1:
			dup = append(dup, fmt.Sprintf("%s x%d", k, n))
		}
	}
	total := 0
	for _, n := range stored {
		total += n
	}
	t.Logf("on the brokers: %d records, %d distinct keys; acknowledged %d: lost %d, duplicated %d",
		total, len(stored), ackedN, len(lost), len(dup))
	if len(lost) > 0 {
		t.Errorf("%d acknowledged records are not on the brokers, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	if len(dup) > 0 {
		t.Errorf("%d acknowledged records are on the brokers more than once, e.g. %v", len(dup), dup[:min(5, len(dup))])
	}
	for k, n := range stored {
		if n > 1 && !prod.acked[k] {
			t.Errorf("unacknowledged record %s stored %d times", k, n)
		}
	}
	// The faults reached both clients: they lost connections and recovered.
	t.Logf("connections lost: producer %d, consumer %d", prodHooks.disconnects.Load(), consHooks.disconnects.Load())
	if prodHooks.disconnects.Load() == 0 || consHooks.disconnects.Load() == 0 {
		t.Errorf("a client lost no connection (producer %d, consumer %d): the faults did not reach it",
			prodHooks.disconnects.Load(), consHooks.disconnects.Load())
	}
	t.Logf("test wall time %v", time.Since(testStart).Round(time.Millisecond))
}

// gwReadStored reads the topic directly from kfake, from the start to the
// end offsets, and counts records per key; it fails on a value in clear.
func gwReadStored(t *testing.T, ctx context.Context, brokers []string) map[string]int {
	t.Helper()
	adm := kadm.NewClient(client(t, brokers[0]))
	ends, err := adm.ListEndOffsets(ctx, gwTopic)
	straittest.Must(t, err, "list end offsets")
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	cl := client(t, brokers[0], kgo.ConsumeTopics(gwTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	readCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	counts := map[string]int{}
	inClear := 0
	for len(want) > 0 {
		fs := cl.PollFetches(readCtx)
		if err := readCtx.Err(); err != nil {
			t.Fatalf("reading the brokers directly: %v; partitions not read to the end: %v", err, want)
		}
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.Canceled) {
				t.Logf("direct fetch: %v", err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			counts[string(r.Key)]++
			if bytes.Contains(r.Value, []byte("4111 1111 1111 1111")) || bytes.Contains(r.Value, []byte(`"order"`)) {
				inClear++
			}
			if _, ok := header(r, "strait.enc"); !ok {
				inClear++
			}
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	if inClear > 0 {
		t.Errorf("%d records stored in clear (or without strait.enc)", inClear)
	}
	return counts
}
