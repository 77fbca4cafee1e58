package authswap

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/strait-proxy/strait/authswap/gssapi"
	"github.com/strait-proxy/strait/authswap/sasl"
)

// newGSSAPI is the Kerberos acceptor as a sasl.Mechanism.
func newGSSAPI(c GSSAPIConfig) (sasl.Mechanism, error) {
	acc, err := gssapi.NewAcceptor(c.KeytabFile, c.ServicePrincipal)
	if err != nil {
		return nil, err
	}
	return sasl.Func("GSSAPI", func() sasl.Session { return &gssSession{s: acc.Start(), strip: c.StripRealm} }), nil
}

type gssSession struct {
	s     *gssapi.Session
	strip bool
}

func (g *gssSession) Next(ctx context.Context, in []byte) ([]byte, bool, error) {
	out, done, err := g.s.Next(ctx, in)
	if err != nil {
		reason := sasl.ReasonMalformed
		if errors.Is(err, gssapi.ErrAuthentication) {
			reason = "bad_ticket"
		}
		return nil, false, &sasl.AuthError{Message: "Authentication failed during authentication due to invalid credentials with SASL mechanism GSSAPI", Reason: reason, Cause: err}
	}
	return out, done, nil
}

func (g *gssSession) Principal() string {
	p := g.s.Principal()
	if g.strip {
		p, _, _ = strings.Cut(p, "@")
	}
	return p
}

func (g *gssSession) Attrs() map[string]string {
	full := g.s.Principal()
	attrs := map[string]string{"kerberos_principal": full}
	if _, realm, ok := strings.Cut(full, "@"); ok {
		attrs["realm"] = realm
	}
	return attrs
}

func (g *gssSession) Expiry() time.Time { return g.s.Expiry() }
