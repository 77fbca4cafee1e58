// Package authswap is the authentication-swapping interceptor: it proves
// who a client is (mTLS with Kafka's principal mapping rules, or SASL PLAIN
// and SCRAM terminated by Strait), looks up that principal's upstream
// credentials (a file or Vault KV v2) and authenticates every upstream
// connection of the client as that principal (SASL PLAIN, SCRAM or
// OAUTHBEARER). The client's own SASL exchange never reaches the broker.
// See README.md in this directory and docs/auth.md.
package authswap

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/authswap/creds"
	"github.com/strait-proxy/strait/authswap/mapping"
	"github.com/strait-proxy/strait/authswap/sasl"
	"github.com/strait-proxy/strait/authswap/upsasl"
	"github.com/strait-proxy/strait/interceptor"
)

// Name is the interceptor's name in configuration.
const Name = "authswap"

// Env is what New may use.
type Env struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer
	// Mechanisms adds server mechanisms beyond the built-in ones (the
	// GSSAPI acceptor), keyed by their SASL name.
	Mechanisms []sasl.Mechanism
}

type authswap struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	rules  mapping.Rules
	crl    *crlSource
	mechs  map[string]sasl.Mechanism
	names  []string // offered mechanisms, in configuration order
	cache  *creds.Cache
	tokens *upsasl.OAuthTokens // upstream OAUTHBEARER client-credentials tokens (upstream_oauth.go)
}

type stateKey struct{}

// connState is authswap's per-connection state.
type connState struct {
	mech     string
	sess     sasl.Session
	version  int16 // of the SaslHandshake
	failed   bool  // authentication failed: the next request closes
	creds    *creds.Credentials
	mtlsAttr map[string]string
	name     string      // the SASL principal once authenticated: re-authentication must keep it
	expiry   *time.Timer // KIP-368: closes the gate when the session lifetime ends
}

func state(c *interceptor.Conn) *connState {
	if s, ok := c.Value(stateKey{}).(*connState); ok {
		return s
	}
	s := &connState{}
	c.SetValue(stateKey{}, s)
	return s
}

// New builds the interceptor. It loads the users file, the CRL and a
// credentials file now (errors are configuration errors); Vault is first
// contacted by the first lookup.
func New(cfg Config, env Env) (*interceptor.Interceptor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &authswap{cfg: cfg, log: log, m: newMetrics(env.Metrics), mechs: map[string]sasl.Mechanism{}}
	var errs []string
	if cfg.MTLS != nil {
		a.rules, _ = mapping.Parse(cfg.MTLS.PrincipalMappingRules) // checked by Validate
		if cfg.MTLS.CRLFile != "" {
			var err error
			if a.crl, err = newCRLSource(cfg.MTLS.CRLFile, func(err error) { log.Error("CRL reload failed", "err", err) }); err != nil {
				errs = append(errs, "mtls.crl_file: "+err.Error())
			}
		}
	}
	if s := cfg.SASL; s != nil {
		var users sasl.UserSource
		if s.UsersFile != "" {
			var err error
			if users, err = sasl.WatchUsersFile(s.UsersFile, func(err error) { log.Error("users file reload failed", "err", err) }); err != nil {
				errs = append(errs, "sasl.users_file: "+err.Error())
			}
		}
		for _, name := range s.Mechanisms {
			var m sasl.Mechanism
			switch name {
			case sasl.PLAIN:
				if users != nil {
					m = sasl.NewPlain(users)
				}
			case sasl.OAUTHBEARER:
				o := s.OAuthBearer
				var err error
				if m, err = sasl.NewOAuthBearer(sasl.OAuthConfig{JWKSFile: o.JWKSFile, JWKSURL: o.JWKSURL, JWKSRefresh: o.JWKSRefresh.D(), Issuer: o.Issuer, Audience: o.Audience,
					PrincipalClaim: o.PrincipalClaim, ClockSkew: o.ClockSkew.D()}, func(err error) { log.Error("JWKS reload failed", "err", err) }); err != nil {
					errs = append(errs, "sasl.oauthbearer: "+err.Error())
				}
			case "GSSAPI":
				var err error
				if m, err = newGSSAPI(*s.GSSAPI); err != nil {
					errs = append(errs, "sasl.gssapi: "+err.Error())
				}
			default:
				if users != nil {
					m, _ = sasl.NewScram(name, users) // names checked by Validate
				}
			}
			if m != nil {
				a.mechs[name] = m
				a.names = append(a.names, name)
			}
		}
		for _, m := range env.Mechanisms {
			if _, dup := a.mechs[m.Name()]; !dup {
				a.mechs[m.Name()] = m
				a.names = append(a.names, m.Name())
			}
		}
	}
	if cr := cfg.Credentials; cr != nil {
		var store creds.Store
		var err error
		if cr.File != "" {
			store, err = creds.NewFile(cr.File, cfg.Upstream.Mechanism, func(err error) { log.Error("credentials file reload failed", "err", err) })
			if err != nil {
				errs = append(errs, "credentials.file: "+err.Error())
			}
		} else {
			store, err = creds.NewVault(*cr.Vault)
			if err != nil {
				errs = append(errs, "credentials.vault: "+err.Error())
			}
		}
		if err == nil {
			a.cache = creds.NewCache(store, cr.CacheTTL.D())
		}
		if a.tokens, err = newOAuthTokens(cfg.Upstream.OAuth, env.Metrics); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	ic := &interceptor.Interceptor{Name: Name, OnConnect: a.connect}
	if a.cache != nil {
		ic.OnUpstream = a.upstream
		ic.OnReauth = a.reauth // KIP-368, before the broker's session lifetime ends (reauth.go)
		// Close stops Vault token renewal.
		ic.Close = a.cache.Close
	}
	if cfg.SASL != nil {
		ic.Hooks = []interceptor.Hook{
			{Key: kmsg.SASLHandshake.Int16(), MinVersion: 0, MaxVersion: 1, Request: a.handshake},
			{Key: kmsg.SASLAuthenticate.Int16(), MinVersion: 0, MaxVersion: 2, Request: a.authenticate},
		}
		ic.Answers = []interceptor.VersionRange{
			{Key: kmsg.SASLHandshake.Int16(), Min: 0, Max: 1},
			{Key: kmsg.SASLAuthenticate.Int16(), Min: 0, Max: 2},
		}
	}
	return ic, nil
}

// refuse logs one line for a failed client authentication, counts it and
// returns the error that closes the connection.
func (a *authswap) refuse(c *interceptor.Conn, mech, reason, user string, err error) error {
	a.m.auth.WithLabelValues(mech, "failure", reason).Inc()
	attrs := []any{"conn", c.ID, "remote", addr(c), "mechanism", mech, "reason", reason}
	if user != "" {
		attrs = append(attrs, "user", user)
	}
	a.log.Warn("client authentication failed", append(attrs, "err", err)...)
	return fmt.Errorf("%w: %s authentication failed (%s)", interceptor.ErrClose, mech, reason)
}

func addr(c *interceptor.Conn) string {
	if c.RemoteAddr == nil {
		return ""
	}
	return c.RemoteAddr.String()
}

// connect: mTLS principal, then the SASL gate.
func (a *authswap) connect(ctx context.Context, c *interceptor.Conn) error {
	st := state(c)
	if m := a.cfg.MTLS; m != nil {
		var leaf *x509.Certificate
		var chain []*x509.Certificate
		if c.TLS != nil && len(c.TLS.VerifiedChains) > 0 && len(c.TLS.VerifiedChains[0]) > 0 {
			chain = c.TLS.VerifiedChains[0]
			leaf = chain[0]
		}
		switch {
		case leaf == nil && m.Required:
			return a.refuse(c, "mtls", "no_certificate", "", errors.New("mtls.required is set and the client presented no verified certificate"))
		case leaf != nil:
			if a.crl != nil {
				if reason, err := a.crl.check(leaf, chain); err != nil {
					return a.refuse(c, "mtls", reason, "", err)
				}
			}
			in, err := source(leaf, m.Source)
			if err != nil {
				return a.refuse(c, "mtls", "no_name", "", err)
			}
			name, err := a.rules.Map(in)
			if err != nil {
				return a.refuse(c, "mtls", "no_rule", "", err)
			}
			attrs := map[string]string{
				"subject": leaf.Subject.String(), "issuer": leaf.Issuer.String(),
				"serial": hex.EncodeToString(leaf.SerialNumber.Bytes()),
			}
			if len(leaf.DNSNames) > 0 {
				attrs["san_dns"] = strings.Join(leaf.DNSNames, ",")
			}
			st.mtlsAttr = attrs
			if a.cfg.SASL == nil {
				p := interceptor.Principal{Name: name, Mechanism: "mtls", Attrs: attrs}
				if a.cache != nil {
					// Refuse now a principal that has no upstream identity.
					if _, err := a.lookup(ctx, c, p.Name); err != nil {
						return a.refuse(c, "mtls", "credentials", name, err)
					}
				}
				c.SetPrincipal(p)
				a.m.auth.WithLabelValues("mtls", "success", "").Inc()
			}
		}
	}
	if a.cfg.SASL != nil {
		c.RequireAuth()
	}
	return nil
}

func source(leaf *x509.Certificate, src string) (string, error) {
	switch src {
	case "san_dns":
		if len(leaf.DNSNames) > 0 {
			return leaf.DNSNames[0], nil
		}
	case "san_uri":
		if len(leaf.URIs) > 0 {
			return leaf.URIs[0].String(), nil
		}
	case "san_email":
		if len(leaf.EmailAddresses) > 0 {
			return leaf.EmailAddresses[0], nil
		}
	default:
		return leaf.Subject.String(), nil
	}
	return "", fmt.Errorf("the certificate of %q has no %s", leaf.Subject.String(), src)
}

// lookup finds the principal's upstream credentials, counted; the result is
// kept on the connection for its upstream hook.
func (a *authswap) lookup(ctx context.Context, c *interceptor.Conn, principal string) (creds.Credentials, error) {
	cr, cached, err := a.cache.Lookup(ctx, principal)
	result := "miss"
	switch {
	case errors.Is(err, creds.ErrNoMapping):
		result = "no_mapping"
	case errors.Is(err, creds.ErrInvalid):
		result = "invalid"
	case err != nil:
		result = "unavailable"
	case cached:
		result = "hit"
	}
	a.m.lookups.WithLabelValues(a.cache.Name(), result).Inc()
	if err == nil {
		if verr := cr.Validate(a.cfg.Upstream.Mechanism); verr != nil {
			a.cache.Invalidate(principal)
			a.m.lookups.WithLabelValues(a.cache.Name(), "invalid").Inc()
			return creds.Credentials{}, fmt.Errorf("%w: %s: %v", creds.ErrInvalid, principal, verr)
		}
		if perr := a.prepareUpstream(ctx, principal, cr); perr != nil {
			return creds.Credentials{}, perr
		}
		state(c).creds = &cr
	}
	return cr, err
}

func (a *authswap) offered() []string { return append([]string(nil), a.names...) }

// handshake answers SaslHandshake v0-1.
func (a *authswap) handshake(ctx context.Context, x *interceptor.Exchange) error {
	c := x.Conn
	st := state(c)
	req := x.Request.(*kmsg.SASLHandshakeRequest)
	if st.failed {
		return fmt.Errorf("%w: SaslHandshake after a failed authentication", interceptor.ErrClose)
	}
	reauth := st.name != ""
	if reauth && x.Version == 0 {
		return a.refuse(c, req.Mechanism, "reauth_v0", "", errors.New("re-authentication needs SaslHandshake v1 (KIP-368)"))
	}
	if reauth && st.sess != nil && st.sess.Principal() == "" {
		return a.refuse(c, req.Mechanism, "illegal_state", "", errors.New("SaslHandshake during an unfinished exchange"))
	}
	resp := kmsg.NewPtrSASLHandshakeResponse()
	resp.SupportedMechanisms = a.offered()
	m, ok := a.mechs[req.Mechanism]
	if !ok {
		st.failed = true
		a.m.auth.WithLabelValues("unknown", "failure", "unsupported_mechanism").Inc()
		a.log.Warn("client authentication failed", "conn", c.ID, "remote", addr(c), "mechanism", clip(req.Mechanism), "reason", "unsupported_mechanism")
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		x.Respond(resp)
		return nil
	}
	st.mech, st.sess, st.version = m.Name(), m.Start(), x.Version
	if x.Version == 0 {
		c.ExpectRawTokens(a.rawToken)
	}
	x.Respond(resp)
	return nil
}

// rawToken is the SaslHandshake v0 path: unframed tokens, failure closes.
func (a *authswap) rawToken(ctx context.Context, c *interceptor.Conn, token []byte) ([]byte, bool, error) {
	st := state(c)
	out, done, err := st.sess.Next(ctx, token)
	if err != nil {
		ae := sasl.AsAuthError(st.mech, err)
		st.failed = true
		return nil, false, a.refuse(c, st.mech, ae.Reason, ae.User, err)
	}
	if !done {
		return out, false, nil
	}
	if msg, err := a.finish(ctx, c, st); err != nil {
		st.failed = true
		return nil, false, fmt.Errorf("%w: %s", err, msg)
	}
	return out, true, nil
}

// authenticate answers SaslAuthenticate v0-2.
func (a *authswap) authenticate(ctx context.Context, x *interceptor.Exchange) error {
	c := x.Conn
	st := state(c)
	req := x.Request.(*kmsg.SASLAuthenticateRequest)
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	fail := func(code int16, msg string) error {
		st.failed, st.sess = true, nil
		resp.ErrorCode, resp.ErrorMessage = code, &msg
		x.Respond(resp)
		x.CloseAfterResponse() // as a broker: the client reads the error, then the connection ends
		return nil
	}
	if st.failed {
		return fmt.Errorf("%w: SaslAuthenticate after a failed authentication", interceptor.ErrClose)
	}
	if st.sess == nil || st.version == 0 {
		a.m.auth.WithLabelValues("unknown", "failure", "illegal_state").Inc()
		return fail(kerr.IllegalSaslState.Code, "Unexpected SaslAuthenticate request: send SaslHandshake v1 first")
	}
	out, done, err := st.sess.Next(ctx, req.SASLAuthBytes)
	if err != nil {
		ae := sasl.AsAuthError(st.mech, err)
		_ = a.refuse(c, st.mech, ae.Reason, ae.User, err)
		return fail(kerr.SaslAuthenticationFailed.Code, ae.Message)
	}
	resp.SASLAuthBytes = out
	if done {
		if msg, err := a.finish(ctx, c, st); err != nil {
			_ = err
			return fail(kerr.SaslAuthenticationFailed.Code, msg)
		}
		if lt := a.lifetime(st.sess); lt > 0 && x.Version >= 1 {
			resp.SessionLifetimeMillis = lt.Milliseconds()
			a.expireAfter(c, st, lt)
		}
		st.sess = nil
	}
	x.Respond(resp)
	return nil
}

// expireAfter closes the authentication gate when the session lifetime
// ends, as a broker does (KIP-368): from then on the connection accepts only
// a re-authentication; any other request closes it. A successful
// re-authentication lifts the gate and starts a new lifetime.
func (a *authswap) expireAfter(c *interceptor.Conn, st *connState, lt time.Duration) {
	if st.expiry != nil {
		st.expiry.Stop()
	}
	if st.expiry == nil {
		c.OnClose(func() { st.expiry.Stop() })
	}
	st.expiry = time.AfterFunc(lt, func() {
		c.RequireAuth()
		a.log.Debug("session lifetime ended: re-authentication required", "conn", c.ID, "principal", c.Principal().Name)
	})
}

// lifetime is the KIP-368 session lifetime to announce: the configured one,
// shortened to the Kerberos ticket's end as Kafka does for GSSAPI.
func (a *authswap) lifetime(sess sasl.Session) time.Duration {
	lt := a.cfg.SASL.SessionLifetime.D()
	if e, ok := sess.(interface{ Expiry() time.Time }); ok && lt > 0 {
		if left := time.Until(e.Expiry()); left < lt {
			lt = max(left, time.Second)
		}
	}
	return lt
}

// finish runs when a SASL exchange succeeded: re-authentication keeps the
// name, credentials are looked up, the principal is set. On failure it
// returns the message for the client and the (counted, logged) error.
func (a *authswap) finish(ctx context.Context, c *interceptor.Conn, st *connState) (string, error) {
	name := st.sess.Principal()
	if st.name != "" && st.name != name {
		return "Authentication failed: re-authentication must keep the same principal", a.refuse(c, st.mech, "principal_changed", name,
			fmt.Errorf("re-authenticated as %q on a connection of %q", name, st.name))
	}
	if a.cache != nil {
		if _, err := a.lookup(ctx, c, name); err != nil {
			reason := "no_mapping"
			if !errors.Is(err, creds.ErrNoMapping) {
				reason = "credentials_unavailable"
			}
			return "Authentication failed: no upstream credentials are available for this principal", a.refuse(c, st.mech, reason, name, err)
		}
	}
	attrs := map[string]string{}
	for k, v := range st.mtlsAttr {
		attrs[k] = v
	}
	if as, ok := st.sess.(sasl.AttrSession); ok {
		for k, v := range as.Attrs() {
			attrs[k] = v
		}
	}
	c.SetPrincipal(interceptor.Principal{Name: name, Mechanism: st.mech, Attrs: attrs})
	st.name = name
	a.m.auth.WithLabelValues(st.mech, "success", "").Inc()
	a.log.Debug("client authenticated", "conn", c.ID, "principal", name, "mechanism", st.mech)
	return "", nil
}

// upstream authenticates a fresh upstream connection as the client's
// principal.
func (a *authswap) upstream(ctx context.Context, c *interceptor.Conn, up interceptor.Upstream) error {
	p := c.Principal()
	if p.Anonymous() {
		a.m.upstream.WithLabelValues("none", "failure", "anonymous").Inc()
		a.log.Warn("upstream connection refused: the client has no principal", "conn", c.ID, "remote", addr(c))
		return fmt.Errorf("%w: no authenticated principal for the upstream connection", interceptor.ErrClose)
	}
	st := state(c)
	cr := st.creds
	if cr == nil { // e.g. the proxy's default mTLS principal, or a cache miss after a refusal
		got, err := a.lookup(ctx, c, p.Name)
		if err != nil {
			a.log.Warn("upstream connection refused: credential lookup failed", "conn", c.ID, "principal", p.Name, "err", err)
			return fmt.Errorf("%w: credential lookup for %s failed", interceptor.ErrClose, p.Name)
		}
		cr = &got
	}
	mech := cr.Mechanism
	if mech == "" {
		mech = a.cfg.Upstream.Mechanism
	}
	_, err := upsasl.Authenticate(ctx, up, a.upstreamCredentials(p.Name, mech, cr))
	if err != nil {
		reason := "protocol"
		var ue *upsasl.Error
		if errors.As(err, &ue) {
			reason = ue.Reason
		}
		a.m.upstream.WithLabelValues(mech, "failure", reason).Inc()
		// A refusal may be a rotated secret: the next connection asks the store.
		a.cache.Invalidate(p.Name)
		st.creds = nil
		a.log.Warn("upstream SASL failed", "conn", c.ID, "principal", p.Name, "mechanism", mech, "upstream", up.ServerName(), "reason", reason, "err", err)
		return fmt.Errorf("%w: upstream SASL as %s failed", interceptor.ErrClose, p.Name)
	}
	a.m.upstream.WithLabelValues(mech, "success", "").Inc()
	return nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}
