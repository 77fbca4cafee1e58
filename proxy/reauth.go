package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// KIP-368 re-authentication of the upstream connection.
//
// A broker with connections.max.reauth.ms announces a session lifetime in
// its SaslAuthenticate response (v1+) and closes a connection used, after
// that lifetime, for anything but re-authentication. The upstream hook
// (authswap's upstream SASL) authenticated the connection through
// upstream.RoundTrip, which notes the lifetime. From then on the reader
// goroutine, before it forwards the next client request, checks whether
// 85-90% of the lifetime has passed (jittered, so that connections opened
// together do not re-authenticate together). If so it pauses between two
// client requests:
//
//  1. it writes nothing more upstream: the request it is about to read
//     waits, and so does everything after it (still in the client socket),
//     so nothing is reordered or lost;
//  2. it flushes what it has buffered for upstream and waits until the
//     pump has read every response in flight on the connection (a Produce
//     with acks=0 has none and is not waited for: the broker handles a
//     connection's requests in order, so it is done before the handshake);
//  3. it runs the chain's OnReauth hooks (interceptor.Chain.Reauth), which
//     look the credentials up again and run SaslHandshake+SaslAuthenticate
//     through RoundTrip, as on a fresh connection: nobody else reads or
//     writes the upstream socket now;
//  4. it resumes, with the new lifetime the broker announced.
//
// A failure closes the client connection (strait_connection_errors_total
// reason upstream_reauth); the client reconnects and authenticates anew. A
// connection is never forwarded on once its session is due and
// re-authentication has not succeeded, and never re-authenticated as a
// principal other than the one its upstream connection was opened for.
//
// An idle connection re-authenticates when its next request comes, even if
// that is after the lifetime: brokers accept a re-authentication on an
// expired session (they close only on other use), as Kafka's own clients
// rely on.

// Re-authenticate between these fractions of the session lifetime.
const (
	reauthFrom   = 0.85
	reauthJitter = 0.05
)

// reauthState is one session's re-authentication schedule and the count of
// upstream responses in flight. The reader owns at, expires and principal;
// inflight and the waiter are shared with the pump.
type reauthState struct {
	at        time.Time // re-authenticate before the next forward once past it; zero: never
	lifetime  time.Duration
	principal string // the name the upstream connection was authenticated as

	inflight atomic.Int64 // requests forwarded whose response the pump has not finished
	waiting  atomic.Bool  // the reader waits for inflight to reach 0
	mu       sync.Mutex
	drained  chan struct{} // closed by the pump when inflight reaches 0 while waiting
}

// sent counts a request whose response the pump will read from upstream.
// The reader calls it before handing the pending entry to the pump.
func (r *reauthState) sent() { r.inflight.Add(1) }

// answered is the pump's: it is done with one upstream response (read,
// written to the client, its buffers given back). One atomic add per
// response; the lock is taken only while the reader waits.
func (r *reauthState) answered() {
	if r.inflight.Add(-1) == 0 && r.waiting.Load() {
		r.mu.Lock()
		if r.drained != nil {
			close(r.drained)
			r.drained = nil
		}
		r.mu.Unlock()
	}
}

// quiet returns a channel closed once no upstream response is in flight.
// Only the reader forwards, so none can be added while it waits.
func (r *reauthState) quiet() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{})
	r.drained = ch
	r.waiting.Store(true)
	// The pump's Add(-1) comes before its waiting.Load: if it missed the
	// flag, inflight is already 0 here.
	if r.inflight.Load() == 0 {
		close(ch)
		r.drained = nil
	}
	return ch
}

func (r *reauthState) stopWaiting() { r.waiting.Store(false) }

// schedule sets the next re-authentication from the lifetime the broker
// announced (0: none, the session does not expire).
func (r *reauthState) schedule(lt time.Duration) {
	r.lifetime = lt
	if lt <= 0 {
		r.at = time.Time{}
		return
	}
	r.at = time.Now().Add(time.Duration(float64(lt) * (reauthFrom + reauthJitter*rand.Float64())))
}

// noteLifetime is called by upstream.RoundTrip on each response to Strait's
// own requests: a successful SaslAuthenticate carries the broker's session
// lifetime (v1+; 0 when the broker does not expire sessions).
func (u *upstream) noteLifetime(resp kmsg.Response) {
	if ar, ok := resp.(*kmsg.SASLAuthenticateResponse); ok && ar.ErrorCode == 0 && ar.SessionLifetimeMillis > 0 {
		u.lifetime = time.Duration(ar.SessionLifetimeMillis) * time.Millisecond
	}
}

// upstreamAuthenticated runs after the upstream hooks accepted a fresh
// connection: it remembers who the connection is and when its session
// ends.
func (ss *session) upstreamAuthenticated() {
	ss.reauth.principal = ss.ic.Principal().Name
	ss.reauth.schedule(ss.up.lifetime)
}

// reauthIfDue re-authenticates the upstream connection if its session is
// about to end. The reader calls it between two client requests, before it
// forwards anything. It returns false when the session has been closed.
func (ss *session) reauthIfDue(ctx context.Context) bool {
	r := &ss.reauth
	if ss.up == nil || r.at.IsZero() || ss.ic.AuthPending() {
		return true // no upstream yet, a session that does not expire, or nothing will be forwarded
	}
	if time.Now().Before(r.at) {
		return true
	}
	return ss.reauthenticate(ctx)
}

// errReauth wraps every re-authentication failure, for the log line.
var errReauth = errors.New("upstream re-authentication (KIP-368) failed")

func (ss *session) reauthenticate(ctx context.Context) bool {
	s := ss.srv
	r := &ss.reauth
	up := ss.up
	start := time.Now()
	failed := func(err error) bool {
		err = fmt.Errorf("%w: %w", errReauth, err)
		s.log.Warn("upstream re-authentication failed: closing the client connection", "conn", ss.ic.ID, "principal", ss.ic.Principal().String(),
			"upstream", up.addr, "session_lifetime", r.lifetime.String(), "err", err)
		ss.fail("upstream_reauth", err)
		return false
	}
	if p := ss.ic.Principal().Name; p != r.principal {
		return failed(fmt.Errorf("the connection's principal is %q, its upstream connection was authenticated as %q", p, r.principal))
	}
	if err := ss.flushUpstream(); err != nil {
		ss.fail("upstream_write", err)
		return false
	}
	// Wait for the pump to read every response in flight: the broker
	// answers in order, and the SASL responses must be the next frames
	// on the socket. Bounded by stall_timeout: a broker that holds a
	// response longer (past any Fetch max wait) is not waited for.
	wait := time.NewTimer(s.cfg.Limits.StallTimeout.D())
	quiet := r.quiet()
	select {
	case <-quiet:
	case <-ss.done:
	case <-wait.C:
	}
	wait.Stop()
	r.stopWaiting()
	select {
	case <-ss.done:
		return false
	default:
	}
	if n := r.inflight.Load(); n > 0 {
		return failed(fmt.Errorf("%d responses still in flight after %s (limits.stall_timeout)", n, s.cfg.Limits.StallTimeout.D()))
	}
	hctx, cancel := context.WithTimeout(ctx, s.cfg.Upstream.DialTimeout.D())
	defer cancel()
	up.lifetime = 0
	ch := s.acquireChain()
	ran, err := ch.Reauth(hctx, ss.ic, up)
	ch.release()
	// RoundTrip cleared the socket deadlines; the next forward arms them.
	ss.upWD = writeDeadline{}
	switch {
	case err != nil:
		return failed(err)
	case !ran:
		return failed(fmt.Errorf("the broker's session lifetime (%s) is ending and no interceptor of the chain re-authenticates upstream (OnReauth)", r.lifetime))
	}
	pause := time.Since(start)
	s.metrics.reauthPause.Observe(pause.Seconds())
	s.log.Debug("upstream re-authenticated", "conn", ss.ic.ID, "principal", ss.ic.Principal().String(), "upstream", up.addr,
		"session_lifetime", up.lifetime.String(), "pause", pause.String())
	r.schedule(up.lifetime)
	return true
}
