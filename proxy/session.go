package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// session is one client connection and the upstream connection paired with
// it. Two goroutines: the reader takes client frames, runs request hooks and
// forwards upstream; the pump writes responses back in request order, reading
// each from upstream or taking it from a local answer.
type session struct {
	srv      *Server
	ic       *interceptor.Conn
	client   net.Conn
	cr       *bufio.Reader
	cw       *bufio.Writer
	listener string
	node     int32
	up       *upstream // dialed lazily, by the reader
	pending  chan pending
	done     chan struct{} // closed by close
	stopping atomic.Bool   // graceful drain: read no more requests

	closeOnce sync.Once
	closeErr  error
	bytesIn   atomic.Int64 // client → Strait
	bytesOut  atomic.Int64 // Strait → client
	requests  atomic.Int64
	lastID    []byte
	// Re-encoded frames are built in these and copied into the bufio
	// writers at once, so each goroutine reuses its own.
	reqScratch  []byte // reader goroutine
	respScratch []byte // pump goroutine
}

// pending is one request waiting for its response, in order.
type pending struct {
	key, version int16
	corr         int32
	up           *upstream             // nil: answered locally
	x            *interceptor.Exchange // nil: raw passthrough
	decodeResp   bool
	local        []byte // a locally encoded frame (ApiVersions)
	start        time.Time
}

func (s *Server) accept(c net.Conn, listener string, node int32, sni bool) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		c.Close()
		return
	}
	ss := &session{
		srv: s, client: c, listener: listener, node: node,
		pending: make(chan pending, s.cfg.Limits.MaxInFlight),
		done:    make(chan struct{}),
	}
	s.sessions[ss] = struct{}{}
	if b := s.brokers[node]; b != nil && listener != "bootstrap" && listener != "sni" {
		b.conns++
	}
	s.wg.Add(1)
	s.mu.Unlock()
	s.metrics.connsTotal.WithLabelValues(listener).Inc()
	s.metrics.connsActive.WithLabelValues(listener).Inc()
	go func() {
		defer s.wg.Done()
		ss.run(sni)
		s.metrics.connsActive.WithLabelValues(listener).Dec()
		s.mu.Lock()
		delete(s.sessions, ss)
		if b := s.brokers[node]; b != nil && listener != "bootstrap" && listener != "sni" {
			b.conns--
			s.maybeCloseBroker(node, b)
		}
		s.mu.Unlock()
	}()
}

// connError counts and remembers why a connection ended badly.
func (ss *session) fail(reason string, err error) {
	ss.srv.metrics.connErrors.WithLabelValues(reason).Inc()
	ss.close(fmt.Errorf("%s: %w", reason, err))
}

func (ss *session) close(err error) {
	ss.closeOnce.Do(func() {
		ss.closeErr = err
		close(ss.done)
		ss.client.Close()
		if ss.up != nil {
			ss.up.conn.Close()
		}
	})
}

// stopReading begins a graceful drain: no new requests are read, in-flight
// ones complete.
func (ss *session) stopReading() {
	ss.stopping.Store(true)
	_ = ss.client.SetReadDeadline(time.Now())
}

func (ss *session) run(sni bool) {
	s := ss.srv
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if tc, ok := ss.client.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	ss.ic = &interceptor.Conn{
		ID: s.nextID.Add(1), Listener: ss.listener, NodeID: ss.node,
		RemoteAddr: ss.client.RemoteAddr(),
	}
	if s.tls != nil {
		tc := tls.Server(ss.client, s.tls)
		hctx, hcancel := context.WithTimeout(ctx, s.cfg.Upstream.DialTimeout.D())
		err := tc.HandshakeContext(hctx)
		hcancel()
		if err != nil {
			s.metrics.connErrors.WithLabelValues("tls_handshake").Inc()
			s.log.Warn("client TLS handshake failed", "conn", ss.ic.ID, "listener", ss.listener, "remote", ss.ic.RemoteAddr.String(), "err", err)
			ss.client.Close()
			return
		}
		ss.client = tc
		st := tc.ConnectionState()
		ss.ic.TLS, ss.ic.SNI = &st, st.ServerName
		if sni {
			node, ok := s.cfg.SNI.NodeForHost(st.ServerName)
			if !ok {
				s.metrics.connErrors.WithLabelValues("sni_unknown").Inc()
				s.log.Warn("client sent an SNI name that names no route", "conn", ss.ic.ID, "sni", st.ServerName, "remote", ss.ic.RemoteAddr.String())
				ss.client.Close()
				return
			}
			ss.node, ss.ic.NodeID = node, node
		}
	}
	ss.cr = bufio.NewReaderSize(ss.client, 64<<10)
	ss.cw = bufio.NewWriterSize(ss.client, 64<<10)
	s.log.Info("connection opened", "conn", ss.ic.ID, "listener", ss.listener, "node", ss.node, "remote", ss.ic.RemoteAddr.String(), "sni", ss.ic.SNI)
	start := time.Now()

	if err := s.chain.Connect(ctx, ss.ic); err != nil {
		ss.fail("refused", err)
	} else {
		pumpDone := make(chan struct{})
		go func() { defer close(pumpDone); ss.pump(ctx) }()
		ss.read(ctx)
		close(ss.pending)
		<-pumpDone
	}
	ss.close(nil)
	attrs := []any{"conn", ss.ic.ID, "listener", ss.listener, "client_id", ss.ic.ClientID(), "principal", ss.ic.Principal().String(),
		"requests", ss.requests.Load(), "bytes_in", ss.bytesIn.Load(), "bytes_out", ss.bytesOut.Load(), "duration", time.Since(start).String()}
	if ss.closeErr != nil {
		s.log.Warn("connection closed", append(attrs, "err", ss.closeErr.Error())...)
	} else {
		s.log.Info("connection closed", attrs...)
	}
}

// read is the reader goroutine's loop. It returns when the client closes,
// on a fatal error (after ss.fail), or when draining.
func (ss *session) read(ctx context.Context) {
	s := ss.srv
	var buf []byte
	idle := s.cfg.Limits.IdleTimeout.D()
	for {
		if ss.cr.Buffered() == 0 {
			if err := ss.flushUpstream(); err != nil {
				ss.fail("upstream_write", err)
				return
			}
			if ss.stopping.Load() {
				return
			}
			_ = ss.client.SetReadDeadline(time.Now().Add(idle))
		}
		if done, err := ss.spliceRequest(); err != nil {
			ss.fail("upstream_write", err)
			return
		} else if done {
			continue
		}
		frame, err := readFrame(ss.cr, buf, s.cfg.Limits.MaxFrameBytes, minRequestFrame)
		buf = frame
		if err != nil {
			ss.readError(err)
			return
		}
		vt := s.vt.Load()
		h, err := parseReqHeader(frame, vt)
		if err != nil {
			ss.bytesIn.Add(int64(len(frame) + 4))
			ss.fail("malformed", err)
			return
		}
		ss.account(h, len(frame))
		k := apiIndex(h.key)

		if h.key == 18 { // ApiVersions: always Strait's own answer
			local, err := s.answerApiVersions(ctx, h)
			if err != nil {
				ss.fail("not_ready", err)
				return
			}
			if !ss.enqueue(pending{key: h.key, version: h.version, corr: h.corr, local: local, start: time.Now()}) {
				return
			}
			continue
		}
		if !vt.accepts(h.key, h.version) {
			ss.fail("unsupported_api", fmt.Errorf("%s v%d (key %d) is not forwarded by Strait", kmsg.NameForKey(h.key), h.version, h.key))
			return
		}

		acks := int16(-1) // produce with acks=0 gets no response
		if h.key == 0 {
			if a, ok := produceAcks(frame[h.bodyOffset:], h.version); ok {
				acks = a
			}
		}
		p := pending{key: h.key, version: h.version, corr: h.corr}
		reqHooked, respHooked := s.chain.Hooked(h.key, h.version)
		var out []byte // a re-encoded frame, when a hook changed the request
		if reqHooked || respHooked {
			p.x = &interceptor.Exchange{Conn: ss.ic, Key: h.key, Version: h.version, CorrelationID: h.corr}
			p.decodeResp = respHooked
		}
		if reqHooked {
			req := kmsg.RequestForKey(h.key)
			req.SetVersion(h.version)
			if err := req.ReadFrom(frame[h.bodyOffset:]); err != nil {
				ss.fail("malformed", fmt.Errorf("decode %s v%d: %w", kmsg.NameForKey(h.key), h.version, err))
				return
			}
			p.x.Request = req
			// The decoded request aliases this frame: the exchange owns it
			// until done, and the next frame goes into another buffer.
			owned := frame
			p.x.OnDone(func() { putFrame(owned) })
			buf = getFrame()
			if err := s.chain.Request(ctx, p.x); err != nil {
				ss.hookError(err)
				return
			}
			if p.x.Response != nil {
				s.metrics.localAnswers[k].Inc()
				if acks == 0 {
					p.x.Done()
					continue // the client expects no answer
				}
				p.start = time.Now()
				if !ss.enqueue(p) {
					return
				}
				continue
			}
			if p.x.RequestModified() {
				ss.reqScratch = appendRequestFrame(ss.reqScratch[:0], h, req)
				out = ss.reqScratch
			}
		}
		if ss.up == nil {
			if err := ss.dial(ctx); err != nil {
				return
			}
		}
		if err := ss.forward(frame, out); err != nil {
			ss.fail("upstream_write", err)
			return
		}
		if acks == 0 {
			if p.x != nil {
				p.x.Done()
			}
			continue // no response will come
		}
		p.up, p.start = ss.up, time.Now()
		if len(ss.pending) == cap(ss.pending) {
			if err := ss.flushUpstream(); err != nil {
				ss.fail("upstream_write", err)
				return
			}
		}
		if !ss.enqueue(p) {
			return
		}
	}
}

func (ss *session) enqueue(p pending) bool {
	select {
	case ss.pending <- p:
		return true
	case <-ss.done:
		return false
	}
}

func (ss *session) forward(frame, out []byte) error {
	w := ss.up.w
	if out != nil {
		_, err := w.Write(out)
		return err
	}
	if err := writeSize(w, len(frame)); err != nil {
		return err
	}
	_, err := w.Write(frame)
	return err
}

func (ss *session) flushUpstream() error {
	if ss.up == nil || ss.up.w.Buffered() == 0 {
		return nil
	}
	return ss.up.w.Flush()
}

func (ss *session) readError(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		// The client hung up (or we closed): nobody is left to read the
		// responses of in-flight requests, so stop now.
		ss.close(nil)
	case ss.stopping.Load():
		// Draining.
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		ss.fail("idle_timeout", err)
	case errors.Is(err, errFrameTooLarge):
		ss.fail("frame_too_large", err)
	case errors.Is(err, errTLSOnPlain):
		ss.fail("tls_on_plaintext", err)
	case errors.Is(err, errMalformed):
		ss.fail("malformed", err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		ss.fail("truncated", err)
	default:
		ss.fail("read", err)
	}
}

func (ss *session) hookError(err error) {
	if errors.Is(err, interceptor.ErrClose) {
		ss.srv.metrics.connErrors.WithLabelValues("interceptor").Inc()
		ss.close(nil)
		return
	}
	ss.fail("interceptor", err)
}

// dial opens the upstream connection for this session's route and runs the
// upstream hooks on it before any client request is forwarded.
func (ss *session) dial(ctx context.Context) error {
	s := ss.srv
	addr, ok := s.upstreamAddr(ss.node)
	if !ok {
		s.metrics.dialErrors.WithLabelValues(fmt.Sprint(ss.node)).Inc()
		ss.fail("upstream_dial", fmt.Errorf("no known upstream address for node %d", ss.node))
		return errors.New("no route")
	}
	c, err := s.dialer.dial(ctx, addr)
	if err != nil {
		s.metrics.dialErrors.WithLabelValues(fmt.Sprint(ss.node)).Inc()
		ss.fail("upstream_dial", fmt.Errorf("dial %s: %w", addr, err))
		return err
	}
	up := newUpstream(c, addr, ss.node, s.vt.Load())
	select {
	case <-ss.done: // closed while dialing
		c.Close()
		return errors.New("closed")
	default:
	}
	ss.up = up
	hctx, cancel := context.WithTimeout(ctx, s.cfg.Upstream.DialTimeout.D())
	defer cancel()
	if err := s.chain.Upstream(hctx, ss.ic, up); err != nil {
		s.metrics.dialErrors.WithLabelValues(fmt.Sprint(ss.node)).Inc()
		ss.hookError(err)
		return err
	}
	return nil
}

// pump writes responses to the client in request order.
func (ss *session) pump(ctx context.Context) {
	s := ss.srv
	var buf []byte
	for p := range ss.pending {
		var out []byte   // what to write
		prefixed := true // out carries its own size prefix
		k := apiIndex(p.key)
		switch {
		case p.local != nil:
			out = p.local
		case p.up == nil: // a request hook answered
			if err := s.chain.Response(ctx, p.x); err != nil {
				ss.hookError(err)
				return
			}
			ss.respScratch = appendResponseFrame(ss.respScratch[:0], p.corr, p.x.Response)
			out = ss.respScratch
		default:
			if n, err := ss.spliceResponse(p); err != nil {
				ss.fail("upstream_read", err)
				return
			} else if n > 0 {
				s.metrics.latency[k].Observe(time.Since(p.start).Seconds())
				s.metrics.respBytes[k].Add(float64(n))
				ss.bytesOut.Add(int64(n))
				continue
			}
			frame, err := readFrame(p.up.r, buf, s.cfg.Limits.MaxFrameBytes, minResponseFrame)
			buf = frame
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
					ss.fail("upstream_closed", err)
				} else {
					ss.fail("upstream_read", err)
				}
				return
			}
			s.metrics.latency[k].Observe(time.Since(p.start).Seconds())
			if got := int32(binary.BigEndian.Uint32(frame)); got != p.corr {
				ss.fail("upstream_protocol", fmt.Errorf("response correlation id %d, expected %d (%s)", got, p.corr, kmsg.NameForKey(p.key)))
				return
			}
			if p.decodeResp {
				o, err := ss.responseHooks(ctx, p, frame)
				if err != nil {
					return
				}
				out = o
			}
			if out == nil {
				if err := writeSize(ss.cw, len(frame)); err != nil {
					ss.close(nil)
					return
				}
				out, prefixed = frame, false
			}
		}
		n := len(out)
		if !prefixed {
			n += 4
		}
		s.metrics.respBytes[k].Add(float64(n))
		ss.bytesOut.Add(int64(n))
		if _, err := ss.cw.Write(out); err != nil {
			ss.close(nil)
			return
		}
		if p.x != nil {
			p.x.Done() // out is in the writer: hooks may recycle their buffers
		}
		if len(ss.pending) == 0 {
			if err := ss.cw.Flush(); err != nil {
				ss.close(nil)
				return
			}
		}
	}
	_ = ss.cw.Flush()
}

// responseHooks decodes a response, runs the chain, and returns a re-encoded
// frame if some hook changed it (nil: forward the original bytes).
func (ss *session) responseHooks(ctx context.Context, p pending, frame []byte) ([]byte, error) {
	kresp := kmsg.ResponseForKey(p.key)
	kresp.SetVersion(p.version)
	off, ok := responseBodyOffset(frame, p.key, kresp.IsFlexible())
	if !ok {
		ss.fail("malformed_response", errMalformed)
		return nil, errMalformed
	}
	if err := kresp.ReadFrom(frame[off:]); err != nil {
		err = fmt.Errorf("decode %s v%d response: %w", kmsg.NameForKey(p.key), p.version, err)
		ss.fail("malformed_response", err)
		return nil, err
	}
	p.x.Response = kresp
	if err := ss.srv.chain.Response(ctx, p.x); err != nil {
		ss.hookError(err)
		return nil, err
	}
	if !p.x.ResponseModified() {
		return nil, nil
	}
	ss.respScratch = appendResponseFrame(ss.respScratch[:0], p.corr, kresp)
	return ss.respScratch, nil
}

// account counts one request of n bytes (without its size prefix) and
// follows the client id.
func (ss *session) account(h reqHeader, n int) {
	m := ss.srv.metrics
	k := apiIndex(h.key)
	m.requests[k].Inc()
	m.reqBytes[k].Add(float64(n + 4))
	ss.bytesIn.Add(int64(n + 4))
	ss.requests.Add(1)
	if !bytes.Equal(h.clientID, ss.lastID) {
		ss.lastID = append(ss.lastID[:0], h.clientID...)
		ss.ic.SetClientID(string(h.clientID))
	}
}

func apiName(key int16) string { return kmsg.NameForKey(key) }
