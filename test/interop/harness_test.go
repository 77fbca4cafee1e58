package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/strait-proxy/strait/internal/freeport"
	"github.com/strait-proxy/strait/internal/straitbin"
)

var (
	straitBin      string // absolute path of the binary under test
	straitBinErr   error  // why there is none
	repoRoot       string
	interopDir     string
	directMode     = os.Getenv("STRAIT_INTEROP_DIRECT") == "1"
	pythonBin      = "/usr/bin/python3" // Debian's: pyenv's python3 cannot see python3-kafka & co.
	defaultTimeout = 60 * time.Second   // per external client command
)

func TestMain(m *testing.M) {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(2)
	}
	interopDir = wd
	repoRoot = filepath.Clean(filepath.Join(wd, "..", ".."))

	if directMode {
		straitBinErr = errors.New("STRAIT_INTEROP_DIRECT=1: not using Strait")
	} else {
		straitBin, straitBinErr = straitbin.Path()
	}
	code := m.Run()
	straitbin.Cleanup()
	os.Exit(code)
}

// missing reports a missing prerequisite: a loud skip locally, a failure in
// CI (CI=true), where scripts/install-test-deps.sh must have provided it.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	straitbin.Missing(t, format, args...)
}

// need checks that a tool is available. Besides executables on PATH it knows
// "confluent_kafka" and "kafka" (Python modules for /usr/bin/python3),
// "kafkajs" (test/interop/js/node_modules) and "strait" (the binary).
func need(t testing.TB, tool string) {
	t.Helper()
	switch tool {
	case "strait":
		if straitBin == "" {
			missing(t, "the strait binary: %v", straitBinErr)
		}
	case "confluent_kafka", "kafka":
		if _, err := os.Stat(pythonBin); err != nil {
			missing(t, "%s: %v", pythonBin, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, pythonBin, "-c", "import "+tool).CombinedOutput(); err != nil {
			missing(t, "python module %s for %s (Debian package python3-%s): %v %s", tool, pythonBin,
				strings.ReplaceAll(tool, "_", "-"), err, out)
		}
	case "kafkajs":
		need(t, "node")
		if _, err := os.Stat(filepath.Join(interopDir, "js", "node_modules", "kafkajs", "package.json")); err != nil {
			missing(t, "kafkajs in test/interop/js/node_modules (npm ci there)")
		}
	default:
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, "executable %q not on PATH", tool)
		}
	}
}

// ---------------------------------------------------------------- ports

var portMu sync.Mutex

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// freePortRange returns base such that base..base+n-1 are all free.
func freePortRange(t testing.TB, n int) int {
	t.Helper()
	base, err := freeport.Base(n)
	if err != nil {
		t.Fatal(err)
	}
	return base
}

// ---------------------------------------------------------------- kfake

// kfakeCluster starts an in-process 3-broker cluster with topics seeded (3
// partitions each) and auto topic creation on, closed at cleanup.
func kfakeCluster(t testing.TB, topics []string, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	all := []kfake.Opt{kfake.NumBrokers(3), kfake.AllowAutoTopicCreation()}
	if len(topics) > 0 {
		all = append(all, kfake.SeedTopics(3, topics...))
	}
	all = append(all, opts...)
	c, err := kfake.NewCluster(all...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// ---------------------------------------------------------------- strait

// syncBuffer collects a subprocess's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proxy is where clients connect: a running Strait, or kfake itself in
// direct mode.
type proxy struct {
	Bootstrap  string // host:port for clients
	Host       string // advertised host
	BrokerBase int    // --broker-port-base
	Admin      string // host:port of the admin listener ("" in direct mode)
	Direct     bool   // clients talk to kfake directly (STRAIT_INTEROP_DIRECT=1)
	Upstream   []string
	// KcatArgs are the kcat flags that reach this proxy (-b plus any
	// security settings).
	KcatArgs []string
	cmd      *exec.Cmd
	out      *syncBuffer
	exited   chan struct{}
}

type straitConfig struct {
	Upstream []string // --upstream
	// Args are extra flags (TLS, endpoint, SNI...).
	Args []string
	// NoWaitReady skips waiting for /readyz.
	NoWaitReady bool
	// NoDirect marks a test whose point is a Strait feature: it is skipped
	// in direct mode.
	NoDirect bool
	// SNIOnly leaves out the port-per-broker listeners (--listen,
	// --broker-port-base): Strait's one-port SNI mode, configured in Args.
	SNIOnly bool
	// KcatArgs are the security flags kcat needs to reach Strait;
	// DirectKcatArgs those it needs to reach the upstream in direct mode.
	KcatArgs, DirectKcatArgs []string
}

// startStrait runs `strait run` on free ports in front of cfg.Upstream, waits
// for /readyz and stops it at cleanup. Its output goes to the test log if the
// test fails (or with -v and STRAIT_INTEROP_LOG=1).
func startStrait(t testing.TB, cfg straitConfig) *proxy {
	t.Helper()
	if directMode {
		if cfg.NoDirect {
			t.Skip("STRAIT_INTEROP_DIRECT=1: this test checks Strait itself")
		}
		host, port, _ := net.SplitHostPort(cfg.Upstream[0])
		p, _ := strconv.Atoi(port)
		return &proxy{Bootstrap: cfg.Upstream[0], Host: host, BrokerBase: p, Direct: true, Upstream: cfg.Upstream,
			KcatArgs: append([]string{"-b", cfg.Upstream[0]}, cfg.DirectKcatArgs...)}
	}
	need(t, "strait")

	host := "127.0.0.1"
	p := &proxy{Host: host, Upstream: cfg.Upstream, out: &syncBuffer{}, exited: make(chan struct{})}
	p.Admin = net.JoinHostPort(host, strconv.Itoa(freePort(t)))
	args := []string{"run", "--upstream", strings.Join(cfg.Upstream, ","), "--admin-listen", p.Admin}
	if !cfg.SNIOnly {
		p.Bootstrap = net.JoinHostPort(host, strconv.Itoa(freePort(t)))
		p.BrokerBase = freePortRange(t, 4)
		p.KcatArgs = append([]string{"-b", p.Bootstrap}, cfg.KcatArgs...)
		args = append(args, "--listen", p.Bootstrap, "--broker-port-base", strconv.Itoa(p.BrokerBase),
			"--advertise-host", host)
	}
	args = append(args, cfg.Args...)
	p.cmd = exec.Command(straitBin, args...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start strait: %v", err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Logf("strait %s", strings.Join(args, " "))
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() || os.Getenv("STRAIT_INTEROP_LOG") == "1" {
			t.Logf("---- strait output (%s) ----\n%s---- end of strait output ----", strings.Join(args, " "), p.out.String())
		}
	})
	if !cfg.NoWaitReady {
		if err := p.waitReady(30 * time.Second); err != nil {
			t.Fatalf("strait not ready: %v", err)
		}
	}
	return p
}

// stop sends SIGTERM (graceful drain), then SIGKILL after 10s.
func (p *proxy) stop(t testing.TB) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("strait did not exit within 10s of SIGTERM; killing it")
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// Output is what Strait has logged so far.
func (p *proxy) Output() string {
	if p.out == nil {
		return ""
	}
	return p.out.String()
}

// Running reports whether the process is still alive.
func (p *proxy) Running() bool {
	if p.Direct {
		return true
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// waitReady polls /readyz until it answers 200.
func (p *proxy) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("strait exited (%v) before it was ready", p.cmd.ProcessState)
		default:
		}
		code, body, err := p.adminGet("/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("HTTP %d %q", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("/readyz not 200 after %v (last: %s)", d, last)
}

func (p *proxy) adminGet(path string) (int, string, error) {
	if p.Admin == "" {
		return 0, "", errors.New("no admin listener")
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.Admin + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b), nil
}

// assertThrough checks, from Strait's /metrics, that requests of each API
// went through this Strait (strait_requests_total{api=...}) and that clients
// used the per-broker listeners (strait_connections_total{listener="broker-N"}
// or the SNI listener): a client that reached the brokers around Strait
// would leave these at zero.
func (p *proxy) assertThrough(t testing.TB, apis ...string) {
	t.Helper()
	if p.Direct {
		return
	}
	code, body, err := p.adminGet("/metrics")
	if err != nil || code != http.StatusOK {
		t.Errorf("GET /metrics: %d %v", code, err)
		return
	}
	for _, api := range apis {
		if n, _ := sumCounterWith(body, "strait_requests_total", `api="`+api+`"`); n == 0 {
			t.Errorf("no %s request went through Strait (strait_requests_total{api=%q} is 0)", api, api)
		}
	}
	nb, _ := sumCounterWith(body, "strait_connections_total", `listener="broker-`)
	ns, _ := sumCounterWith(body, "strait_connections_total", `listener="sni"`)
	if nb+ns == 0 {
		t.Errorf("no client connection reached a per-broker (or SNI) listener of Strait")
	}
}

// BrokerAddr is where Strait serves upstream node n.
func (p *proxy) BrokerAddr(n int) string {
	if p.Direct {
		return p.Upstream[n]
	}
	return net.JoinHostPort(p.Host, strconv.Itoa(p.BrokerBase+n))
}

// ---------------------------------------------------------------- commands

type cmdResult struct {
	Stdout, Stderr string
	Err            error
}

// run executes a command with a timeout, stdin, and logs what happened.
func run(t testing.TB, timeout time.Duration, stdin string, env []string, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	res := cmdResult{Stdout: so.String(), Stderr: se.String(), Err: err}
	t.Logf("$ %s %s  (%.1fs, err=%v)", name, strings.Join(args, " "), time.Since(start).Seconds(), err)
	return res
}

// mustRun is run that fails the test on error, showing the output.
func mustRun(t testing.TB, timeout time.Duration, stdin string, env []string, name string, args ...string) cmdResult {
	t.Helper()
	r := run(t, timeout, stdin, env, name, args...)
	if r.Err != nil {
		t.Fatalf("%s failed: %v\nstdout:\n%s\nstderr:\n%s", name, r.Err, tail(r.Stdout, 4000), tail(r.Stderr, 4000))
	}
	return r
}

// kcatRoundTrip produces n keyed records with kcat (prefix: the kcat command,
// e.g. ["kcat"] or an unshare wrapper; args: -b and security flags) and
// consumes them back, comparing keys and values. Keys spread the records over
// all partitions, and so over every broker.
func kcatRoundTrip(t testing.TB, prefix, args []string, topic string, n int) {
	t.Helper()
	recs := records(topic, n)
	var in strings.Builder
	var want []string
	for i, r := range recs {
		fmt.Fprintf(&in, "k%d:%s\n", i, r)
		want = append(want, fmt.Sprintf("k%d=%s", i, r))
	}
	cmd := func(extra ...string) []string {
		return append(append(append([]string(nil), prefix[1:]...), args...), extra...)
	}
	mustRun(t, defaultTimeout, in.String(), nil, prefix[0], cmd("-P", "-t", topic, "-K", ":", "-X", "acks=all", "-X", "message.timeout.ms=30000")...)
	r := mustRun(t, defaultTimeout, "", nil, prefix[0], cmd("-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", `%k=%s\n`)...)
	sameSet(t, "kcat round trip on "+topic, want, lines(r.Stdout))
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, "\r"); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// sameSet compares two lists of records regardless of order (records of
// different partitions interleave) and reports the difference.
func sameSet(t testing.TB, what string, want, got []string) {
	t.Helper()
	w := append([]string(nil), want...)
	g := append([]string(nil), got...)
	sort.Strings(w)
	sort.Strings(g)
	if strings.Join(w, "\n") == strings.Join(g, "\n") {
		return
	}
	wm := map[string]int{}
	for _, s := range w {
		wm[s]++
	}
	for _, s := range g {
		wm[s]--
	}
	var miss, extra []string
	for s, n := range wm {
		for ; n > 0; n-- {
			miss = append(miss, s)
		}
		for ; n < 0; n++ {
			extra = append(extra, s)
		}
	}
	sort.Strings(miss)
	sort.Strings(extra)
	t.Errorf("%s: want %d records, got %d; missing %d %v; unexpected %d %v", what, len(w), len(g),
		len(miss), head(miss, 5), len(extra), head(extra, 5))
}

func head(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "…")
	}
	return s
}

// records makes n distinct payloads.
func records(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d-%s", prefix, i, strings.Repeat("x", i%17))
	}
	return out
}

func init() {
	// A slow shared CI machine: give external clients more time.
	if runtime.NumCPU() <= 2 {
		defaultTimeout = 90 * time.Second
	}
}
