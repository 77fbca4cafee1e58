package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/config"
)

// dialer opens upstream connections: plain TCP or TLS, directly or through
// one private-link endpoint that routes by SNI.
type dialer struct {
	endpoint string      // "" dials each broker's own address
	tls      *tls.Config // nil: plaintext
	timeout  time.Duration
}

func newDialer(c config.Upstream) (*dialer, error) {
	d := &dialer{endpoint: c.Endpoint, timeout: c.DialTimeout.D()}
	if !c.TLS.Enabled {
		return d, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.TLS.InsecureSkipVerify} //nolint:gosec // opt-in, warned at start
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream.tls.ca_file: no certificates in %s", c.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	d.tls = tc
	return d, nil
}

// dial connects to the broker advertised as addr (host:port). With an
// endpoint, the TCP connection goes to the endpoint and addr's host becomes
// the TLS server name, which the endpoint routes by and the certificate is
// verified against.
func (d *dialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	target := addr
	if d.endpoint != "" {
		target = d.endpoint
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if d.tls == nil {
		return c, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		c.Close()
		return nil, err
	}
	cfg := d.tls.Clone()
	cfg.ServerName = host
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls handshake with %s (via %s): %w", addr, target, err)
	}
	return tc, nil
}

// upstream is one broker connection owned by one client session.
type upstream struct {
	addr string
	node int32
	conn net.Conn
	r    lazyReader   // responses: the pump (or RoundTrip, before any client request)
	w    lazyWriter   // requests: the reader goroutine
	corr atomic.Int32 // correlation ids for Strait's own requests (hooks)
	vt   *versionTable
	// maxFrame bounds responses to Strait's own requests (limits.max_frame_bytes).
	maxFrame int32
	// lifetime is the KIP-368 session lifetime the broker announced in the
	// last successful SaslAuthenticate of Strait's own (reauth.go).
	lifetime time.Duration
}

func newUpstream(conn net.Conn, addr string, node int32, vt *versionTable, maxFrame int32) *upstream {
	return &upstream{
		addr: addr, node: node, conn: conn, vt: vt, maxFrame: maxFrame,
		r: lazyReader{c: conn},
		w: lazyWriter{c: conn},
	}
}

// ServerName is the broker host the connection stands for.
func (u *upstream) ServerName() string {
	h, _, _ := net.SplitHostPort(u.addr)
	return h
}

// RoundTrip sends one request of Strait's own on a connection no client
// request has used yet (interceptor.UpstreamHook: SASL, ApiVersions), or
// one whose client requests are paused with nothing in flight (OnReauth,
// reauth.go).
func (u *upstream) RoundTrip(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = u.conn.SetDeadline(dl)
		defer u.conn.SetDeadline(time.Time{})
	}
	corr := u.corr.Add(1) | 1<<30 // far from client ids, for readable captures
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("strait"))
	frame := f.AppendRequest(nil, req, corr)
	if _, err := u.w.get().Write(frame); err != nil {
		return nil, err
	}
	if err := u.w.get().Flush(); err != nil {
		return nil, err
	}
	body, err := readFrame(u.r.get(), nil, u.maxFrame, minResponseFrame)
	if err != nil {
		return nil, err
	}
	if got := int32(binary.BigEndian.Uint32(body)); got != corr {
		return nil, fmt.Errorf("upstream answered correlation id %d, want %d", got, corr)
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	off, ok := responseBodyOffset(body, req.Key(), resp.IsFlexible())
	if !ok {
		return nil, errMalformed
	}
	if err := resp.ReadFrom(body[off:]); err != nil {
		return nil, fmt.Errorf("decode %s response: %w", kmsg.NameForKey(req.Key()), err)
	}
	u.noteLifetime(resp)
	return resp, nil
}
