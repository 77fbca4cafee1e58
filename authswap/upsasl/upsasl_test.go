package upsasl

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawUpstream is a minimal interceptor.Upstream over a TCP connection to a
// broker, for requests that are not flexible (SaslHandshake v1,
// SaslAuthenticate v1, Metadata v1).
type rawUpstream struct {
	c    net.Conn
	corr int32
}

func (u *rawUpstream) ServerName() string { return "127.0.0.1" }

func (u *rawUpstream) RoundTrip(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	u.corr++
	_ = u.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := u.c.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("test")).AppendRequest(nil, req, u.corr)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(u.c, size[:]); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(u.c, body); err != nil {
		return nil, err
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	return resp, resp.ReadFrom(body[4:])
}

func dial(t *testing.T, c *kfake.Cluster) *rawUpstream {
	t.Helper()
	conn, err := net.Dial("tcp", c.ListenAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawUpstream{c: conn}
}

func TestAuthenticateAgainstKfake(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "admin", "admin-pw"),
		kfake.User("PLAIN", "pu", "plain-pw"),
		kfake.User("SCRAM-SHA-256", "su256", "scram256-pw"),
		kfake.User("SCRAM-SHA-512", "su512", "scram512-pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	for _, tc := range []struct {
		cr     Credentials
		reason string
	}{
		{Credentials{Mechanism: "PLAIN", Username: "pu", Password: "plain-pw"}, ""},
		{Credentials{Mechanism: "SCRAM-SHA-256", Username: "su256", Password: "scram256-pw"}, ""},
		{Credentials{Mechanism: "SCRAM-SHA-512", Username: "su512", Password: "scram512-pw"}, ""},
		{Credentials{Mechanism: "PLAIN", Username: "pu", Password: "wrong-pw"}, "rejected"},
		{Credentials{Mechanism: "SCRAM-SHA-256", Username: "su256", Password: "wrong-pw"}, "rejected"},
		{Credentials{Mechanism: "SCRAM-SHA-512", Username: "su256", Password: "scram256-pw"}, "rejected"},
		{Credentials{Mechanism: "OAUTHBEARER", Token: "tok"}, "unsupported_mechanism"},
		{Credentials{Mechanism: "GSSAPI", Username: "x", Password: "y"}, "unsupported_mechanism"},
		{Credentials{Mechanism: "PLAIN", Username: "pu"}, "unsupported_mechanism"},
	} {
		t.Run(tc.cr.Mechanism+"/"+tc.cr.Username+"/"+tc.cr.Password, func(t *testing.T) {
			up := dial(t, c)
			_, err := Authenticate(context.Background(), up, tc.cr)
			if tc.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				// The connection is now usable: the broker answers Metadata.
				m := kmsg.NewPtrMetadataRequest()
				m.SetVersion(1)
				r, err := up.RoundTrip(context.Background(), m)
				if err != nil || len(r.(*kmsg.MetadataResponse).Brokers) != 1 {
					t.Fatalf("metadata after SASL: %v", err)
				}
				return
			}
			var ue *Error
			if !errors.As(err, &ue) || ue.Reason != tc.reason {
				t.Fatalf("got %v, want reason %s", err, tc.reason)
			}
			if tc.cr.Password != "" && strings.Contains(err.Error(), tc.cr.Password) {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}
