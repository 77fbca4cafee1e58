package chaos

import (
	"bytes"
	"fmt"
	"io"
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

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/strait-proxy/strait/internal/promtext"
	"github.com/strait-proxy/strait/internal/straitbin"
)

// straitBin is the binary under test (straitbin.Get in TestChaos).
var straitBin string

func TestMain(m *testing.M) {
	code := m.Run()
	straitbin.Cleanup()
	os.Exit(code)
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago (all listeners held open together so none repeats).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out
}

// listenRetry listens on addr, retrying briefly: a port just released (a
// killed process, a closed kfake broker) is normally reusable at once, but
// the kernel may take a moment.
func listenRetry(addr string) (net.Listener, error) {
	var err error
	for i := 0; i < 100; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, err
}

// ---------------------------------------------------------------- kfake

// trackedListener remembers the connections it accepted so that killing a
// broker also cuts the clients already connected to it (kfake's RemoveNode
// only closes the listener).
type trackedListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	killed bool
}

type trackedConn struct {
	net.Conn
	l    *trackedListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c.Conn)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns[c] = struct{}{}
	return &trackedConn{Conn: c, l: l}, nil
}

// kill closes the listener and every connection it accepted.
func (l *trackedListener) kill() {
	l.mu.Lock()
	l.killed = true
	for c := range l.conns {
		c.Close()
	}
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	l.Listener.Close()
}

// cluster is a 3-broker kfake cluster on fixed ports with its state on disk
// (DataDir), so that brokers can be killed and come back on the same port
// and the whole cluster can be shut down and started again with its data.
type cluster struct {
	dir    string
	ports  []int
	topics []string

	mu  sync.Mutex
	c   *kfake.Cluster
	lns map[int]*trackedListener // by port
}

func newCluster(dir string, ports []int, topics []string) (*cluster, error) {
	k := &cluster{dir: dir, ports: ports, topics: topics, lns: map[int]*trackedListener{}}
	return k, k.start(true)
}

func (k *cluster) listen(network, addr string) (net.Listener, error) {
	ln, err := listenRetry(addr)
	if err != nil {
		return nil, err
	}
	tl := &trackedListener{Listener: ln, conns: map[net.Conn]struct{}{}}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	k.mu.Lock()
	k.lns[port] = tl
	k.mu.Unlock()
	return tl, nil
}

func (k *cluster) start(seed bool) error {
	opts := []kfake.Opt{
		kfake.NumBrokers(len(k.ports)), kfake.Ports(k.ports...), kfake.ListenFn(k.listen),
		kfake.DataDir(k.dir), kfake.AllowAutoTopicCreation(),
	}
	if seed {
		opts = append(opts, kfake.SeedTopics(3, k.topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.c = c
	k.mu.Unlock()
	return nil
}

// Addrs are the brokers' addresses (stable across restarts).
func (k *cluster) Addrs() []string {
	out := make([]string, len(k.ports))
	for i, p := range k.ports {
		out[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return out
}

func (k *cluster) current() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c
}

func (k *cluster) cutPort(port int) {
	k.mu.Lock()
	tl := k.lns[port]
	k.mu.Unlock()
	if tl != nil {
		tl.kill()
	}
}

// killNode removes broker node (its listener and every connection to it);
// its partitions move to the others.
func (k *cluster) killNode(node int32) error {
	if err := k.current().RemoveNode(node); err != nil {
		return err
	}
	k.cutPort(k.ports[node])
	return nil
}

// restoreNode brings node back on its port.
func (k *cluster) restoreNode(node int32) error {
	_, _, err := k.current().AddNode(node, k.ports[node])
	return err
}

// restart shuts the whole cluster down (kfake persists its state to the
// data directory), cuts every connection, and starts it again from disk on
// the same ports.
func (k *cluster) restart(down time.Duration) error {
	k.current().Close()
	for _, p := range k.ports {
		k.cutPort(p)
	}
	time.Sleep(down)
	return k.start(false)
}

func (k *cluster) Close() { k.current().Close() }

// ---------------------------------------------------------------- strait

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

// strait is one Strait (the real binary), restartable on the same ports.
type strait struct {
	name      string
	args      []string
	env       []string
	Bootstrap string
	Base      int
	Admin     string
	out       *syncBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
}

func newStrait(t testing.TB, name string, upstream []string, env []string, extra ...string) *strait {
	ports := freePorts(t, 2)
	s := &strait{
		name:      name,
		env:       env,
		Bootstrap: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		Admin:     net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])),
		out:       &syncBuffer{},
	}
	s.Base = freeBase(t, 3)
	s.args = append([]string{"run", "--upstream", strings.Join(upstream, ","), "--admin-listen", s.Admin,
		"--listen", s.Bootstrap, "--broker-port-base", strconv.Itoa(s.Base), "--advertise-host", "127.0.0.1"}, extra...)
	t.Cleanup(func() {
		s.stop(t)
		out := s.out.String()
		if d := os.Getenv("STRAIT_CHAOS_LOGDIR"); d != "" {
			p := filepath.Join(d, "strait-"+s.name+".log")
			if err := os.WriteFile(p, []byte(out), 0o644); err == nil {
				t.Logf("%s strait output (all %d processes): %s", s.name, s.starts, p)
			}
		}
		if t.Failed() || os.Getenv("STRAIT_CHAOS_LOG") == "1" {
			if i := strings.Index(out, `"panic"`); i >= 0 {
				j := strings.LastIndexByte(out[:i], '\n') + 1
				t.Logf("---- %s strait: first panic logged ----\n%s\n----", s.name, out[j:min(len(out), i+6000)])
			}
			t.Logf("---- %s strait output ----\n%s---- end of %s strait output ----", s.name, tail(out, 20000), s.name)
		}
	})
	return s
}

// freeBase returns base such that base..base+n-1 are free.
func freeBase(t testing.TB, n int) int {
	t.Helper()
	for i := 0; i < 200; i++ {
		p := freePorts(t, 1)[0]
		if p+n > 65535 {
			continue
		}
		ok := true
		var lns []net.Listener
		for j := 0; j < n && ok; j++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+j)))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		for _, l := range lns {
			l.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no free port range")
	return 0
}

func (s *strait) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.starts++
	fmt.Fprintf(s.out, "==== %s start #%d at %s ====\n", s.name, s.starts, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(straitBin, s.args...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	return nil
}

func (s *strait) proc() (*exec.Cmd, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd, s.exited
}

// Running reports whether the current process is alive.
func (s *strait) Running() bool {
	_, exited := s.proc()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// kill SIGKILLs the process and waits for it.
func (s *strait) kill() {
	cmd, exited := s.proc()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// stop sends SIGTERM, then SIGKILL after 10s.
func (s *strait) stop(t testing.TB) {
	cmd, exited := s.proc()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("%s strait did not exit within 10s of SIGTERM; killing it", s.name)
		cmd.Process.Kill()
		<-exited
	}
}

func (s *strait) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		if !s.Running() {
			return fmt.Errorf("%s strait exited before it was ready", s.name)
		}
		code, body, err := s.get("/readyz")
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
	return fmt.Errorf("%s strait: /readyz not 200 after %v (last: %s)", s.name, d, last)
}

func (s *strait) get(path string) (int, string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + s.Admin + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(b), nil
}

// metrics scrapes /metrics.
func (s *strait) metrics() (metrics, error) {
	code, body, err := s.get("/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", code)
	}
	return promtext.Parse(body), nil
}

// metrics are the samples of one /metrics scrape.
type metrics = promtext.Samples

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// ---------------------------------------------------------------- network cut

// forwarder relays TCP connections from its own 127.0.0.1 port to target.
// cut(true) takes the path down: the port refuses connections and every
// relayed connection is reset; cut(false) brings it back on the same port.
// It stands for a network outage between one Strait and its KMS.
type forwarder struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	down  bool
}

func newForwarder(target string) (*forwarder, error) {
	f := &forwarder{target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.addr = ln.Addr().String()
	f.ln = ln
	go f.serve(ln)
	return f, nil
}

func (f *forwarder) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go f.relay(c)
	}
}

func (f *forwarder) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return false
	}
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *forwarder) relay(c net.Conn) {
	u, err := net.DialTimeout("tcp", f.target, 3*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !f.track(c, u) {
		c.Close()
		u.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); done <- struct{}{} }()
	go func() { io.Copy(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, u)
	f.mu.Unlock()
}

func (f *forwarder) cut(down bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if down == f.down {
		return nil
	}
	f.down = down
	if down {
		f.ln.Close()
		for c := range f.conns {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
		}
		f.conns = map[net.Conn]struct{}{}
		return nil
	}
	ln, err := listenRetry(f.addr)
	if err != nil {
		return err
	}
	f.ln = ln
	go f.serve(ln)
	return nil
}

func (f *forwarder) Close() { f.cut(true) }
