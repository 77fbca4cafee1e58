package vaulttransit

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/internal/kmsdouble"
)

// TestWarningsAndSecretFileModes (issue 12, point 10): TLS verification off
// (config or VAULT_SKIP_VERIFY) and an inline token are accepted with a
// warning each; a token file or AppRole secret_id file that group or
// others can read is refused.
func TestWarningsAndSecretFileModes(t *testing.T) {
	t.Setenv("VAULT_SKIP_VERIFY", "")
	cases := []struct {
		cfg  Config
		want []string
	}{
		{Config{Auth: AuthConfig{TokenFile: "/run/token"}}, nil},
		{Config{Auth: AuthConfig{Token: "s.inline"}}, []string{"auth.token is inline"}},
		{Config{TLS: TLSConfig{InsecureSkipVerify: true}, Auth: AuthConfig{Token: "s.inline"}}, []string{"tls.insecure_skip_verify", "auth.token is inline"}},
	}
	for i, c := range cases {
		got := c.cfg.Warnings()
		if len(got) != len(c.want) {
			t.Errorf("case %d: warnings %q, want %q", i, got, c.want)
			continue
		}
		for j := range got {
			if !strings.HasPrefix(got[j], c.want[j]) {
				t.Errorf("case %d: warning %q, want one starting %q", i, got[j], c.want[j])
			}
		}
	}
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	if w := (&Config{}).Warnings(); len(w) != 1 || !strings.Contains(w[0], "VAULT_SKIP_VERIFY") {
		t.Errorf("VAULT_SKIP_VERIFY: warnings %q", w)
	}
	os.Unsetenv("VAULT_SKIP_VERIFY")

	v := newDouble(t, kmsdouble.VaultOptions{})
	file := writeFile(t, "token", v.IssueToken(""))
	cfg := baseConfig(v)
	cfg.Auth = AuthConfig{TokenFile: file}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); !errors.Is(err, kms.ErrInsecurePermissions) || !errors.Is(err, kms.ErrAccessDenied) {
		t.Errorf("world-readable token file: %v, want ErrInsecurePermissions", err)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, newProvider(t, cfg), "strait")

	v.Mount("", "approle", kmsdouble.KindAppRole)
	v.AddAppRole("", "approle", "role-1", "secret-1")
	sid := writeFile(t, "secret-id", "secret-1")
	if err := os.Chmod(sid, 0o660); err != nil { // group-writable
		t.Fatal(err)
	}
	cfg.Auth = AuthConfig{Method: AuthAppRole, RoleID: "role-1", SecretIDFile: sid}
	p := newProvider(t, cfg) // AppRole logs in on the first call
	_, err := p.GenerateDataKey(t.Context(), "strait")
	if !errors.Is(err, kms.ErrInsecurePermissions) {
		t.Errorf("group-writable secret_id file: %v, want ErrInsecurePermissions", err)
	}
}
