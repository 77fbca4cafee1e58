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
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

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

	mu        sync.Mutex
	principal string
	clientID  string
	values    map[any]any
}

// Principal is the authenticated identity of the client, "" until some
// interceptor (mTLS, SASL) sets it.
func (c *Conn) Principal() string { c.mu.Lock(); defer c.mu.Unlock(); return c.principal }

// SetPrincipal records the client's authenticated identity.
func (c *Conn) SetPrincipal(p string) { c.mu.Lock(); c.principal = p; c.mu.Unlock() }

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
	answeredBy                int // 1 + index of the interceptor that answered; 0 if none
	values                    map[any]any
	done                      []func()
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
type UpstreamHook func(ctx context.Context, c *Conn, up Upstream) error

// Hook binds request and response hooks to one API key and a version range.
// A zero MaxVersion means "every version from MinVersion up".
type Hook struct {
	Key        int16
	MinVersion int16
	MaxVersion int16
	Request    RequestHook
	Response   ResponseHook
}

// Covers reports whether the hook applies to key at version.
func (h Hook) Covers(key, version int16) bool {
	return h.Key == key && version >= h.MinVersion && (h.MaxVersion == 0 || version <= h.MaxVersion)
}

// Interceptor is one named link of the chain.
type Interceptor struct {
	Name       string
	Hooks      []Hook
	OnConnect  ConnectHook
	OnUpstream UpstreamHook
	// Close releases what the interceptor holds (KMS clients, caches). May be nil.
	Close func() error
}

// ErrClose may be returned (or wrapped) by a hook that wants the connection
// closed without the proxy logging it as a failure.
var ErrClose = errors.New("interceptor closed the connection")
