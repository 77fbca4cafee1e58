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
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/interceptor/errresp"
)

// session is one client connection and the upstream connection paired with
// it. Two goroutines: the reader takes client frames, runs request hooks and
// forwards upstream; the pump writes responses back in request order, reading
// each from upstream or taking it from a local answer.
type session struct {
	srv      *Server
	ic       *interceptor.Conn
	client   net.Conn
	cr       *bufio.Reader // ss.crl's reader while the reader goroutine has data
	crl      lazyReader
	cwl      lazyWriter // the pump's, to the client
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
	// Re-encoded frames are built in these and written to the bufio
	// writers at once, so each goroutine reuses its own.
	reqFrames   reencoded // reader goroutine
	respScratch []byte    // pump goroutine
	// Write deadlines, each refreshed by the one goroutine that writes
	// that socket: the pump writes the client, the reader the upstream.
	clientWD, upWD writeDeadline
	cur            *interceptor.Exchange // the pump's current exchange
	endErr         error                 // why the reader ended a session it left for the pump to finish
	inFrame        bool                  // the reader has a frame's size, not yet its body
	reauth         reauthState           // KIP-368 upstream re-authentication (reauth.go)
}

// pending is one request waiting for its response, in order.
type pending struct {
	key, version int16
	corr         int32
	up           *upstream             // nil: answered locally
	x            *interceptor.Exchange // nil: raw passthrough
	chain        *liveChain            // the generation x runs through; referenced until x is done
	decodeResp   bool
	parts        int    // > 1: a split request, answered by this many upstream responses (Exchange.Split)
	local        []byte // a locally encoded frame (ApiVersions)
	idle         bool   // no request: the client went idle, the pump drops its frame buffers
	start        time.Time
}

func (s *Server) accept(c net.Conn, listener string, node int32, sni bool) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		c.Close()
		return
	}
	if len(s.sessions) >= s.cfg.Limits.MaxConnections {
		s.mu.Unlock()
		c.Close()
		s.metrics.connErrors.WithLabelValues("connection_limit").Inc()
		s.limitLog.Warn("connection refused: limits.max_connections reached", "max_connections", s.cfg.Limits.MaxConnections, "listener", listener, "remote", c.RemoteAddr().String())
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
		func() {
			defer ss.recover("session")
			ss.run(sni)
		}()
		if ss.ic != nil {
			ss.ic.Closed() // interceptors' per-connection cleanup, even after a panic
		}
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

// recover is deferred at the top of each session goroutine: a panic in the
// data path or an interceptor (a parser bug a hostile client found) ends
// this connection only, counted and logged with its stack, never the process.
func (ss *session) recover(where string) {
	r := recover()
	if r == nil {
		return
	}
	s := ss.srv
	s.metrics.panics.Inc()
	id := uint64(0)
	if ss.ic != nil {
		id = ss.ic.ID
	}
	s.log.Error("panic in session: connection closed", "conn", id, "where", where, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	ss.fail("panic", fmt.Errorf("panic in %s: %v", where, r))
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
	if tcfg := s.tls.Load(); tcfg != nil {
		tc := tls.Server(ss.client, tcfg)
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
		if len(st.VerifiedChains) > 0 && len(st.PeerCertificates) > 0 {
			// The default identity of a verified client certificate is
			// its subject, as Kafka's DEFAULT principal rule; authswap's
			// mapping rules replace it.
			subj := st.PeerCertificates[0].Subject.String()
			ss.ic.SetPrincipal(interceptor.Principal{Name: subj, Mechanism: "mtls", Attrs: map[string]string{"subject": subj}})
		}
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
	ss.crl, ss.cwl = lazyReader{c: ss.client}, lazyWriter{c: ss.client}
	ss.cr = ss.crl.get()
	s.log.Info("connection opened", "conn", ss.ic.ID, "listener", ss.listener, "node", ss.node, "remote", ss.ic.RemoteAddr.String(), "sni", ss.ic.SNI)
	start := time.Now()

	ch := s.acquireChain()
	err := ch.Connect(ctx, ss.ic)
	ch.release()
	if err != nil {
		ss.fail("refused", err)
	} else {
		pumpDone := make(chan struct{})
		go func() {
			defer close(pumpDone)
			defer ss.recover("response pump")
			ss.pump(ctx)
		}()
		func() {
			defer ss.recover("request reader")
			ss.read(ctx)
		}()
		close(ss.pending)
		<-pumpDone
		// Exchanges the pump did not finish still hold buffers and
		// frame budget: give them back (Done is idempotent).
		if ss.cur != nil {
			ss.cur.Done()
		}
		for p := range ss.pending {
			if p.x != nil {
				p.x.Done()
			}
		}
	}
	ss.close(ss.endErr) // nil unless the reader left a last answer for the pump
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
	var held int64 // budget held by the frame in buf
	defer func() { s.release(held) }()
	idle := s.cfg.Limits.IdleTimeout.D()
	for {
		s.release(held)
		held = 0
		if cap(buf) > growStep {
			// A large frame's buffer goes back to the pool: an idle
			// connection keeps no more than growStep.
			putFrame(buf)
			buf = nil
		}
		if ss.cr.Buffered() == 0 {
			if err := ss.flushUpstream(); err != nil {
				ss.fail("upstream_write", err)
				return
			}
			if ss.up != nil {
				ss.up.w.idle()
			}
			if ss.stopping.Load() {
				return
			}
			if err := ss.waitForData(idle, &buf); err != nil {
				ss.readError(err)
				return
			}
		}
		// KIP-368: between two client requests, and before either
		// forwarding path (splice or request) writes upstream,
		// re-authenticate if the broker's session is about to end.
		if !ss.reauthIfDue(ctx) {
			return
		}
		if done, err := ss.spliceRequest(); err != nil {
			ss.fail("upstream_write", err)
			return
		} else if done {
			continue
		}
		n := ss.nextFrameSize()
		ss.inFrame = n > 0
		if n > 0 {
			if !ss.reserve(ctx, n) {
				return
			}
			held = n
			if buf == nil {
				buf = getFrame()
			}
		}
		if ss.ic.AuthPending() {
			if th := ss.ic.RawTokens(); th != nil {
				frame, err := readFrame(ss.cr, buf, s.cfg.Limits.MaxFrameBytes, 0)
				buf = frame
				if err != nil {
					ss.readError(err)
					return
				}
				if !ss.rawToken(ctx, th, frame) {
					return
				}
				continue
			}
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
		c := ss.classify(h, frame[h.bodyOffset:], vt)
		switch c.verdict {
		case unauthenticated:
			ss.fail("unauthenticated", fmt.Errorf("%s before authentication completed", kmsg.NameForKey(h.key)))
			return
		case unsupported:
			ss.fail("unsupported_api", fmt.Errorf("%s v%d (key %d) is not forwarded by Strait", kmsg.NameForKey(h.key), h.version, h.key))
			return
		case answerVersions:
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
		owned, ok := ss.request(ctx, h, c, frame, held)
		if owned { // an exchange keeps the frame (and its budget) until done
			buf, held = getFrame(), 0
		}
		if !ok {
			return
		}
	}
}

// request runs the chain over one request and forwards it (or enqueues a
// local answer). owned reports whether an exchange took the frame and the
// held budget, to give back when it is done; ok false ends the session.
func (ss *session) request(ctx context.Context, h reqHeader, c class, frame []byte, held int64) (owned, ok bool) {
	s := ss.srv
	acks := c.acks // produce with acks=0 gets no response
	p := pending{key: h.key, version: h.version, corr: h.corr}
	reqHooked, respHooked := c.reqHooked, c.respHooked
	var out *reencoded // the re-encoded frames, when a hook changed the request
	if reqHooked || respHooked {
		p.newExchange(ss, h)
		reqHooked, respHooked = p.chain.Hooked(h.key, h.version) // the generation p holds
		p.decodeResp = respHooked
	}
	if reqHooked {
		req := kmsg.RequestForKey(h.key)
		req.SetVersion(h.version)
		if err := req.ReadFrom(frame[h.bodyOffset:]); err != nil {
			p.x.Done()
			ss.fail("malformed", fmt.Errorf("decode %s v%d: %w", kmsg.NameForKey(h.key), h.version, err))
			return false, false
		}
		p.x.Request = req
		// The decoded request aliases this frame: the exchange owns it
		// (and the budget it holds) until done.
		owned = true
		p.x.OnDone(func() { putFrame(frame); s.release(held) })
		if err := p.chain.Request(ctx, p.x); err != nil {
			p.x.Done()
			ss.hookError(err)
			return owned, false
		}
		var extra []kmsg.Request
		if p.x.Response == nil {
			extra = p.x.Extra()
		}
		if p.x.Response == nil && (p.x.RequestModified() || len(extra) > 0) {
			re := &ss.reqFrames
			re.reset()
			tooLarge := re.add(h, req) > int(s.cfg.Limits.MaxFrameBytes)
			// The parts of a split request follow the first, each a
			// frame of its own with the client's header: written
			// upstream together, in order.
			for _, r := range extra {
				if r.Key() != h.key {
					p.x.Done()
					ss.fail("interceptor", fmt.Errorf("split %s request into a %s request", kmsg.NameForKey(h.key), kmsg.NameForKey(r.Key())))
					return owned, false
				}
				r.SetVersion(h.version)
				tooLarge = re.add(h, r) > int(s.cfg.Limits.MaxFrameBytes) || tooLarge
			}
			out = re
			if tooLarge {
				// The hooks grew the request past what the broker
				// takes: answer it here rather than send a frame the
				// broker would drop the connection for.
				re.reset()
				out = nil
				if !ss.answerLocally(p.x, req, kerr.MessageTooLarge.Code) {
					return owned, false
				}
			} else if len(extra) > 0 {
				p.parts, p.decodeResp = 1+len(extra), true
			}
		}
		if p.x.Response != nil {
			s.metrics.localAnswers[apiIndex(h.key)].Inc()
			if acks == 0 {
				p.x.Done()
				return owned, true // the client expects no answer
			}
			p.start = time.Now()
			if !ss.enqueue(p) {
				p.x.Done()
				return owned, false
			}
			return owned, true
		}
	}
	abandon := func() {
		if p.x != nil {
			p.x.Done()
		}
	}
	if ss.up == nil {
		if err := ss.dial(ctx); err != nil {
			var de *dialError
			if errors.As(err, &de) {
				ss.unavailable(h, frame, p.x, acks, de)
			}
			abandon()
			return owned, false
		}
	}
	if err := ss.forward(frame, out); err != nil {
		abandon()
		ss.fail("upstream_write", err)
		return owned, false
	}
	if acks == 0 {
		abandon()
		return owned, true // no response will come
	}
	p.up, p.start = ss.up, time.Now()
	if len(ss.pending) == cap(ss.pending) {
		if err := ss.flushUpstream(); err != nil {
			abandon()
			ss.fail("upstream_write", err)
			return owned, false
		}
	}
	if !ss.enqueue(p) {
		abandon()
		return owned, false
	}
	return owned, true
}

// dialError is an upstream that could not be reached (no route, TCP or TLS).
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// unavailable ends a session whose broker cannot be reached, as gently as
// the request allows. A Produce or Fetch is answered NOT_LEADER_OR_FOLLOWER
// on every partition before the connection closes: the client refreshes
// metadata and retries. Closing on the first request instead makes franz-go
// fail the records of a produce (it cannot tell a closed connection from a
// refused one), which the chaos run measured as lost records while a broker
// restarted. Anything else closes as before; clients retry those.
func (ss *session) unavailable(h reqHeader, frame []byte, x *interceptor.Exchange, acks int16, de *dialError) {
	ss.endErr = fmt.Errorf("upstream_dial: %w", de)
	ss.srv.metrics.connErrors.WithLabelValues("upstream_dial").Inc()
	if acks == 0 || h.key != keyProduce && h.key != int16(kmsg.Fetch) {
		ss.close(ss.endErr)
		return
	}
	var req kmsg.Request
	if x != nil && x.Request != nil {
		req = x.Request
	} else {
		req = kmsg.RequestForKey(h.key)
		req.SetVersion(h.version)
		if err := req.ReadFrom(frame[h.bodyOffset:]); err != nil {
			ss.close(ss.endErr)
			return
		}
	}
	resp, err := errresp.For(req, kerr.NotLeaderForPartition.Code)
	if err != nil {
		ss.close(ss.endErr)
		return
	}
	// The pump writes this after the responses before it; run closes the
	// connection once the pump is done.
	ss.enqueue(pending{key: h.key, version: h.version, corr: h.corr, local: appendResponseFrame(nil, h.corr, resp), start: time.Now()})
}

// answerLocally answers req with code on every partition or item it names.
func (ss *session) answerLocally(x *interceptor.Exchange, req kmsg.Request, code int16) bool {
	resp, err := errresp.For(req, code)
	if err != nil {
		x.Done()
		ss.fail("request_too_large", err)
		return false
	}
	x.Respond(resp)
	return true
}

// respBuf is the pump's buffer for re-encoded responses, taken from the
// frame pool again after an idle spell gave it back.
func (ss *session) respBuf() []byte {
	if ss.respScratch == nil {
		ss.respScratch = getFrame()
	}
	return ss.respScratch[:0]
}

// idleGrace is how long the reader waits for the next frame holding its
// buffer; past it the connection is idle and waits holding none. A client in
// a request/response loop never pays the extra read of the idle wait.
const idleGrace = time.Second

// waitForData returns once the client has sent something (ss.cr then reads
// it), or with the error that ended the wait: idle_timeout after idle, EOF.
func (ss *session) waitForData(idle time.Duration, buf *[]byte) error {
	now := time.Now()
	// Once a byte has come, the rest of the frame (its size included) is
	// bounded by stall_timeout, not by the short grace deadline.
	begun := func() { _ = ss.client.SetReadDeadline(time.Now().Add(ss.srv.cfg.Limits.StallTimeout.D())) }
	_ = ss.client.SetReadDeadline(now.Add(min(idleGrace, idle)))
	if _, err := ss.cr.Peek(1); err == nil {
		begun()
		return nil
	} else if !isTimeout(err) || idle <= idleGrace || ss.stopping.Load() {
		return err
	}
	_ = ss.client.SetReadDeadline(now.Add(idle))
	if ss.stopping.Load() { // drain began while the deadline was moved
		_ = ss.client.SetReadDeadline(time.Now())
	}
	// Idle: hold no buffer while waiting (the frame buffers go back too,
	// the pump's once it has written what came before).
	if *buf != nil {
		putFrame(*buf)
		*buf = nil
	}
	ss.enqueue(pending{idle: true})
	ss.cr = nil
	r, err := ss.crl.await()
	if err != nil {
		ss.cr = ss.crl.get() // for readError's callers, which may look
		return err
	}
	ss.cr = r
	begun()
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// nextFrameSize peeks at the size of the next frame, once it has arrived,
// and arms the stall deadline if the rest has not: a client that sends a
// size and trickles (or withholds) the body is closed after stall_timeout.
// It returns 0 when there is no valid size; readFrame then reports why.
func (ss *session) nextFrameSize() int64 {
	b, err := ss.cr.Peek(4)
	if err != nil {
		return 0
	}
	n := int64(int32(binary.BigEndian.Uint32(b)))
	if n <= 0 || n > int64(ss.srv.cfg.Limits.MaxFrameBytes) {
		return 0
	}
	if int64(ss.cr.Buffered()) < 4+n {
		_ = ss.client.SetReadDeadline(time.Now().Add(ss.srv.cfg.Limits.StallTimeout.D()))
	}
	return n
}

// reserve takes n bytes of the server's frame budget, waiting up to
// stall_timeout for other connections to give some back.
func (ss *session) reserve(ctx context.Context, n int64) bool {
	s := ss.srv
	if s.budget.TryAcquire(n) {
		s.held.Add(n)
		return true
	}
	s.metrics.budgetWaits.Inc()
	wctx, cancel := context.WithTimeout(ctx, s.cfg.Limits.StallTimeout.D())
	defer cancel()
	if err := s.budget.Acquire(wctx, n); err != nil {
		ss.fail("memory_budget", fmt.Errorf("no room for a %d-byte frame in limits.max_buffered_bytes (%d) within %s", n, s.cfg.Limits.MaxBufferedBytes, s.cfg.Limits.StallTimeout.D()))
		return false
	}
	s.held.Add(n)
	return true
}

// rawToken hands one unframed SASL token (SaslHandshake v0) to the
// interceptor that asked for it and queues its reply, size-prefixed.
func (ss *session) rawToken(ctx context.Context, th interceptor.TokenHandler, token []byte) bool {
	ss.bytesIn.Add(int64(len(token) + 4))
	reply, done, err := th(ctx, ss.ic, token)
	if err != nil {
		ss.hookError(err)
		return false
	}
	if done {
		ss.ic.ExpectRawTokens(nil)
	}
	if reply == nil {
		return true // nothing to send (GSSAPI's last step), as a broker
	}
	local := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(reply)), uint32(len(reply)))
	return ss.enqueue(pending{key: keySaslHandshake, local: append(local, reply...), start: time.Now()})
}

// newExchange starts p's exchange on the current chain generation, which it
// holds until the exchange is done (registered first, so released last).
func (p *pending) newExchange(ss *session, h reqHeader) {
	p.chain = ss.srv.acquireChain()
	p.x = &interceptor.Exchange{Conn: ss.ic, Key: h.key, Version: h.version, CorrelationID: h.corr}
	p.x.OnDone(p.chain.release)
}

func (ss *session) enqueue(p pending) bool {
	if p.up != nil {
		ss.reauth.sent() // a response to wait for before re-authenticating
	}
	select {
	case ss.pending <- p:
		return true
	case <-ss.done:
		return false
	}
}

func (ss *session) forward(frame []byte, out *reencoded) error {
	ss.upWD.arm(ss.up.conn, ss.srv.cfg.Limits.StallTimeout.D())
	w := ss.up.w.get()
	if out != nil {
		err := out.writeTo(w)
		out.reset()
		return err
	}
	if err := writeSize(w, len(frame)); err != nil {
		return err
	}
	_, err := w.Write(frame)
	return err
}

func (ss *session) flushUpstream() error {
	if ss.up == nil || ss.up.w.buffered() == 0 {
		return nil
	}
	ss.upWD.arm(ss.up.conn, ss.srv.cfg.Limits.StallTimeout.D())
	return ss.up.w.get().Flush()
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
	case (errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)) && ss.inFrame:
		ss.fail("frame_stalled", fmt.Errorf("frame not complete within limits.stall_timeout: %w", err))
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
	if ss.ic.AuthPending() {
		// Defence in depth: the gate must hold until a principal is set.
		ss.fail("unauthenticated", errors.New("upstream dial before authentication completed"))
		return errors.New("unauthenticated")
	}
	addr, ok := s.upstreamAddr(ss.node)
	if !ok {
		s.metrics.dialErrors.WithLabelValues(fmt.Sprint(ss.node)).Inc()
		return &dialError{fmt.Errorf("no known upstream address for node %d", ss.node)}
	}
	c, err := s.dialer.dial(ctx, addr)
	if err != nil {
		s.metrics.dialErrors.WithLabelValues(fmt.Sprint(ss.node)).Inc()
		return &dialError{fmt.Errorf("dial %s: %w", addr, err)}
	}
	up := newUpstream(c, addr, ss.node, s.vt.Load(), s.cfg.Limits.MaxFrameBytes)
	ss.upWD = writeDeadline{}
	select {
	case <-ss.done: // closed while dialing
		c.Close()
		return errors.New("closed")
	default:
	}
	ss.up = up
	hctx, cancel := context.WithTimeout(ctx, s.cfg.Upstream.DialTimeout.D())
	defer cancel()
	ch := s.acquireChain()
	err = ch.Upstream(hctx, ss.ic, up)
	ch.release()
	if err != nil {
		s.metrics.dialErrors.WithLabelValues(fmt.Sprint(ss.node)).Inc()
		ss.hookError(err)
		return err
	}
	ss.upstreamAuthenticated() // who it is, and when its KIP-368 session ends
	return nil
}

// pump writes responses to the client in request order.
func (ss *session) pump(ctx context.Context) {
	s := ss.srv
	var buf []byte
	stall := s.cfg.Limits.StallTimeout.D()
	for p := range ss.pending {
		if p.idle { // the client went idle: hold no frame buffers
			putFrame(buf)
			putFrame(ss.respScratch)
			buf, ss.respScratch = nil, nil
			continue
		}
		ss.cur = p.x
		if cap(buf) > growStep {
			putFrame(buf) // an idle connection keeps no large buffer
			buf = nil
		}
		var out []byte   // what to write
		prefixed := true // out carries its own size prefix
		k := apiIndex(p.key)
		switch {
		case p.local != nil:
			out = p.local
		case p.up == nil: // a request hook answered
			if err := p.chain.Response(ctx, p.x); err != nil {
				ss.hookError(err)
				return
			}
			ss.respScratch = appendResponseFrame(ss.respBuf(), p.corr, p.x.Response)
			out = ss.respScratch
		case p.parts > 1:
			o, err := ss.splitResponses(ctx, p)
			if err != nil {
				return
			}
			s.metrics.latency[k].Observe(time.Since(p.start).Seconds())
			out = o
		default:
			if n, err := ss.spliceResponse(p); err != nil {
				ss.fail("upstream_read", err)
				return
			} else if n > 0 {
				s.metrics.latency[k].Observe(time.Since(p.start).Seconds())
				s.metrics.respBytes[k].Add(float64(n))
				ss.bytesOut.Add(int64(n))
				ss.reauth.answered() // done with up.r
				continue
			}
			if buf == nil {
				buf = getFrame()
			}
			frame, err := readFrame(p.up.r.get(), buf, s.cfg.Limits.MaxFrameBytes, minResponseFrame)
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
				out, prefixed = frame, false
			}
		}
		n := len(out)
		if !prefixed {
			n += 4
		}
		s.metrics.respBytes[k].Add(float64(n))
		ss.bytesOut.Add(int64(n))
		ss.clientWD.arm(ss.client, stall)
		if !prefixed {
			if err := writeSize(ss.cwl.get(), len(out)); err != nil {
				ss.clientWriteError(err)
				return
			}
		}
		if _, err := ss.cwl.get().Write(out); err != nil {
			ss.clientWriteError(err)
			return
		}
		if p.x != nil {
			p.x.Done() // out is in the writer: hooks may recycle their buffers
			if p.x.ClosesAfterResponse() {
				_ = ss.cwl.get().Flush()
				ss.close(nil) // the interceptor asked (a failed SASL login), and counted why
				return
			}
		}
		if len(ss.pending) == 0 {
			if err := ss.cwl.get().Flush(); err != nil {
				ss.clientWriteError(err)
				return
			}
			// Nothing in flight: the socket buffers go back to their
			// pools (a busy connection takes them again at once).
			ss.cwl.idle()
			if p.up != nil {
				p.up.r.idle()
			}
		}
		if p.up != nil {
			ss.reauth.answered() // done with up.r: a re-authentication may use it
		}
	}
	ss.clientWD.arm(ss.client, stall)
	if ss.cwl.buffered() > 0 {
		_ = ss.cwl.get().Flush()
	}
}

// clientWriteError ends the session after a failed write to the client: a
// client that stopped reading (the write deadline passed) is counted; one
// that hung up is not an error.
func (ss *session) clientWriteError(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		ss.fail("client_stalled", fmt.Errorf("client read nothing for %s: %w", ss.srv.cfg.Limits.StallTimeout.D(), err))
		return
	}
	ss.close(nil)
}

// writeDeadline keeps a socket's write deadline at least half the stall
// timeout ahead of now, touching the socket only when it is not, so a
// steady stream pays a clock read per frame rather than a syscall-side
// timer reset, and a write to a peer that stopped reading fails in bounded
// time instead of holding the session's buffers forever.
type writeDeadline struct{ until time.Time }

func (w *writeDeadline) arm(c net.Conn, d time.Duration) {
	now := time.Now()
	if w.until.Sub(now) < d/2 {
		w.until = now.Add(d)
		_ = c.SetWriteDeadline(w.until)
	}
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
	if err := p.chain.Response(ctx, p.x); err != nil {
		ss.hookError(err)
		return nil, err
	}
	if !p.x.ResponseModified() {
		return nil, nil
	}
	ss.respScratch = appendResponseFrame(ss.respBuf(), p.corr, kresp)
	return ss.respScratch, nil
}

// splitResponses reads the responses to the parts of a split request (see
// Exchange.Split), merges them into the one response the client gets, runs
// the response hooks on it and returns its frame. On error the session has
// been failed.
func (ss *session) splitResponses(ctx context.Context, p pending) ([]byte, error) {
	s := ss.srv
	resps := make([]kmsg.Response, p.parts)
	for i := range resps {
		// A frame of its own for each: a decoded response may alias it.
		frame, err := readFrame(p.up.r.get(), nil, s.cfg.Limits.MaxFrameBytes, minResponseFrame)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				ss.fail("upstream_closed", err)
			} else {
				ss.fail("upstream_read", err)
			}
			return nil, err
		}
		if got := int32(binary.BigEndian.Uint32(frame)); got != p.corr {
			err := fmt.Errorf("response correlation id %d, expected %d (%s, part %d of %d)", got, p.corr, kmsg.NameForKey(p.key), i+1, p.parts)
			ss.fail("upstream_protocol", err)
			return nil, err
		}
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
		resps[i] = kresp
	}
	merged, err := p.x.Merge(resps)
	if err != nil {
		ss.hookError(err)
		return nil, err
	}
	p.x.Response = merged
	if err := p.chain.Response(ctx, p.x); err != nil {
		ss.hookError(err)
		return nil, err
	}
	ss.respScratch = appendResponseFrame(ss.respBuf(), p.corr, merged)
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
