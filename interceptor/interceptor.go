// Package interceptor is the contract between Strait's proxy and the code
// that inspects or changes Kafka traffic: encryption, redaction, credential
// swapping, audit, address rewriting.
//
// An Interceptor hooks the API keys it cares about. The proxy decodes a frame
// only when some interceptor hooks its API key at that version; every other
// frame is forwarded as raw bytes. Requests run through the chain first to
// last, responses last to first (the grpc-go order).
//
// This package imports only the standard library and kmsg, so that any
// interceptor can depend on it without pulling in the proxy.
package interceptor

import (
	"context"
	"crypto/tls"
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Principal is who a client proved to be. The zero value is the anonymous
// principal: no listener authentication, or none finished yet.
type Principal struct {
	// Name is the mapped identity ("alice", "svc-orders"): what policies,
	// credential lookups and logs key on. Kafka spells it "User:" + Name.
	Name string
	// Mechanism says how it was proven: "mtls", "PLAIN", "SCRAM-SHA-256",
	// "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI".
	Mechanism string
	// Attrs are facts the mechanism established (certificate subject,
	// Kerberos realm, token claims), for policies. Never secrets.
	Attrs map[string]string
}

// Anonymous reports whether no identity has been proven.
func (p Principal) Anonymous() bool { return p.Name == "" }

// String is the Kafka form: "User:alice", or "User:ANONYMOUS".
func (p Principal) String() string {
	if p.Anonymous() {
		return "User:ANONYMOUS"
	}
	return "User:" + p.Name
}

// TokenHandler takes one unframed SASL token (SaslHandshake v0 semantics:
// after the handshake, the client sends size-prefixed raw tokens, not Kafka
// requests) and returns the token to send back, size-prefixed: a nil reply
// sends nothing (GSSAPI's last step: librdkafka reads no final token), an
// empty one an empty token (PLAIN, as a broker answers). done ends raw mode:
// the next frame is a Kafka request again. An error closes the connection.
type TokenHandler func(ctx context.Context, c *Conn, token []byte) (reply []byte, done bool, err error)

// Conn is what an interceptor knows about one client connection. The proxy
// fills the immutable fields before any hook runs; Principal and ClientID
// change as the client authenticates and sends requests.
type Conn struct {
	ID         uint64
	Listener   string // "bootstrap", "broker-<id>" or "sni"
	NodeID     int32  // upstream node this connection stands for; -1 for bootstrap
	RemoteAddr net.Addr
	TLS        *tls.ConnectionState // nil on plaintext listeners
	SNI        string               // server name the client sent, if any

	authPending atomic.Bool // RequireAuth called, SetPrincipal not yet

	mu        sync.Mutex
	principal Principal
	clientID  string
	rawTokens TokenHandler
	values    map[any]any
	onClose   []func()
}

// Principal is the authenticated identity of the client: anonymous until
// some interceptor (mTLS, SASL) sets it.
func (c *Conn) Principal() Principal { c.mu.Lock(); defer c.mu.Unlock(); return c.principal }

// SetPrincipal records the client's authenticated identity and lifts the
// authentication gate (RequireAuth).
func (c *Conn) SetPrincipal(p Principal) {
	c.mu.Lock()
	c.principal = p
	c.mu.Unlock()
	c.authPending.Store(false)
}

// RequireAuth closes the gate: until SetPrincipal is called, the proxy
// forwards nothing and accepts only ApiVersions, SaslHandshake and
// SaslAuthenticate (which the authenticating interceptor answers itself);
// any other request closes the connection, as a broker's SASL listener does.
// Call it from a ConnectHook. The upstream connection is dialed only after
// the gate lifts, so its identity can depend on the principal.
func (c *Conn) RequireAuth() { c.authPending.Store(true) }

// AuthPending reports whether the gate is closed. The proxy asks on every
// frame: it is one atomic load.
func (c *Conn) AuthPending() bool { return c.authPending.Load() }

// ExpectRawTokens switches the connection to unframed SASL tokens after the
// current request (a SaslHandshake v0 hook calls it): each following frame
// goes to h, not to the chain, until h reports done.
func (c *Conn) ExpectRawTokens(h TokenHandler) { c.mu.Lock(); c.rawTokens = h; c.mu.Unlock() }

// RawTokens returns the handler set by ExpectRawTokens, nil when the
// connection speaks Kafka requests. The proxy calls it.
func (c *Conn) RawTokens() TokenHandler { c.mu.Lock(); defer c.mu.Unlock(); return c.rawTokens }

// ClientID is the client id of the latest request header.
func (c *Conn) ClientID() string { c.mu.Lock(); defer c.mu.Unlock(); return c.clientID }

// SetClientID is called by the proxy when a request header carries a new id.
func (c *Conn) SetClientID(id string) { c.mu.Lock(); c.clientID = id; c.mu.Unlock() }

// Value returns per-connection state an interceptor stored under key. Use an
// unexported key type, as with context.Context.
func (c *Conn) Value(key any) any { c.mu.Lock(); defer c.mu.Unlock(); return c.values[key] }

// SetValue stores per-connection state under key.
func (c *Conn) SetValue(key, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.values == nil {
		c.values = make(map[any]any)
	}
	c.values[key] = v
}

// OnClose registers fn to run once the client connection has ended (after
// its last response, or when it was closed): stop timers, drop caches kept
// for it. It runs whichever chain generation registered it.
func (c *Conn) OnClose(fn func()) { c.mu.Lock(); c.onClose = append(c.onClose, fn); c.mu.Unlock() }

// Closed runs the OnClose functions, last registered first. The proxy calls
// it once.
func (c *Conn) Closed() {
	c.mu.Lock()
	fns := c.onClose
	c.onClose = nil
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// Exchange is one request and, later, its response.
//
// In a request hook, Request is decoded and Response is nil. A hook that sets
// Response answers the request itself: nothing is forwarded, and the answer
// goes back through the response hooks of the interceptors before it.
//
// In a response hook, Response is decoded. Request is set only if some
// interceptor also hooks the request of this API (decoding every request
// would cost passthrough traffic an allocation per frame).
//
// A hook that changes a decoded message must call MarkModified: unmodified
// messages are forwarded as their original bytes.
type Exchange struct {
	Conn          *Conn
	Key           int16
	Version       int16
	CorrelationID int32
	Request       kmsg.Request
	Response      kmsg.Response

	reqModified, respModified bool
	answeredBy                int  // 1 + index of the interceptor that answered; 0 if none
	closeAfter                bool // CloseAfterResponse
	values                    map[any]any
	done                      []func()
	more                      []kmsg.Request // Split: sent after Request
	merge                     MergeFunc
}

// MergeFunc builds the one response the client gets for a split request
// (see [Exchange.Split]) from the responses to its parts, in the order they
// were sent: resps[0] answers x.Request, resps[i] the i-th request given to
// Split. Each is decoded at the exchange's version. An error closes the
// client connection.
type MergeFunc func(resps []kmsg.Response) (kmsg.Response, error)

// Split makes the proxy send more after x.Request, each as a request of its
// own with the client's header (API key, version, correlation id, client
// id), upstream on the same connection, in order, before any later request
// of the client; then read their responses, call merge, and hand the one
// response it returns to the response hooks and the client as the answer
// to the client's request. A request hook calls it, with x.Request being
// the first part (call MarkModified if it changed). The requests in more
// are not seen by the request hooks of later interceptors, and may alias
// buffers the hook returns in OnDone (they are encoded before the exchange
// is done). A later hook that answers (Respond) cancels the split. For a
// Produce with acks=0 every part is sent and merge is never called.
func (x *Exchange) Split(more []kmsg.Request, merge MergeFunc) {
	x.more, x.merge = more, merge
}

// Extra returns the requests Split added, nil if none. The proxy calls it.
func (x *Exchange) Extra() []kmsg.Request {
	if x.merge == nil {
		return nil
	}
	return x.more
}

// Merge builds the client's response from the responses to x.Request and
// Extra(), with the MergeFunc given to Split. The proxy calls it.
func (x *Exchange) Merge(resps []kmsg.Response) (kmsg.Response, error) {
	resp, err := x.merge(resps)
	if err != nil {
		return nil, err
	}
	resp.SetVersion(x.Version)
	return resp, nil
}

// OnDone registers fn to run once the proxy is finished with this exchange:
// its response written to the client (or, for a produce with acks=0, its
// request forwarded). A hook that built a message in a pooled buffer
// returns the buffer here. Hooks must not keep messages after that.
func (x *Exchange) OnDone(fn func()) { x.done = append(x.done, fn) }

// Done runs the OnDone functions, last registered first. The proxy calls it.
func (x *Exchange) Done() {
	for i := len(x.done) - 1; i >= 0; i-- {
		x.done[i]()
	}
	x.done = nil
}

// MarkModified tells the proxy to re-encode the message the current phase
// works on (the request in a request hook, the response in a response hook).
func (x *Exchange) MarkModified() {
	if x.Response != nil {
		x.respModified = true
	} else {
		x.reqModified = true
	}
}

// RequestModified reports whether a request hook changed the request.
func (x *Exchange) RequestModified() bool { return x.reqModified }

// ResponseModified reports whether a response hook changed the response.
func (x *Exchange) ResponseModified() bool { return x.respModified }

// Value returns state a request hook left for the response hook of the same
// exchange.
func (x *Exchange) Value(key any) any { return x.values[key] }

// SetValue stores state for the response hook of the same exchange.
func (x *Exchange) SetValue(key, v any) {
	if x.values == nil {
		x.values = make(map[any]any)
	}
	x.values[key] = v
}

// CloseAfterResponse closes the client connection once this exchange's
// response has been written, as a broker closes after a failed SASL
// authentication: the client reads the error, then the connection ends.
func (x *Exchange) CloseAfterResponse() { x.closeAfter = true }

// ClosesAfterResponse reports whether CloseAfterResponse was called. The
// proxy asks it.
func (x *Exchange) ClosesAfterResponse() bool { return x.closeAfter }

// Respond answers the request without forwarding it.
func (x *Exchange) Respond(resp kmsg.Response) {
	resp.SetVersion(x.Version)
	x.Response = resp
}

// RequestHook sees a decoded request. Returning an error closes the client
// connection (the error is logged once, by the proxy).
type RequestHook func(ctx context.Context, x *Exchange) error

// ResponseHook sees a decoded response. Returning an error closes the client
// connection.
type ResponseHook func(ctx context.Context, x *Exchange) error

// ConnectHook runs once when a client connects, before any request is read:
// downstream authentication (mTLS principal mapping) lives here. An error
// refuses the connection.
type ConnectHook func(ctx context.Context, c *Conn) error

// Upstream is a fresh connection to a broker, before any client request has
// been forwarded on it.
type Upstream interface {
	// RoundTrip sends req (its version set by the caller) and returns the
	// decoded response.
	RoundTrip(ctx context.Context, req kmsg.Request) (kmsg.Response, error)
	// ServerName is the broker host the connection stands for.
	ServerName() string
}

// UpstreamHook runs on every new upstream connection before the client's
// first request is forwarded: upstream SASL lives here. An error closes the
// client connection.
//
// The same type serves Interceptor.OnReauth (KIP-368): the proxy runs it on
// an upstream connection already in use, before the session lifetime the
// broker announced in the SaslAuthenticate response (v1+) that an
// UpstreamHook's RoundTrip received ends. The proxy has stopped writing
// client requests to up and every response in flight on it has come back,
// so RoundTrip may be used as on a fresh connection. The hook must
// authenticate as the same principal; an error closes the client connection.
type UpstreamHook func(ctx context.Context, c *Conn, up Upstream) error

// Latest as a Hook's MaxVersion covers every version from MinVersion up,
// including versions newer than this build knows.
const Latest int16 = math.MaxInt16

// Hook binds request and response hooks to one API key and the inclusive
// version range MinVersion..MaxVersion. Both bounds are explicit: the zero
// Hook covers v0 only, MaxVersion: Latest covers every version from
// MinVersion up. NewChain refuses a range that covers no version.
type Hook struct {
	Key        int16
	MinVersion int16
	MaxVersion int16
	Request    RequestHook
	Response   ResponseHook
}

// Covers reports whether the hook applies to key at version.
func (h Hook) Covers(key, version int16) bool {
	return h.Key == key && version >= h.MinVersion && version <= h.MaxVersion
}

// VersionRange is a range of versions of one API.
type VersionRange struct {
	Key      int16
	Min, Max int16
}

// Interceptor is one named link of the chain.
type Interceptor struct {
	Name       string
	Hooks      []Hook
	OnConnect  ConnectHook
	OnUpstream UpstreamHook
	// OnReauth re-authenticates an upstream connection in use before the
	// broker's KIP-368 session lifetime ends (see UpstreamHook): upstream
	// SASL again, as the same principal, with credentials looked up again.
	// May be nil; if the broker announced a lifetime and no interceptor of
	// the chain has OnReauth, the proxy closes the client connection before
	// the session expires rather than forward on it.
	OnReauth UpstreamHook
	// Answers lists the APIs this interceptor always answers itself (its
	// request hook sets the response), so Strait advertises these versions
	// in ApiVersions whatever the broker supports: SASL termination answers
	// SaslHandshake v0-1 and SaslAuthenticate v0-2 in front of a broker
	// that has no SASL at all. A request in such a range is never
	// forwarded.
	Answers []VersionRange
	// Requires narrows what Strait advertises and accepts for an API to the
	// versions this interceptor can work with: decryption needs Fetch v4+
	// (older versions make brokers down-convert and drop record headers).
	// Requests outside the range close the connection.
	Requires []VersionRange
	// Files are the files the interceptor read when it was built
	// (keyrings, policies, credential files): the binary watches them and
	// reloads the configuration when one changes.
	Files []string
	// Close releases what the interceptor holds (KMS clients, caches). May be nil.
	Close func() error
}

// ErrClose may be returned (or wrapped) by a hook that wants the connection
// closed without the proxy logging it as a failure.
var ErrClose = errors.New("interceptor closed the connection")
