package vaultauth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/strait-proxy/strait/internal/kmsdouble"
)

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func session(t *testing.T, v *kmsdouble.Vault, ns string, a Auth, o Options) *Session {
	t.Helper()
	s, err := NewSession(ClientConfig{Address: v.URL(), Namespace: ns, Timeout: 5 * time.Second, MaxAttempts: 1}, a, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func readKV(ctx context.Context, s *Session) (*vault.KVSecret, error) {
	return Do(ctx, s, func(ctx context.Context) (*vault.KVSecret, error) { return s.Client().KVv2("secret").Get(ctx, "app") })
}

func TestNewClient(t *testing.T) {
	if _, err := NewClient(ClientConfig{TLS: TLS{CACert: "/nonexistent/ca.pem"}}); err == nil || !strings.HasPrefix(err.Error(), "tls: ") {
		t.Fatalf("missing CA: %v", err)
	}
	t.Setenv("VAULT_MAX_RETRIES", "many")
	if _, err := NewClient(ClientConfig{}); err == nil || !strings.HasPrefix(err.Error(), "environment: ") {
		t.Fatalf("bad VAULT_MAX_RETRIES: %v", err)
	}
}

func TestTokenSources(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	v.PutKV("", "secret", "app", map[string]any{"k": "v"})
	dir := t.TempDir()
	ctx := context.Background()
	good := v.IssueToken("")
	t.Setenv("VAULT_TOKEN", "")
	for name, a := range map[string]Auth{
		"inline": {Token: good, TokenFile: write(t, dir, "bad", "hvs.wrong")},
		"file":   {TokenFile: write(t, dir, "good", good+"\n")},
		"env":    {TokenEnv: "TEST_VAULT_TOKEN"},
	} {
		t.Setenv("TEST_VAULT_TOKEN", good)
		if _, err := readKV(ctx, session(t, v, "", a, Options{})); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, tc := range map[string]struct {
		a    Auth
		want string
	}{
		"none":        {Auth{}, "no token"},
		"empty file":  {Auth{TokenFile: write(t, dir, "empty", "\n")}, "token file " + dir + "/empty is empty"},
		"no file":     {Auth{TokenFile: dir + "/missing"}, "reading token file: "},
		"empty env":   {Auth{TokenEnv: "TEST_EMPTY"}, "environment variable TEST_EMPTY (token) is empty"},
		"custom read": {Auth{TokenFile: dir + "/good", ReadSecretFile: func(string) (string, error) { return "", errors.New("mode 0644") }}, "reading token file: mode 0644"},
	} {
		_, err := readKV(ctx, session(t, v, "", tc.a, Options{}))
		var ae *AuthError
		if !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an AuthError with %q", name, err, tc.want)
		}
	}
	// VAULT_TOKEN last.
	t.Setenv("VAULT_TOKEN", good)
	if _, err := readKV(ctx, session(t, v, "", Auth{}, Options{})); err != nil {
		t.Fatalf("VAULT_TOKEN: %v", err)
	}
	// A revoked token without a file to re-read: the 403 is the call's.
	s := session(t, v, "", Auth{Token: good}, Options{})
	v.RevokeToken(good)
	var re *vault.ResponseError
	if _, err := readKV(ctx, s); !errors.As(err, &re) || re.StatusCode != 403 || s.CanReauth() {
		t.Fatalf("revoked inline token: %v", err)
	}
}

func TestLoginsAndReauth(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	v.CreateNamespace("team-a")
	v.Mount("team-a", "secret", kmsdouble.KindKVv2)
	v.Mount("team-a", "approle", kmsdouble.KindAppRole)
	v.Mount("team-a", "k8s", kmsdouble.KindKubernetes)
	v.AddAppRole("team-a", "approle", "role-1", "sid-1")
	v.AddKubernetesRole("team-a", "k8s", "strait", "sa-jwt")
	v.PutKV("team-a", "secret", "app", map[string]any{"k": "v"})
	dir := t.TempDir()
	ctx := context.Background()
	approle := Auth{Method: MethodAppRole, MountPath: "approle", RoleIDFile: write(t, dir, "role", "role-1\n"), SecretIDFile: write(t, dir, "sid", "sid-1")}
	s := session(t, v, "team-a", approle, Options{})
	if _, err := readKV(ctx, s); err != nil || v.Calls("auth/approle/login") != 1 {
		t.Fatalf("approle: %v, %d logins", err, v.Calls("auth/approle/login"))
	}
	// The token is revoked: concurrent calls share one new login.
	v.RevokeToken(s.Client().Token())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := readKV(ctx, s); err != nil {
				t.Errorf("after revocation: %v", err)
			}
		})
	}
	wg.Wait()
	if n := v.Calls("auth/approle/login"); n != 2 {
		t.Fatalf("%d logins after one revocation, want 2", n)
	}
	k8s := Auth{Method: MethodKubernetes, MountPath: "k8s", Role: "strait", JWTFile: write(t, dir, "jwt", "sa-jwt")}
	if _, err := readKV(ctx, session(t, v, "team-a", k8s, Options{})); err != nil {
		t.Fatalf("kubernetes: %v", err)
	}
	// Refused logins are LoginErrors with Vault's answer.
	for name, a := range map[string]Auth{
		"wrong secret_id": {Method: MethodAppRole, MountPath: "approle", RoleID: "role-1", SecretIDEnv: "TEST_SID"},
		"wrong jwt":       {Method: MethodKubernetes, MountPath: "k8s", Role: "strait", JWTFile: write(t, dir, "jwt2", "other")},
	} {
		t.Setenv("TEST_SID", "sid-wrong")
		_, err := readKV(ctx, session(t, v, "team-a", a, Options{}))
		var le *LoginError
		var re *vault.ResponseError
		if !errors.As(err, &le) || le.Method != a.Method || !errors.As(err, &re) {
			t.Errorf("%s: %v, want a LoginError with Vault's answer", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "sid-wrong") {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
	// The secret_id file is read again at every login (rotation).
	v.AddAppRole("team-a", "approle", "role-1", "sid-2")
	write(t, dir, "sid", "sid-2")
	v.RevokeToken(s.Client().Token())
	if _, err := readKV(ctx, s); err != nil {
		t.Fatalf("after secret_id rotation: %v", err)
	}
}

// With Renew, a renewable login token is renewed, then replaced by a new
// login near its max TTL; without it (vault-transit), it is not.
func TestRenew(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	v.Mount("", "approle", kmsdouble.KindAppRole)
	v.AddAppRole("", "approle", "role-1", "")
	v.SetLoginTTL("", "approle", kmsdouble.TokenTTL{TTL: 2 * time.Second, MaxTTL: 4 * time.Second, Renewable: true})
	v.PutKV("", "secret", "app", map[string]any{"k": "v"})
	ctx := context.Background()
	a := Auth{Method: MethodAppRole, MountPath: "approle", RoleID: "role-1"}
	plain := session(t, v, "", a, Options{})
	s := session(t, v, "", a, Options{Renew: true})
	for _, x := range []*Session{plain, s} {
		if _, err := readKV(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Renewals() < 1 || v.Calls("auth/approle/login") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("renewals %d, logins %d", s.Renewals(), v.Calls("auth/approle/login"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if plain.Renewals() != 0 {
		t.Fatal("a session without Renew renewed its token")
	}
	if _, err := readKV(ctx, s); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
}
