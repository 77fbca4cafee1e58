// Package proxy is Strait's data path: listeners (a bootstrap port plus one
// port per broker, or one TLS port routed by SNI), client sessions paired with
// upstream broker connections, framing, and the interceptor chain.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/semaphore"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/burstlog"
	"github.com/strait-proxy/strait/metadata"
	"github.com/strait-proxy/strait/topicid"
)

// Server is one Strait instance.
type Server struct {
	cfg     config.Config
	log     *slog.Logger
	metrics *Metrics
	chain   atomic.Pointer[liveChain] // swapped whole by Reload
	dialer  *dialer
	cluster *kgo.Client // Strait's own requests: broker list, topic ids
	topics  *topicid.Names
	tls     atomic.Pointer[tls.Config] // towards clients; nil for plaintext; swapped by Reload
	meta    *interceptor.Interceptor   // the built-in metadata interceptor, first in every chain

	advHost string // host put into rewritten metadata (port mode)
	sniPort int32  // advertised port (SNI mode)

	vt    atomic.Pointer[versionTable] // accepted versions, once the cluster answered
	apis  atomic.Pointer[apiVersions]  // what Strait answers to ApiVersions
	ready atomic.Bool

	budget   *semaphore.Weighted // limits.max_buffered_bytes, for client frames
	held     atomic.Int64        // bytes of it taken now
	limitLog *burstlog.Logger

	mu        sync.Mutex
	upstreams map[int32]string          // node id -> advertised upstream host:port
	brokers   map[int32]*brokerListener // port mode only
	listeners []net.Listener            // bootstrap and SNI
	sessions  map[*session]struct{}
	closing   bool
	nextID    atomic.Uint64
	bootRR    atomic.Uint32
	wg        sync.WaitGroup
}

type brokerListener struct {
	ln    net.Listener
	port  int
	conns int  // open client sessions
	gone  bool // node no longer in metadata: close once conns reach 0
}

// Options are what a Server needs beyond its config.
type Options struct {
	Logger *slog.Logger
	// Registerer receives the proxy's metrics; nil means a private registry.
	Registerer prometheus.Registerer
	// Interceptors run after the built-in metadata interceptor, in order.
	Interceptors []*interceptor.Interceptor
	// Topics, if set, is fed with topic ids from the metadata flowing
	// through (encryption needs it for Produce/Fetch v13+).
	Topics *topicid.Names
}

// New validates cfg and builds a Server. Call Run to serve.
func New(cfg config.Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	d, err := newDialer(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: log, metrics: NewMetrics(reg), dialer: d,
		topics:    opts.Topics,
		upstreams: make(map[int32]string),
		brokers:   make(map[int32]*brokerListener),
		sessions:  make(map[*session]struct{}),
		budget:    semaphore.NewWeighted(cfg.Limits.MaxBufferedBytes),
		limitLog:  burstlog.New(log),
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strait_frame_budget_bytes", Help: "Bytes of limits.max_buffered_bytes held now by client frames being read or kept by interceptors.",
	}, func() float64 { return float64(s.held.Load()) }))
	if s.topics == nil {
		s.topics = topicid.New()
	}
	// Topic ids are resolvable from the first request on: the lookup is in
	// place before any listener opens.
	if s.cluster, err = s.newClusterClient(); err != nil {
		return nil, fmt.Errorf("cluster client: %w", err)
	}
	s.topics.SetCluster(s.cluster)
	if cfg.Listen.TLS.Enabled() {
		tc, err := serverTLS(cfg.Listen.TLS)
		if err != nil {
			return nil, err
		}
		s.tls.Store(tc)
	}
	if cfg.Listen.Bootstrap != "" {
		h, _, _ := net.SplitHostPort(cfg.Listen.Bootstrap)
		s.advHost = cfg.Listen.AdvertiseHost
		if s.advHost == "" {
			s.advHost = h
		}
	}
	s.meta = metadata.New(s, s.topics)
	lc, err := s.newChain(opts.Interceptors, cfg.Limits.MaxVersions)
	if err != nil {
		return nil, err
	}
	s.chain.Store(lc)
	s.vt.Store(newVersionTable())
	if cfg.Upstream.TLS.InsecureSkipVerify {
		log.Warn("upstream TLS certificate verification is OFF (upstream.tls.insecure_skip_verify): anyone on the path can impersonate the brokers")
	}
	return s, nil
}

// release gives n bytes back to the frame budget.
func (s *Server) release(n int64) {
	if n > 0 {
		s.held.Add(-n)
		s.budget.Release(n)
	}
}

// Topics is the topic id→name map fed by the metadata flowing through.
func (s *Server) Topics() *topicid.Names { return s.topics }

// Ready reports whether Strait has fetched upstream metadata and can serve.
func (s *Server) Ready() bool { return s.ready.Load() }

// Addr returns the bound bootstrap address (port mode) or SNI address, once
// Run has started listening.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.listeners) == 0 {
		return ""
	}
	return s.listeners[0].Addr().String()
}

func serverTLS(c config.ServerTLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("listen.tls: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("listen.tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("listen.tls.client_ca_file: no certificates in %s", c.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Listen opens the bootstrap and SNI listeners. It is separate from Run so
// that callers (tests, the demo) know the bound addresses before serving.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.Listen.Bootstrap != "" {
		ln, err := net.Listen("tcp", s.cfg.Listen.Bootstrap)
		if err != nil {
			return fmt.Errorf("listen.bootstrap: %w", err)
		}
		s.listeners = append(s.listeners, ln)
		s.serve(ln, "bootstrap", -1, false)
	}
	if s.cfg.SNI.Listen != "" {
		ln, err := net.Listen("tcp", s.cfg.SNI.Listen)
		if err != nil {
			return fmt.Errorf("sni.listen: %w", err)
		}
		s.sniPort = int32(s.cfg.SNI.AdvertisePort)
		if s.sniPort == 0 {
			s.sniPort = int32(ln.Addr().(*net.TCPAddr).Port)
		}
		s.listeners = append(s.listeners, ln)
		s.serve(ln, "sni", -1, true)
	}
	return nil
}

// Run serves until ctx is done, then drains: it stops accepting, lets
// in-flight requests finish (up to limits.drain_timeout), and closes.
func (s *Server) Run(ctx context.Context) error {
	if s.Addr() == "" {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	go s.watchCluster(ctx)
	<-ctx.Done()
	s.drain()
	return nil
}

func (s *Server) drain() {
	s.mu.Lock()
	s.closing = true
	for _, ln := range s.listeners {
		ln.Close()
	}
	for _, b := range s.brokers {
		b.ln.Close()
	}
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	s.log.Info("draining", "sessions", len(sessions), "timeout", s.cfg.Limits.DrainTimeout.D().String())
	for _, ss := range sessions {
		ss.stopReading()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.Limits.DrainTimeout.D()):
		s.mu.Lock()
		for ss := range s.sessions {
			ss.close(errors.New("drain timeout"))
		}
		s.mu.Unlock()
		<-done
	}
	s.chain.Load().retire()
	s.log.Info("drained")
}

// serve accepts on ln in its own goroutine. Called with s.mu held.
func (s *Server) serve(ln net.Listener, name string, node int32, sni bool) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return // closed
			}
			s.accept(c, name, node, sni)
		}
	}()
}

// Advertise implements metadata.Mapper: it records where node id lives
// upstream and returns the address the client on c is given: the node's SNI
// name for clients of the SNI listener, its mapped port otherwise. In port
// mode it opens the node's listener on first sight (also when c is nil: the
// cluster watcher's own metadata).
func (s *Server) Advertise(c *interceptor.Conn, node int32, host string, port int32) (string, int32, error) {
	if node < 0 {
		return "", 0, fmt.Errorf("broker with negative node id %d", node)
	}
	up := net.JoinHostPort(host, strconv.Itoa(int(port)))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upstreams[node] = up
	portMode := s.cfg.Listen.Bootstrap != ""
	var b *brokerListener
	if portMode {
		var err error
		if b, err = s.brokerListener(node, up); err != nil {
			return "", 0, err
		}
	}
	if s.cfg.SNI.Listen != "" && (!portMode || c != nil && c.Listener == "sni") {
		return s.cfg.SNI.SNIHost(node), s.sniPort, nil
	}
	return s.advHost, int32(b.port), nil
}

// brokerListener returns node's listener, opening it if needed. s.mu held.
func (s *Server) brokerListener(node int32, up string) (*brokerListener, error) {
	b := s.brokers[node]
	if b == nil {
		if s.closing {
			return nil, errors.New("shutting down")
		}
		port := s.cfg.Listen.BrokerPort(node)
		if port <= 0 || port > 65535 {
			return nil, fmt.Errorf("broker %d: listener port %d out of range (broker_port_base %d + node id); set listen.broker_ports.%d", node, port, s.cfg.Listen.BrokerPortBase, node)
		}
		h, _, _ := net.SplitHostPort(s.cfg.Listen.Bootstrap)
		ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("open listener for broker %d: %w", node, err)
		}
		b = &brokerListener{ln: ln, port: port}
		s.brokers[node] = b
		s.metrics.listeners.Inc()
		s.serve(ln, "broker-"+strconv.Itoa(int(node)), node, false)
		s.log.Info("broker listener opened", "node", node, "addr", ln.Addr().String(), "upstream", up)
	}
	b.gone = false
	return b, nil
}

// upstreamAddr is where node lives; the bootstrap route (-1) rotates over
// the configured bootstrap servers.
func (s *Server) upstreamAddr(node int32) (string, bool) {
	if node < 0 {
		bs := s.cfg.Upstream.Bootstrap
		return bs[int(s.bootRR.Add(1))%len(bs)], true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.upstreams[node]
	return a, ok
}

// forget marks nodes absent from a full metadata answer; their listeners
// close once their last connection ends.
func (s *Server) forget(present map[int32]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for node, b := range s.brokers {
		if present[node] {
			continue
		}
		if !b.gone {
			s.log.Info("broker left the cluster; its listener closes when its connections end", "node", node, "open_connections", b.conns)
		}
		b.gone = true
		s.maybeCloseBroker(node, b)
	}
}

// maybeCloseBroker closes a departed node's listener once idle. s.mu held.
func (s *Server) maybeCloseBroker(node int32, b *brokerListener) {
	if b.gone && b.conns == 0 {
		b.ln.Close()
		delete(s.brokers, node)
		s.metrics.listeners.Dec()
		s.log.Info("broker listener closed", "node", node)
	}
}

// liveChain is one generation of the interceptor chain and the version
// rules its interceptors imply. An exchange holds a reference from its
// request to its response, so it runs both through one generation; a chain
// that Reload replaced is closed once the last exchange using it is done.
type liveChain struct {
	*interceptor.Chain
	rules     versionRules
	refs      atomic.Int64
	retired   atomic.Bool
	closeOnce sync.Once
}

// newChain builds a generation: the metadata interceptor, then ics; maxVersions
// is limits.max_versions.
func (s *Server) newChain(ics []*interceptor.Interceptor, maxVersions map[string]int16) (*liveChain, error) {
	all := append([]*interceptor.Interceptor{s.meta}, ics...)
	ch, err := interceptor.NewChain(all...)
	if err != nil {
		return nil, err
	}
	caps := make(map[int16]int16, len(maxVersions))
	for name, v := range maxVersions {
		k, _ := config.APIKey(name) // validated
		caps[k] = v
	}
	rules, err := rulesFor(caps, all)
	if err != nil {
		return nil, err
	}
	return &liveChain{Chain: ch, rules: rules}, nil
}

// acquireChain returns the current chain with a reference taken; the
// caller calls release when its exchange is done.
func (s *Server) acquireChain() *liveChain {
	for {
		c := s.chain.Load()
		c.refs.Add(1)
		if !c.retired.Load() {
			return c
		}
		c.release() // swapped under us: take the new one
	}
}

func (c *liveChain) release() {
	if c.refs.Add(-1) == 0 && c.retired.Load() {
		c.close()
	}
}

// retire marks c replaced; it closes now if no exchange holds it.
func (c *liveChain) retire() {
	c.retired.Store(true)
	if c.refs.Load() == 0 {
		c.close()
	}
}

// close releases the interceptors of this generation, except the built-in
// metadata interceptor, which every generation shares.
func (c *liveChain) close() {
	c.closeOnce.Do(func() {
		for _, ic := range c.Interceptors()[1:] {
			if ic.Close != nil {
				_ = ic.Close()
			}
		}
	})
}
