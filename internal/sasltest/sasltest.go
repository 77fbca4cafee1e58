// Package sasltest starts a kfake cluster with SASL for tests of Strait's
// authentication swapping.
package sasltest

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/authswap/upsasl"
	"github.com/strait-proxy/strait/internal/straittest"
)

// Strait's own metadata client (proxy/cluster.go) has no SASL yet, and a
// kfake with SASL enabled refuses unauthenticated Metadata. Until the proxy
// can authenticate its own connections, each kfake broker sits behind a
// relay that authenticates, as the superuser, the connections whose first
// request is an ApiVersions from client id "strait" (the metadata client:
// the upstream connections of client sessions start with authswap's own
// SaslHandshake, never with ApiVersions, so they are relayed untouched and
// authenticate as their principal).
const (
	SuperUser = "strait-admin"
	SuperPass = "strait-admin-pw-7f3a"
)

type relayListener struct {
	net.Listener
	advertised net.Addr
}

func (l relayListener) Addr() net.Addr { return l.advertised }

// Cluster starts kfake (3 brokers) with SASL (superuser SuperUser over
// PLAIN) behind relays, and returns it with the relay addresses, which
// are what the brokers advertise.
func Cluster(t testing.TB, opts ...kfake.Opt) (*kfake.Cluster, []string) {
	t.Helper()
	var mu sync.Mutex
	var addrs []string
	listen := func(network, _ string) (net.Listener, error) {
		inner, err := net.Listen(network, "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		outer, err := net.Listen(network, "127.0.0.1:0")
		if err != nil {
			inner.Close()
			return nil, err
		}
		t.Cleanup(func() { outer.Close() })
		go relay(outer, inner.Addr().String())
		mu.Lock()
		addrs = append(addrs, outer.Addr().String())
		mu.Unlock()
		return relayListener{Listener: inner, advertised: outer.Addr()}, nil
	}
	c := straittest.Cluster(t, append([]kfake.Opt{kfake.ListenFn(listen), kfake.EnableSASL(),
		kfake.Superuser("PLAIN", SuperUser, SuperPass)}, opts...)...)
	mu.Lock()
	defer mu.Unlock()
	return c, append([]string(nil), addrs...)
}

func relay(ln net.Listener, to string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			first, err := ReadFrame(c)
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", to)
			if err != nil {
				return
			}
			defer up.Close()
			if isStraitApiVersions(first) {
				if err := authenticateSuper(up); err != nil {
					return
				}
			}
			if _, err := up.Write(first); err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, up); c.Close() }()
			_, _ = io.Copy(up, c)
		}()
	}
}

// ReadFrame reads one size-prefixed Kafka frame, prefix included.
func ReadFrame(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > 1<<20 {
		return nil, errors.New("frame too large")
	}
	b := make([]byte, 4+n)
	copy(b, size[:])
	_, err := io.ReadFull(r, b[4:])
	return b, err
}

func isStraitApiVersions(f []byte) bool {
	if len(f) < 14 || binary.BigEndian.Uint16(f[4:]) != uint16(kmsg.ApiVersions) {
		return false
	}
	n := int(int16(binary.BigEndian.Uint16(f[12:])))
	return n == len("strait") && len(f) >= 14+n && string(f[14:14+n]) == "strait"
}

type connUpstream struct {
	c    net.Conn
	corr int32
}

func (u *connUpstream) ServerName() string { return "kfake" }
func (u *connUpstream) RoundTrip(_ context.Context, req kmsg.Request) (kmsg.Response, error) {
	u.corr++
	if _, err := u.c.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("relay")).AppendRequest(nil, req, u.corr)); err != nil {
		return nil, err
	}
	f, err := ReadFrame(u.c)
	if err != nil {
		return nil, err
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	return resp, resp.ReadFrom(f[8:])
}

func authenticateSuper(up net.Conn) error {
	_, err := upsasl.Authenticate(context.Background(), &connUpstream{c: up}, upsasl.Credentials{Mechanism: "PLAIN", Username: SuperUser, Password: SuperPass})
	return err
}
