// Package straittest starts real things for tests: an in-process kfake
// cluster and an in-process Strait in front of it.
package straittest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/proxy"

	"github.com/strait-proxy/strait/internal/freeport"
)

// Cluster starts a kfake cluster (3 brokers unless opts say otherwise) and
// closes it at cleanup.
func Cluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3), kfake.AllowAutoTopicCreation()}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// FreePortBase returns a port p such that p..p+n-1 are free on 127.0.0.1
// right now.
func FreePortBase(t testing.TB, n int) int {
	t.Helper()
	base, err := freeport.Base(n)
	Must(t, err, "free ports")
	return base
}

// Strait is a running in-process Strait.
type Strait struct {
	*proxy.Server
	Bootstrap string
	PortBase  int
	Registry  *prometheus.Registry
	Config    config.Config // as started (Reload takes a whole config)
	cancel    context.CancelFunc
	done      chan struct{}
}

// Stop drains and stops it (also done at cleanup).
func (s *Strait) Stop() {
	s.cancel()
	<-s.done
}

// Start runs Strait in front of upstream (bootstrap host:ports) with a
// port-mapped listener on 127.0.0.1. mutate may adjust the config.
func Start(t testing.TB, upstream []string, ics []*interceptor.Interceptor, mutate func(*config.Config)) *Strait {
	t.Helper()
	return StartOpts(t, upstream, proxy.Options{Interceptors: ics}, mutate)
}

// StartOpts is Start with proxy options (interceptors, the shared topic-name
// map); Logger and Registerer are filled in.
func StartOpts(t testing.TB, upstream []string, opts proxy.Options, mutate func(*config.Config)) *Strait {
	t.Helper()
	base := FreePortBase(t, 11)
	cfg := config.Default()
	cfg.Upstream.Bootstrap = upstream
	cfg.Listen.Bootstrap = "127.0.0.1:" + strconv.Itoa(base+10)
	cfg.Listen.BrokerPortBase = base
	cfg.Upstream.MetadataRefresh = config.Duration(500 * time.Millisecond)
	cfg.Limits.DrainTimeout = config.Duration(5 * time.Second)
	if mutate != nil {
		mutate(&cfg)
	}
	level := slog.LevelWarn
	if os.Getenv("STRAIT_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
	reg := prometheus.NewRegistry()
	opts.Logger, opts.Registerer = log, reg
	srv, err := proxy.New(cfg, opts)
	if err != nil {
		t.Fatalf("strait: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatalf("strait listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Strait{Server: srv, Bootstrap: srv.Addr(), PortBase: base, Registry: reg, Config: cfg, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(s.done); _ = srv.Run(ctx) }()
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(15 * time.Second)
	for !srv.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("strait did not become ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// Must fails the test on err.
func Must(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}

// Counter sums the samples of counter metric name whose labels include all
// of want (pairs: name, value).
func Counter(t testing.TB, g prometheus.Gatherer, name string, want ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	Must(t, err, "gather")
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(want); i += 2 {
				ok := false
				for _, l := range m.GetLabel() {
					if l.GetName() == want[i] && l.GetValue() == want[i+1] {
						ok = true
					}
				}
				if !ok {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
