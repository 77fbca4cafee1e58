package authswap

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/authswap/creds"
	"github.com/strait-proxy/strait/config"
)

func TestUpstreamOAuthConfig(t *testing.T) {
	decode := func(s string) Config {
		t.Helper()
		j, err := yaml.YAMLToJSON([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		var c Config
		if err := config.DecodeStrict(json.RawMessage(j), &c, "x"); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		return c
	}
	for _, tc := range []struct{ yaml, want string }{
		{`{credentials: {file: f}, upstream: {mechanism: OAUTHBEARER, oauth: {client_auth: jwt}}}`, `upstream.oauth.client_auth: unknown "jwt"`},
		{`{credentials: {file: f}, upstream: {oauth: {token_url: "http://idp.example.com/token"}}}`, "upstream.oauth.token_url: http://idp.example.com/token: http is allowed only to a loopback"},
		{`{credentials: {file: f}, upstream: {oauth: {token_url: "https://id:pw@idp.example.com/token"}}}`, "upstream.oauth.token_url: must not carry user information"},
		{`{credentials: {file: f}, upstream: {oauth: {refresh_before: -1s}}}`, "upstream.oauth: refresh_before and timeout must not be negative"},
	} {
		c := decode(tc.yaml)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.yaml, err, tc.want)
		}
	}
	c := decode(`{credentials: {file: f}, upstream: {mechanism: AWS_MSK_IAM}}`)
	if err := c.Validate(); err != nil {
		t.Fatalf("AWS_MSK_IAM: %v", err)
	}
	c = decode(`{credentials: {file: f}, upstream: {mechanism: OAUTHBEARER, oauth: {token_url: "https://idp.example.com/token"}}}`)
	if err := c.Validate(); err != nil || c.Upstream.OAuth.ClientAuth != "basic" || c.Upstream.OAuth.RefreshBefore.D().Seconds() != 60 || c.Upstream.OAuth.Timeout.D().Seconds() != 10 {
		t.Fatalf("defaults: %v %+v", err, c.Upstream.OAuth)
	}
	if _, err := newOAuthTokens(&UpstreamOAuthConfig{CAFile: "/nonexistent/ca.pem"}, nil); err == nil || !strings.Contains(err.Error(), "upstream.oauth.ca_file") {
		t.Fatalf("missing CA file: %v", err)
	}
}

// An OAuth entry with no token URL (neither its own nor upstream.oauth's)
// is invalid: refused at lookup, before any request is sent.
func TestUpstreamOAuthNeedsTokenURL(t *testing.T) {
	tokens, err := newOAuthTokens(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &authswap{cfg: Config{Upstream: UpstreamConfig{Mechanism: "OAUTHBEARER"}}, tokens: tokens}
	err = a.prepareUpstream(context.Background(), "alice", creds.Credentials{ClientID: "c", ClientSecret: "s"})
	if !errors.Is(err, creds.ErrInvalid) || !strings.Contains(err.Error(), "no upstream.oauth.token_url") {
		t.Fatalf("no token URL: %v", err)
	}
	for _, cr := range []creds.Credentials{{Token: "static"}, {Mechanism: "PLAIN", Username: "u", Password: "p"}} {
		if err := a.prepareUpstream(context.Background(), "alice", cr); err != nil {
			t.Fatalf("%v: %v", cr, err)
		}
	}
}
