package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"reflect"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/interceptor"
)

// Reload swaps in a new configuration without dropping a connection:
//
//   - the interceptor chain (ics, built from cfg by the caller): requests
//     read from now on run through it; exchanges in flight finish on the
//     generation they started on, which is closed after the last of them;
//   - the client TLS certificate, key and client CA, re-read from their
//     files (new handshakes use them: certificates rotate without restart);
//   - limits.max_versions and the interceptors' version rules;
//   - the bootstrap and SNI listener addresses: a changed one is opened
//     anew and the old one closed; connections accepted on it live on.
//
// Everything else is read once at start. Reload applies what it can and
// returns the keys whose change needs a restart, so the caller can say so.
// On error nothing has changed, and the caller keeps (and closes) ics.
func (s *Server) Reload(cfg config.Config, ics []*interceptor.Interceptor) (restart []string, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lc, err := s.newChain(ics, cfg.Limits.MaxVersions)
	if err != nil {
		return nil, err
	}
	var tc *tls.Config
	if cfg.Listen.TLS.Enabled() {
		if tc, err = serverTLS(cfg.Listen.TLS); err != nil {
			return nil, err
		}
	}
	if err := s.rebind(cfg); err != nil {
		return nil, err
	}
	s.tls.Store(tc)
	old := s.chain.Swap(lc)
	if a := s.apis.Load(); a != nil {
		keys, vt := newVersionTable().clamp(a.broker.ApiKeys, lc.rules)
		s.apis.Store(&apiVersions{broker: a.broker, keys: keys})
		s.vt.Store(vt)
	}
	old.retire()
	return restartOnly(s.cfg, cfg), nil
}

// rebind opens listeners whose address changed and closes the old ones.
func (s *Server) rebind(cfg config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	type bind struct {
		name string
		sni  bool
		old  *string
		new  string
	}
	for _, b := range []bind{
		{"bootstrap", false, &s.cfg.Listen.Bootstrap, cfg.Listen.Bootstrap},
		{"sni", true, &s.cfg.SNI.Listen, cfg.SNI.Listen},
	} {
		if *b.old == b.new {
			continue
		}
		if b.new != "" {
			ln, err := net.Listen("tcp", b.new)
			if err != nil {
				return fmt.Errorf("reopen %s listener on %s: %w", b.name, b.new, err)
			}
			s.listeners = append(s.listeners, ln)
			s.serve(ln, b.name, -1, b.sni)
			s.log.Info("listener opened on reload", "listener", b.name, "addr", ln.Addr().String())
		}
		for i, ln := range s.listeners {
			if ln.Addr().String() == *b.old || addrMatches(ln, *b.old) {
				ln.Close()
				s.listeners = append(s.listeners[:i], s.listeners[i+1:]...)
				s.log.Info("listener closed on reload; its connections live on", "listener", b.name, "addr", *b.old)
				break
			}
		}
		*b.old = b.new
	}
	return nil
}

// addrMatches reports whether ln was opened for addr (which may name port
// 0 or a host name that resolved to ln's address).
func addrMatches(ln net.Listener, addr string) bool {
	want, err := net.ResolveTCPAddr("tcp", addr)
	got, ok := ln.Addr().(*net.TCPAddr)
	return err == nil && ok && want.Port != 0 && want.Port == got.Port && (want.IP == nil || want.IP.Equal(got.IP))
}

// restartOnly lists the configuration keys that differ between a and b and
// take effect only at start.
func restartOnly(a, b config.Config) []string {
	var keys []string
	diff := func(key string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			keys = append(keys, key)
		}
	}
	diff("upstream", a.Upstream, b.Upstream)
	diff("listen.broker_port_base", a.Listen.BrokerPortBase, b.Listen.BrokerPortBase)
	diff("listen.broker_ports", a.Listen.BrokerPorts, b.Listen.BrokerPorts)
	diff("listen.advertise_host", a.Listen.AdvertiseHost, b.Listen.AdvertiseHost)
	diff("sni.host_template", a.SNI.HostTemplate, b.SNI.HostTemplate)
	diff("sni.advertise_port", a.SNI.AdvertisePort, b.SNI.AdvertisePort)
	diff("admin", a.Admin, b.Admin)
	diff("log", a.Log, b.Log)
	la, lb := a.Limits, b.Limits
	la.MaxVersions, lb.MaxVersions = nil, nil
	diff("limits", la, lb)
	return keys
}
