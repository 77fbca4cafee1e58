package oauthdouble

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The wire behaviour of RFC 6749 sections 2.3.1, 4.4, 5.1 and 5.2.
func TestTokenEndpoint(t *testing.T) {
	s, err := New(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.AddClient("c1", Client{Secret: "a b:c", Subject: "svc", Scopes: []string{"kafka"}, Audiences: []string{"kafka"}})
	post := func(form url.Values, basic bool, id, secret string) (int, map[string]any, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, s.TokenURL(), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if basic {
			req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body, resp.Header
	}
	gt := url.Values{"grant_type": {"client_credentials"}}
	code, body, h := post(gt, true, "c1", "a b:c")
	if code != 200 || body["token_type"] != "Bearer" || body["expires_in"] != 60.0 || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("basic: %d %v", code, body)
	}
	// The token is a JWT that verifies with the served JWKS.
	resp, err := http.Get(s.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	var ks jose.JSONWebKeySet
	_ = json.NewDecoder(resp.Body).Decode(&ks)
	resp.Body.Close()
	tok, err := jwt.ParseSigned(body["access_token"].(string), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var cl jwt.Claims
	if err := tok.Claims(ks.Keys[0].Key, &cl); err != nil || cl.Subject != "svc" || cl.Issuer != s.Issuer || !cl.Audience.Contains("kafka") {
		t.Fatalf("claims %+v: %v", cl, err)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"c1"}, "client_secret": {"a b:c"}}
	if code, _, _ := post(form, false, "", ""); code != 200 {
		t.Fatalf("client_secret_post: %d", code)
	}
	for name, tc := range map[string]struct {
		form         url.Values
		basic        bool
		id, secret   string
		status       int
		errCode, www string
	}{
		"wrong secret, basic": {gt, true, "c1", "x", 401, "invalid_client", "Basic"},
		"wrong secret, post":  {url.Values{"grant_type": {"client_credentials"}, "client_id": {"c1"}, "client_secret": {"x"}}, false, "", "", 400, "invalid_client", ""},
		"two methods":         {url.Values{"grant_type": {"client_credentials"}, "client_secret": {"a b:c"}}, true, "c1", "a b:c", 400, "invalid_request", ""},
		"other grant":         {url.Values{"grant_type": {"password"}}, true, "c1", "a b:c", 400, "unsupported_grant_type", ""},
		"no grant":            {url.Values{}, true, "c1", "a b:c", 400, "invalid_request", ""},
		"scope":               {url.Values{"grant_type": {"client_credentials"}, "scope": {"kafka admin"}}, true, "c1", "a b:c", 400, "invalid_scope", ""},
		"audience":            {url.Values{"grant_type": {"client_credentials"}, "audience": {"x"}}, true, "c1", "a b:c", 400, "invalid_target", ""},
	} {
		code, body, h := post(tc.form, tc.basic, tc.id, tc.secret)
		if code != tc.status || body["error"] != tc.errCode || !strings.HasPrefix(h.Get("WWW-Authenticate"), tc.www) {
			t.Errorf("%s: %d %v %q", name, code, body, h.Get("WWW-Authenticate"))
		}
	}
	s.Revoke("c1")
	if code, body, _ := post(gt, true, "c1", "a b:c"); code != 401 || body["error"] != "invalid_client" {
		t.Fatalf("revoked: %d %v", code, body)
	}
	if n := len(s.Issued()); n != 2 {
		t.Fatalf("%d tokens issued, want 2", n)
	}
}
