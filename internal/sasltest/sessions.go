package sasltest

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Sessions watches every connection a kfake cluster accepts and does what
// kfake leaves out of KIP-368: a broker with connections.max.reauth.ms
// closes a connection that, after its session lifetime, is used for
// anything but re-authentication. kfake announces the lifetime
// (kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": ...}))
// and accepts a re-authentication, but never expires a session; with
// Sessions' Opt it does, and a test can see, per connection, who
// authenticated when and which request came too late.
//
//	s := sasltest.NewSessions()
//	c, addrs := sasltest.Cluster(t, s.Opt(), kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": "2000"}))
type Sessions struct {
	mu    sync.Mutex
	conns []*sessionConn
	start time.Time
}

// NewSessions returns a Sessions for one cluster.
func NewSessions() *Sessions { return &Sessions{start: time.Now()} }

// Opt makes the cluster's listeners report to s.
func (s *Sessions) Opt() kfake.Opt {
	return kfake.ListenFn(func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		return &sessionListener{Listener: ln, s: s}, nil
	})
}

// Auth is one successful SASL authentication on a connection.
type Auth struct {
	Mechanism, User string
	At              time.Time     // when the broker's final SaslAuthenticate response was written
	Lifetime        time.Duration // the session lifetime it announced
}

// Conn is what one broker connection saw.
type Conn struct {
	Local, Remote string // the broker's address and the peer's
	Handshakes    int    // SaslHandshake requests
	Auths         []Auth // successful authentications, in order
	// Expired lists the requests that arrived after the session lifetime
	// without a re-authentication: the connection was closed at the first.
	Expired []string
	// Requests counts the requests other than ApiVersions and SASL.
	Requests int
	Closed   bool
}

// Conns returns a copy of every connection's record, in accept order.
func (s *Sessions) Conns() []Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Conn, 0, len(s.conns))
	for _, c := range s.conns {
		cp := c.rec
		cp.Auths = append([]Auth(nil), c.rec.Auths...)
		cp.Expired = append([]string(nil), c.rec.Expired...)
		out = append(out, cp)
	}
	return out
}

// Expired returns every request that came after its connection's session
// ended, one line each.
func (s *Sessions) Expired() []string {
	var out []string
	for _, c := range s.Conns() {
		for _, e := range c.Expired {
			out = append(out, fmt.Sprintf("%s -> %s: %s", c.Remote, c.Local, e))
		}
	}
	return out
}

type sessionListener struct {
	net.Listener
	s *Sessions
}

func (l *sessionListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &sessionConn{Conn: c, s: l.s, sent: map[int32]reqInfo{}}
	sc.rec.Local, sc.rec.Remote = c.LocalAddr().String(), c.RemoteAddr().String()
	l.s.mu.Lock()
	l.s.conns = append(l.s.conns, sc)
	l.s.mu.Unlock()
	return sc, nil
}

type reqInfo struct{ key, version int16 }

// sessionConn parses the request frames kfake reads and the response frames
// it writes. in is the reader's, out the writer's; the rest is guarded by
// s.mu.
type sessionConn struct {
	net.Conn
	s          *Sessions
	in, out    []byte // partial frames
	sent       map[int32]reqInfo
	mech, user string // of the exchange in progress
	rec        Conn
}

func (c *sessionConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.in = append(c.in, p[:n]...)
		for {
			frame, ok := nextFrame(&c.in)
			if !ok {
				break
			}
			if expired := c.request(frame); expired != "" {
				c.s.mu.Lock()
				c.rec.Expired = append(c.rec.Expired, expired)
				c.rec.Closed = true
				c.s.mu.Unlock()
				c.Conn.Close() // as a broker: the request is not handled
				return 0, net.ErrClosed
			}
		}
	}
	return n, err
}

func (c *sessionConn) Write(p []byte) (int, error) {
	c.out = append(c.out, p...)
	for {
		frame, ok := nextFrame(&c.out)
		if !ok {
			break
		}
		c.response(frame)
	}
	return c.Conn.Write(p)
}

func (c *sessionConn) Close() error {
	c.s.mu.Lock()
	c.rec.Closed = true
	c.s.mu.Unlock()
	return c.Conn.Close()
}

// nextFrame takes one complete size-prefixed frame (without its prefix)
// off the front of *b.
func nextFrame(b *[]byte) ([]byte, bool) {
	if len(*b) < 4 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint32(*b))
	if len(*b) < 4+n {
		return nil, false
	}
	f := append([]byte(nil), (*b)[4:4+n]...)
	*b = (*b)[4+n:]
	return f, true
}

// request records one request and returns a description if it came after
// the session ended.
func (c *sessionConn) request(f []byte) string {
	if len(f) < 10 {
		return ""
	}
	key, version := int16(binary.BigEndian.Uint16(f)), int16(binary.BigEndian.Uint16(f[2:]))
	corr := int32(binary.BigEndian.Uint32(f[4:]))
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.sent[corr] = reqInfo{key, version} // kfake reads and writes on two goroutines
	r := kbin.Reader{Src: f[8:]}
	r.NullableString() // client id
	req := kmsg.RequestForKey(key)
	if req == nil {
		return ""
	}
	req.SetVersion(version)
	if req.IsFlexible() {
		kmsg.SkipTags(&r)
	}
	switch key {
	case int16(kmsg.ApiVersions):
		return ""
	case int16(kmsg.SASLHandshake):
		c.rec.Handshakes++
		if err := req.ReadFrom(r.Src); err == nil {
			c.mech, c.user = req.(*kmsg.SASLHandshakeRequest).Mechanism, ""
		}
		return ""
	case int16(kmsg.SASLAuthenticate):
		if err := req.ReadFrom(r.Src); err == nil && c.user == "" {
			c.user = saslUser(c.mech, req.(*kmsg.SASLAuthenticateRequest).SASLAuthBytes)
		}
		return ""
	}
	c.rec.Requests++
	if len(c.rec.Auths) == 0 {
		return ""
	}
	last := c.rec.Auths[len(c.rec.Auths)-1]
	if late := time.Since(last.At) - last.Lifetime; last.Lifetime > 0 && late > 0 {
		return fmt.Sprintf("%s %s after the session of %s (authenticated at +%s for %s) ended", kmsg.NameForKey(key), late.Round(time.Millisecond), last.User,
			last.At.Sub(c.s.start).Round(time.Millisecond), last.Lifetime)
	}
	return ""
}

func (c *sessionConn) response(f []byte) {
	if len(f) < 4 {
		return
	}
	corr := int32(binary.BigEndian.Uint32(f))
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	info, ok := c.sent[corr]
	delete(c.sent, corr)
	if !ok || info.key != int16(kmsg.SASLAuthenticate) {
		return
	}
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	resp.SetVersion(info.version)
	r := kbin.Reader{Src: f[4:]}
	if resp.IsFlexible() {
		kmsg.SkipTags(&r)
	}
	if err := resp.ReadFrom(r.Src); err != nil || resp.ErrorCode != 0 || resp.SessionLifetimeMillis <= 0 {
		return // not the final success of an exchange with a lifetime
	}
	c.rec.Auths = append(c.rec.Auths, Auth{Mechanism: c.mech, User: c.user, At: time.Now(), Lifetime: time.Duration(resp.SessionLifetimeMillis) * time.Millisecond})
}

// saslUser reads the user name from a client's first SASL message.
func saslUser(mech string, b []byte) string {
	s := string(b)
	switch {
	case mech == "PLAIN":
		if parts := strings.SplitN(s, "\x00", 3); len(parts) == 3 {
			return parts[1]
		}
	case strings.HasPrefix(mech, "SCRAM-"):
		for _, f := range strings.Split(s, ",") {
			if u, ok := strings.CutPrefix(f, "n="); ok {
				return u
			}
		}
	}
	return ""
}
