package authswap

import (
	"context"
	"errors"
	"fmt"

	"github.com/strait-proxy/strait/authswap/creds"
	"github.com/strait-proxy/strait/interceptor"
)

// reauth is the OnReauth hook (KIP-368): before the broker's session
// lifetime on an upstream connection ends, the proxy pauses the client's
// requests, waits for the responses in flight and calls it. It looks the
// principal's credentials up again (through the cache, so cache_ttl bounds
// how long a rotated secret takes to be used) and runs the same upstream
// SASL exchange as on a fresh connection, as the same principal: the proxy
// refuses a connection whose principal changed before calling it. Any
// failure closes the client connection; its reconnection starts afresh.
func (a *authswap) reauth(ctx context.Context, c *interceptor.Conn, up interceptor.Upstream) error {
	p := c.Principal()
	fail := func(mech, reason string, err error) error {
		a.m.reauth.WithLabelValues(mech, "failure", reason).Inc()
		a.log.Warn("upstream re-authentication failed", "conn", c.ID, "principal", p.Name, "upstream", up.ServerName(), "reason", reason, "err", err)
		return fmt.Errorf("%w: upstream re-authentication as %s failed (%s)", interceptor.ErrClose, p.Name, reason)
	}
	if p.Anonymous() {
		return fail("none", "anonymous", errors.New("the client has no principal"))
	}
	cr, err := a.lookup(ctx, c, p.Name) // the fresh entry is what a.upstream presents
	if err != nil {
		reason := "credentials_unavailable"
		if errors.Is(err, creds.ErrNoMapping) {
			reason = "no_mapping"
		}
		return fail("none", reason, err)
	}
	mech := cr.Mechanism
	if mech == "" {
		mech = a.cfg.Upstream.Mechanism
	}
	if err := a.upstream(ctx, c, up); err != nil {
		// a.upstream logged the exchange's failure and counted its
		// reason in strait_authswap_upstream_authentications_total.
		a.m.reauth.WithLabelValues(mech, "failure", "sasl").Inc()
		return err
	}
	a.m.reauth.WithLabelValues(mech, "success", "").Inc()
	a.log.Debug("upstream re-authenticated", "conn", c.ID, "principal", p.Name, "mechanism", mech, "upstream", up.ServerName())
	return nil
}
