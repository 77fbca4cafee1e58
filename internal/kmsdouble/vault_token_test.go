package kmsdouble

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// auth/token/lookup-self and renew-self as Vault's token API documents.
func TestVaultTokenTTLAndRenewSelf(t *testing.T) {
	v := NewVault(VaultOptions{})
	t.Cleanup(v.Close)
	tok := v.IssueTokenTTL("", TokenTTL{TTL: 2 * time.Second, MaxTTL: 4 * time.Second, Renewable: true})
	hdr := map[string]string{"X-Vault-Token": tok}
	code, body, _ := post(t, v.URL()+"/v1/auth/token/lookup-self", hdr, "")
	data, _ := body["data"].(map[string]any)
	if code != 200 || data["ttl"] != 2.0 || data["renewable"] != true || data["creation_ttl"] != 2.0 || data["explicit_max_ttl"] != 4.0 || data["expire_time"] == nil {
		t.Fatalf("lookup-self: %d %v", code, body)
	}
	code, body, _ = post(t, v.URL()+"/v1/auth/token/renew-self", hdr, `{"increment": 3}`)
	auth, _ := body["auth"].(map[string]any)
	if code != 200 || auth["client_token"] != tok || auth["lease_duration"] != 3.0 || auth["renewable"] != true {
		t.Fatalf("renew-self: %d %v", code, body)
	}
	// Past the max TTL: capped, with Vault's warning.
	code, body, _ = post(t, v.URL()+"/v1/auth/token/renew-self", hdr, `{"increment": "1h"}`)
	auth, _ = body["auth"].(map[string]any)
	w, _ := body["warnings"].([]any)
	if code != 200 || auth["lease_duration"].(float64) > 4 || len(w) != 1 || !strings.Contains(w[0].(string), "exceeded the effective max_ttl") {
		t.Fatalf("capped renew-self: %d %v", code, body)
	}
	// Not renewable.
	nr := v.IssueTokenTTL("", TokenTTL{TTL: time.Hour})
	if code, body, _ := post(t, v.URL()+"/v1/auth/token/renew-self", map[string]string{"X-Vault-Token": nr}, "{}"); code != http.StatusBadRequest || !strings.Contains(errsOf(body), "lease is not renewable") {
		t.Fatalf("non-renewable: %d %v", code, body)
	}
	// Expired: gone.
	short := v.IssueTokenTTL("", TokenTTL{TTL: time.Second, Renewable: true})
	time.Sleep(1100 * time.Millisecond)
	if code, _, _ := post(t, v.URL()+"/v1/auth/token/lookup-self", map[string]string{"X-Vault-Token": short}, ""); code != http.StatusForbidden {
		t.Fatalf("expired token: %d", code)
	}
	// Logins issue tokens with the mount's TTL.
	v.Mount("", "approle", KindAppRole)
	v.AddAppRole("", "approle", "r", "s")
	v.SetLoginTTL("", "approle", TokenTTL{TTL: 90 * time.Second, Renewable: true})
	code, body, _ = post(t, v.URL()+"/v1/auth/approle/login", nil, `{"role_id":"r","secret_id":"s"}`)
	auth, _ = body["auth"].(map[string]any)
	if code != 200 || auth["lease_duration"] != 90.0 || auth["renewable"] != true {
		t.Fatalf("login: %d %v", code, body)
	}
}

func errsOf(body map[string]any) string {
	e, _ := body["errors"].([]any)
	var s []string
	for _, x := range e {
		s = append(s, x.(string))
	}
	return strings.Join(s, "; ")
}
