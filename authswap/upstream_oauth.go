package authswap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-proxy/strait/authswap/creds"
	"github.com/strait-proxy/strait/authswap/upsasl"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/promreg"
)

// UpstreamOAuthConfig is the OAuth 2.0 token endpoint from which Strait gets
// OAUTHBEARER tokens for principals whose credentials are a client_id and a
// client_secret (the client-credentials grant, RFC 6749 section 4.4). A
// credentials entry's token_url, scope and audience override these.
type UpstreamOAuthConfig struct {
	// TokenURL, e.g. https://idp.example.com/oauth2/token: https, or http
	// to a loopback address only.
	TokenURL string `json:"token_url,omitempty"`
	// Scope requested, space-delimited (default: none sent).
	Scope string `json:"scope,omitempty"`
	// Audience sent as the "audience" parameter (default: none sent).
	Audience string `json:"audience,omitempty"`
	// ClientAuth: "basic" (HTTP Basic, the default) or "post" (client_id
	// and client_secret in the request body).
	ClientAuth string `json:"client_auth,omitempty"`
	// RefreshBefore: a token is replaced when it expires within this long
	// (default 1m), or within half its lifetime if that is shorter.
	RefreshBefore config.Duration `json:"refresh_before,omitempty"`
	// Timeout of one token request (default 10s).
	Timeout config.Duration `json:"timeout,omitempty"`
	// CAFile: PEM CA certificates to trust for the token endpoint instead
	// of the system's.
	CAFile string `json:"ca_file,omitempty"`
}

func (o *UpstreamOAuthConfig) validate(add func(string, ...any)) {
	if o.TokenURL != "" {
		if err := creds.CheckTokenURL(o.TokenURL); err != nil {
			add("upstream.oauth.token_url: %v", err)
		}
	}
	switch o.ClientAuth {
	case "":
		o.ClientAuth = "basic"
	case "basic", "post":
	default:
		add("upstream.oauth.client_auth: unknown %q (basic, post)", o.ClientAuth)
	}
	if o.RefreshBefore == 0 {
		o.RefreshBefore = config.Duration(time.Minute)
	}
	if o.Timeout == 0 {
		o.Timeout = config.Duration(10 * time.Second)
	}
	if o.RefreshBefore.D() < 0 || o.Timeout.D() < 0 {
		add("upstream.oauth: refresh_before and timeout must not be negative")
	}
}

// newOAuthTokens builds the per-principal token cache and its metric.
func newOAuthTokens(cfg *UpstreamOAuthConfig, reg prometheus.Registerer) (*upsasl.OAuthTokens, error) {
	if cfg == nil {
		cfg = &UpstreamOAuthConfig{}
		cfg.validate(func(string, ...any) {})
	}
	hc, err := upsasl.HTTPClientWithCA(cfg.CAFile, cfg.Timeout.D())
	if err != nil {
		return nil, fmt.Errorf("upstream.oauth.ca_file: %w", err)
	}
	fetches := promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_authswap_oauth_token_requests_total",
		Help: "Requests to OAuth token endpoints for upstream OAUTHBEARER tokens, by result (success, refused: an OAuth error such as invalid_client, unavailable).",
	}, []string{"result"}))
	return upsasl.NewOAuthTokens(upsasl.OAuthConfig{ClientAuth: cfg.ClientAuth, RefreshBefore: cfg.RefreshBefore.D(), HTTPClient: hc,
		OnFetch: func(r string) { fetches.WithLabelValues(r).Inc() }}), nil
}

// upstreamCredentials is what upsasl presents for the principal's entry.
func (a *authswap) upstreamCredentials(principal, mech string, cr *creds.Credentials) upsasl.Credentials {
	u := upsasl.Credentials{Mechanism: mech, Username: cr.Username, Password: cr.Password, Token: cr.Token,
		AWS: upsasl.AWSCredentials{AccessKeyID: cr.AWSAccessKeyID, SecretAccessKey: cr.AWSSecretAccessKey, SessionToken: cr.AWSSessionToken}}
	if mech == "OAUTHBEARER" && cr.Token == "" && cr.ClientID != "" {
		u.TokenSource = a.tokens.Source(principal, a.clientCredentials(cr))
	}
	return u
}

func (a *authswap) clientCredentials(cr *creds.Credentials) upsasl.ClientCredentials {
	cc := upsasl.ClientCredentials{TokenURL: cr.TokenURL, ClientID: cr.ClientID, ClientSecret: cr.ClientSecret, Scope: cr.Scope, Audience: cr.Audience}
	if o := a.cfg.Upstream.OAuth; o != nil {
		if cc.TokenURL == "" {
			cc.TokenURL = o.TokenURL
		}
		if cc.Scope == "" {
			cc.Scope = o.Scope
		}
		if cc.Audience == "" {
			cc.Audience = o.Audience
		}
	}
	return cc
}

// prepareUpstream runs when a principal's credentials were looked up, before
// the client is told it authenticated: an OAuth client gets its token now
// (or reuses the cached one), so that a token endpoint that is down or
// refuses the client reaches SASL clients as SASL_AUTHENTICATION_FAILED
// rather than as a closed connection at their first request.
func (a *authswap) prepareUpstream(ctx context.Context, principal string, cr creds.Credentials) error {
	mech := cr.Mechanism
	if mech == "" {
		mech = a.cfg.Upstream.Mechanism
	}
	if mech != "OAUTHBEARER" || cr.Token != "" || cr.ClientID == "" {
		return nil
	}
	if a.clientCredentials(&cr).TokenURL == "" {
		return fmt.Errorf("%w: %s: client credentials without token_url, and no upstream.oauth.token_url", creds.ErrInvalid, principal)
	}
	_, err := a.tokens.Source(principal, a.clientCredentials(&cr)).Token(ctx)
	if err == nil {
		return nil
	}
	var ue *upsasl.Error
	if errors.As(err, &ue) && ue.Reason == "token_refused" {
		a.cache.Invalidate(principal) // the store may hold a rotated secret by now
	}
	return fmt.Errorf("%w: %v", creds.ErrUnavailable, err)
}
