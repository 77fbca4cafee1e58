package vaulttransit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strait-proxy/strait/config/duration"
	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/internal/kmsdouble"
)

// These tests run the official hashicorp/vault/api client against
// internal/kmsdouble.Vault, an in-process test double of Vault's documented
// HTTP API (Transit, KV v2, AppRole and Kubernetes login): Vault itself
// cannot run here.

func vaultEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH",
		"VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY", "VAULT_SKIP_VERIFY", "VAULT_MAX_RETRIES", "VAULT_CLIENT_TIMEOUT",
		"VAULT_AGENT_ADDR", "VAULT_RATE_LIMIT", "VAULT_TLS_SERVER_NAME", "VAULT_SRV_LOOKUP", "VAULT_HTTP_PROXY", "VAULT_PROXY_ADDR"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func newDouble(t *testing.T, opts kmsdouble.VaultOptions) *kmsdouble.Vault {
	t.Helper()
	vaultEnv(t)
	v := kmsdouble.NewVault(opts)
	t.Cleanup(v.Close)
	v.CreateTransitKey("", "transit", "strait")
	return v
}

func baseConfig(v *kmsdouble.Vault) Config {
	return Config{
		Address:     v.URL(),
		Auth:        AuthConfig{Token: v.RootToken},
		Timeout:     duration.Duration(3 * time.Second),
		MaxAttempts: 2,
		MaxBackoff:  duration.Duration(20 * time.Millisecond),
	}
}

func newProvider(t *testing.T, cfg Config) *Provider {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func roundTrip(t *testing.T, p *Provider, key string) kms.DataKey {
	t.Helper()
	ctx := context.Background()
	dk, err := p.GenerateDataKey(ctx, key)
	if err != nil {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	if len(dk.Plaintext) != 32 {
		t.Fatalf("plaintext is %d bytes", len(dk.Plaintext))
	}
	pt, err := p.Decrypt(ctx, key, dk.Wrapped)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if !bytes.Equal(pt, dk.Plaintext) {
		t.Fatal("round trip changed the key")
	}
	return dk
}

func only(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	for _, other := range []error{kms.ErrUnavailable, kms.ErrKeyNotFound, kms.ErrAccessDenied, kms.ErrInvalidCiphertext} {
		if other != want && errors.Is(err, other) {
			t.Fatalf("%v also matches %v", err, other)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	cfg := baseConfig(v)
	cfg.KeyName = "strait"
	p := newProvider(t, cfg)
	if p.Name() != "vault-transit" {
		t.Fatal(p.Name())
	}
	dk := roundTrip(t, p, "strait")
	if !strings.HasPrefix(string(dk.Wrapped), "vault:v1:") {
		t.Fatalf("wrapped = %q", dk.Wrapped)
	}
	if len(dk.Wrapped) != 89 {
		t.Fatalf("wrapped DEK is %d bytes, want 89 (vault:v1: + base64 of 12+32+16)", len(dk.Wrapped))
	}
	roundTrip(t, p, "") // default key_name
	if v.Calls("transit/datakey") != 2 || v.Calls("transit/decrypt") != 2 {
		t.Fatalf("calls: datakey %d decrypt %d", v.Calls("transit/datakey"), v.Calls("transit/decrypt"))
	}
}

func TestRotation(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	p := newProvider(t, baseConfig(v))
	ctx := context.Background()
	v1 := roundTrip(t, p, "strait")
	// Rotate through the API, as an operator would.
	if _, err := p.client.Logical().Write("transit/keys/strait/rotate", nil); err != nil {
		t.Fatal(err)
	}
	v2 := roundTrip(t, p, "strait")
	if !strings.HasPrefix(string(v2.Wrapped), "vault:v2:") {
		t.Fatalf("after rotate: %q", v2.Wrapped)
	}
	pt, err := p.Decrypt(ctx, "strait", v1.Wrapped)
	if err != nil || !bytes.Equal(pt, v1.Plaintext) {
		t.Fatalf("v1 after rotation: %v", err)
	}
	// Retiring v1 (min_decryption_version=2) makes it a missing key version.
	if _, err := p.client.Logical().Write("transit/keys/strait/config", map[string]any{"min_decryption_version": 2}); err != nil {
		t.Fatal(err)
	}
	_, err = p.Decrypt(ctx, "strait", v1.Wrapped)
	only(t, err, kms.ErrKeyNotFound)
	if _, err := p.Decrypt(ctx, "strait", v2.Wrapped); err != nil {
		t.Fatal(err)
	}
}

func TestErrorMapping(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		prepare func(v *kmsdouble.Vault, cfg *Config)
		op      string // gen, dec
		key     string
		want    error
	}{
		{"unknown key gen", nil, "gen", "nope", kms.ErrKeyNotFound},
		{"unknown key dec", nil, "dec", "nope", kms.ErrKeyNotFound},
		{"unknown mount", func(v *kmsdouble.Vault, c *Config) { c.MountPath = "transit2" }, "gen", "strait", kms.ErrKeyNotFound},
		{"bad token", func(v *kmsdouble.Vault, c *Config) { c.Auth.Token = "hvs.bogus" }, "gen", "strait", kms.ErrAccessDenied},
		{"403 gen", func(v *kmsdouble.Vault, c *Config) { v.SetFault(kmsdouble.FaultDeny) }, "gen", "strait", kms.ErrAccessDenied},
		{"403 dec", func(v *kmsdouble.Vault, c *Config) { v.SetFault(kmsdouble.FaultDeny) }, "dec", "strait", kms.ErrAccessDenied},
		{"429 gen", func(v *kmsdouble.Vault, c *Config) { v.SetFault(kmsdouble.FaultThrottle) }, "gen", "strait", kms.ErrUnavailable},
		{"429 dec", func(v *kmsdouble.Vault, c *Config) { v.SetFault(kmsdouble.FaultThrottle) }, "dec", "strait", kms.ErrUnavailable},
		{"5xx gen", func(v *kmsdouble.Vault, c *Config) { v.SetFault(kmsdouble.Fault5xx) }, "gen", "strait", kms.ErrUnavailable},
		{"5xx dec", func(v *kmsdouble.Vault, c *Config) { v.SetFault(kmsdouble.Fault5xx) }, "dec", "strait", kms.ErrUnavailable},
		{"down gen", func(v *kmsdouble.Vault, c *Config) { v.SetFault(kmsdouble.FaultDown) }, "gen", "strait", kms.ErrUnavailable},
		{"down dec", func(v *kmsdouble.Vault, c *Config) { v.SetFault(kmsdouble.FaultDown) }, "dec", "strait", kms.ErrUnavailable},
		{"bad key name", nil, "gen", "a/b", kms.ErrKeyNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newDouble(t, kmsdouble.VaultOptions{})
			good := newProvider(t, baseConfig(v))
			dk, err := good.GenerateDataKey(ctx, "strait")
			if err != nil {
				t.Fatal(err)
			}
			cfg := baseConfig(v)
			if c.prepare != nil {
				c.prepare(v, &cfg)
			}
			p := newProvider(t, cfg)
			if c.op == "gen" {
				_, err = p.GenerateDataKey(ctx, c.key)
			} else {
				_, err = p.Decrypt(ctx, c.key, dk.Wrapped)
			}
			only(t, err, c.want)
			t.Log(err)
		})
	}
}

func TestRetriesBoundedAndRecover(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	cfg := baseConfig(v)
	cfg.MaxAttempts = 3
	p := newProvider(t, cfg)
	v.SetFault(kmsdouble.Fault5xx)
	_, err := p.GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrUnavailable)
	if n := v.Calls("transit/datakey"); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	v.FailNext(kmsdouble.FaultThrottle, 1)
	if _, err := p.GenerateDataKey(context.Background(), "strait"); err != nil {
		t.Fatalf("one 429 was not retried: %v", err)
	}
	v.SetFault(kmsdouble.FaultDown)
	_, err = p.GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrUnavailable)
	v.SetFault(kmsdouble.FaultNone)
	roundTrip(t, p, "strait")
}

func TestTimeout(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	cfg := baseConfig(v)
	cfg.Timeout = duration.Duration(300 * time.Millisecond)
	p := newProvider(t, cfg)
	dk := roundTrip(t, p, "strait")
	v.SetFault(kmsdouble.FaultHang)
	start := time.Now()
	_, err := p.Decrypt(context.Background(), "strait", dk.Wrapped)
	only(t, err, kms.ErrUnavailable)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("not a deadline: %v", err)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("timeout not honoured: %v", el)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = p.GenerateDataKey(ctx, "strait")
	only(t, err, kms.ErrUnavailable)
	if time.Since(start) > 3*time.Second {
		t.Fatal("caller deadline not honoured")
	}
	v.SetFault(kmsdouble.FaultNone)
	roundTrip(t, p, "strait")
}

func TestTamper(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	v.CreateTransitKey("", "transit", "other")
	p := newProvider(t, baseConfig(v))
	ctx := context.Background()
	dk := roundTrip(t, p, "strait")
	w := string(dk.Wrapped)
	// Change one base64 character of the payload to another valid one, so
	// the ciphertext reaches Vault and fails authentication there.
	i := len("vault:v1:") + 20
	c := byte('A')
	if w[i] == 'A' {
		c = 'B'
	}
	flipped := w[:i] + string(c) + w[i+1:]
	for name, bad := range map[string]string{
		"flipped":   flipped,
		"too new":   strings.Replace(w, "vault:v1:", "vault:v7:", 1),
		"v0":        strings.Replace(w, "vault:v1:", "vault:v0:", 1),
		"v01":       strings.Replace(w, "vault:v1:", "vault:v01:", 1),
		"no prefix": strings.TrimPrefix(w, "vault:"),
		"garbage":   "vault:v1:!!!",
		"truncated": w[:30],
		"empty":     "",
	} {
		_, err := p.Decrypt(ctx, "strait", []byte(bad))
		if !errors.Is(err, kms.ErrInvalidCiphertext) {
			t.Fatalf("%s: got %v", name, err)
		}
	}
	if n := v.Calls("transit/decrypt"); n < 3 {
		t.Fatalf("only %d tampered ciphertexts reached the double", n)
	}
	_, err := p.Decrypt(ctx, "other", dk.Wrapped)
	only(t, err, kms.ErrInvalidCiphertext)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAppRoleLoginAndRelogin(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	v.Mount("", "approle", kmsdouble.KindAppRole)
	v.AddAppRole("", "approle", "role-1234", "secret-5678")
	cfg := baseConfig(v)
	cfg.Auth = AuthConfig{Method: AuthAppRole, RoleID: "role-1234", SecretIDFile: writeFile(t, "secret-id", "secret-5678")}
	p := newProvider(t, cfg)
	for i := 0; i < 3; i++ {
		roundTrip(t, p, "strait")
	}
	if n := v.Calls("auth/approle/login"); n != 1 {
		t.Fatalf("%d logins, want 1", n)
	}
	// The token expires: one 403, one re-login, the call succeeds.
	v.RevokeToken(p.client.Token())
	roundTrip(t, p, "strait")
	if n := v.Calls("auth/approle/login"); n != 2 {
		t.Fatalf("%d logins, want 2", n)
	}
	// Refused login.
	cfg.Auth.SecretIDFile = writeFile(t, "secret-id", "wrong")
	bad := newProvider(t, cfg)
	_, err := bad.GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrAccessDenied)
	// Missing secret_id file.
	cfg.Auth.SecretIDFile = filepath.Join(t.TempDir(), "missing")
	bad = newProvider(t, cfg)
	_, err = bad.GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrAccessDenied)
	// Vault down at login time.
	v.SetFault(kmsdouble.FaultDown)
	cfg.Auth.SecretIDFile = writeFile(t, "secret-id", "secret-5678")
	down := newProvider(t, cfg)
	_, err = down.GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrUnavailable)
	v.SetFault(kmsdouble.FaultNone)
	roundTrip(t, down, "strait")
}

// A renewable AppRole token is renewed (auth/token/renew-self) before its
// TTL ends: the double revokes tokens past their TTL, so calls after it
// succeeding on the first login's token prove the renewals; after the max
// TTL a new login replaces it. Close stops both.
func TestTokenRenewal(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	v.Mount("", "approle", kmsdouble.KindAppRole)
	v.AddAppRole("", "approle", "role-1", "sid-1")
	v.SetLoginTTL("", "approle", kmsdouble.TokenTTL{TTL: 2 * time.Second, MaxTTL: 6 * time.Second, Renewable: true})
	cfg := baseConfig(v)
	cfg.Auth = AuthConfig{Method: AuthAppRole, RoleID: "role-1", SecretIDFile: writeFile(t, "secret-id", "sid-1")}
	p := newProvider(t, cfg)
	roundTrip(t, p, "strait")
	first := p.client.Token()
	for start := time.Now(); time.Since(start) < 3*time.Second || v.Calls("auth/token/renew-self") < 1; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > 20*time.Second {
			t.Fatal("no renewal within 20 s")
		}
	}
	if _, ok := v.TokenExpiry(first); !ok {
		t.Fatal("the first token expired although it is renewable")
	}
	roundTrip(t, p, "strait")
	if n := v.Calls("auth/approle/login"); n != 1 || p.client.Token() != first {
		t.Fatalf("%d logins (token changed: %v), want the first login's token, renewed", n, p.client.Token() != first)
	}
	for start := time.Now(); v.Calls("auth/approle/login") < 2; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > 20*time.Second {
			t.Fatal("no new login after the max TTL within 20 s")
		}
	}
	roundTrip(t, p, "strait")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	n := v.Calls("auth/token/renew-self") + v.Calls("auth/approle/login")
	time.Sleep(3 * time.Second)
	if m := v.Calls("auth/token/renew-self") + v.Calls("auth/approle/login"); m != n {
		t.Fatalf("%d renewals or logins after Close", m-n)
	}
}

func TestKubernetesLogin(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	v.Mount("", "k8s-prod", kmsdouble.KindKubernetes)
	v.AddKubernetesRole("", "k8s-prod", "strait", "eyJhbGciOiJSUzI1NiJ9.sa-token.sig")
	cfg := baseConfig(v)
	cfg.Auth = AuthConfig{Method: AuthKubernetes, Role: "strait", MountPath: "k8s-prod",
		JWTFile: writeFile(t, "token", "eyJhbGciOiJSUzI1NiJ9.sa-token.sig")}
	p := newProvider(t, cfg)
	roundTrip(t, p, "strait")
	if v.Calls("auth/k8s-prod/login") != 1 {
		t.Fatal("no kubernetes login")
	}
	cfg.Auth.JWTFile = writeFile(t, "token", "eyJ.other.sig")
	bad := newProvider(t, cfg)
	_, err := bad.GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrAccessDenied)
}

func TestTokenFileReread(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	tokA := v.IssueToken("")
	file := writeFile(t, "token", tokA)
	cfg := baseConfig(v)
	cfg.Auth = AuthConfig{TokenFile: file}
	p := newProvider(t, cfg)
	roundTrip(t, p, "strait")
	v.RevokeToken(tokA)
	if err := os.WriteFile(file, []byte(v.IssueToken("")), 0o600); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, p, "strait")
	// A revoked literal token is not retried.
	tok := v.IssueToken("")
	cfg.Auth = AuthConfig{Token: tok}
	p = newProvider(t, cfg)
	v.RevokeToken(tok)
	_, err := p.GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrAccessDenied)
	// VAULT_TOKEN from the environment.
	t.Setenv("VAULT_TOKEN", v.IssueToken(""))
	cfg.Auth = AuthConfig{}
	roundTrip(t, newProvider(t, cfg), "strait")
}

func TestNamespace(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	v.CreateNamespace("team-a")
	v.Mount("team-a", "kms", kmsdouble.KindTransit)
	v.CreateTransitKey("team-a", "kms", "tenant")
	v.Mount("team-a", "approle", kmsdouble.KindAppRole)
	v.AddAppRole("team-a", "approle", "r", "s")
	cfg := baseConfig(v)
	cfg.Namespace = "team-a"
	cfg.MountPath = "kms"
	cfg.Auth = AuthConfig{Token: v.IssueToken("team-a")}
	roundTrip(t, newProvider(t, cfg), "tenant")
	cfg.Auth = AuthConfig{Method: AuthAppRole, RoleID: "r", SecretIDFile: writeFile(t, "sid", "s")}
	roundTrip(t, newProvider(t, cfg), "tenant")
	// A team-a token outside its namespace is refused.
	cfg2 := baseConfig(v)
	cfg2.Auth = AuthConfig{Token: v.IssueToken("team-a")}
	_, err := newProvider(t, cfg2).GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrAccessDenied)
	// The root namespace's key is not visible in team-a.
	cfg.Auth = AuthConfig{Token: v.RootToken}
	_, err = newProvider(t, cfg).GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrKeyNotFound)
}

func TestTLSWithClientCertificate(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{TLS: true, RequireClientCert: true})
	ca, cert, key, err := v.TLS.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.URL(), "https://") {
		t.Fatal(v.URL())
	}
	cfg := baseConfig(v)
	cfg.TLS = TLSConfig{CACert: ca, ClientCert: cert, ClientKey: key}
	roundTrip(t, newProvider(t, cfg), "strait")

	cfg.TLS = TLSConfig{CACert: ca}
	_, err = newProvider(t, cfg).GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrUnavailable)
	t.Log("without client certificate:", err)

	cfg.TLS = TLSConfig{}
	_, err = newProvider(t, cfg).GenerateDataKey(context.Background(), "strait")
	only(t, err, kms.ErrUnavailable)
	t.Log("without the CA:", err)
}

func TestReadKV(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	v.PutKV("", "secret", "strait/sr", map[string]any{"username": "sr-user", "password": "pw1"})
	v.PutKV("", "secret", "strait/sr", map[string]any{"username": "sr-user", "password": "pw2"})
	p := newProvider(t, baseConfig(v))
	data, err := p.ReadKV(context.Background(), "secret", "strait/sr")
	if err != nil {
		t.Fatal(err)
	}
	if data["password"] != "pw2" {
		t.Fatalf("got %v", data)
	}
	_, err = p.ReadKV(context.Background(), "secret", "strait/missing")
	only(t, err, kms.ErrKeyNotFound)
}

func TestConfigValidate(t *testing.T) {
	c := Config{}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.MountPath != "transit" || c.Auth.Method != "token" || c.Timeout != duration.Duration(DefaultTimeout) || c.MaxAttempts != 3 {
		t.Fatalf("defaults: %+v", c)
	}
	k := Config{Auth: AuthConfig{Method: "kubernetes", Role: "r"}}
	if err := k.Validate(); err != nil || k.Auth.JWTFile != DefaultKubernetesJWT || k.Auth.MountPath != "kubernetes" {
		t.Fatalf("kubernetes defaults: %v %+v", err, k.Auth)
	}
	for _, bad := range []Config{
		{Address: "vault:8200"},
		{Auth: AuthConfig{Method: "ldap"}},
		{Auth: AuthConfig{Method: "approle"}},
		{Auth: AuthConfig{Method: "kubernetes"}},
		{Auth: AuthConfig{Token: "a", TokenFile: "b"}},
		{TLS: TLSConfig{ClientCert: "c"}},
		{KeyName: "a/b"},
		{MaxAttempts: 20},
	} {
		if err := bad.Validate(); err == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
}

func TestCompactWrapped(t *testing.T) {
	v := newDouble(t, kmsdouble.VaultOptions{})
	cfg := baseConfig(v)
	cfg.CompactWrapped = true
	p := newProvider(t, cfg)
	dk := roundTrip(t, p, "strait")
	if len(dk.Wrapped) != 62 || dk.Wrapped[0] != 0x01 || dk.Wrapped[1] != 1 {
		t.Fatalf("compact wrapped DEK: %d bytes % x", len(dk.Wrapped), dk.Wrapped[:2])
	}
	text := newProvider(t, baseConfig(v))
	// Both providers read both forms.
	if _, err := text.Decrypt(context.Background(), "strait", dk.Wrapped); err != nil {
		t.Fatal(err)
	}
	tdk := roundTrip(t, text, "strait")
	if _, err := p.Decrypt(context.Background(), "strait", tdk.Wrapped); err != nil {
		t.Fatal(err)
	}
	v.RotateTransitKey("", "transit", "strait")
	dk2 := roundTrip(t, p, "strait")
	if dk2.Wrapped[1] != 2 {
		t.Fatalf("version byte after rotation: %d", dk2.Wrapped[1])
	}
	if pt, err := p.Decrypt(context.Background(), "strait", dk.Wrapped); err != nil || !bytes.Equal(pt, dk.Plaintext) {
		t.Fatalf("v1 compact after rotation: %v", err)
	}
	for i := range dk.Wrapped {
		bad := bytes.Clone(dk.Wrapped)
		bad[i] ^= 0x01
		_, err := p.Decrypt(context.Background(), "strait", bad)
		only(t, err, kms.ErrInvalidCiphertext)
	}
	for _, bad := range [][]byte{{0x01}, {0x01, 0x01}, {0x01, 0xff}} {
		_, err := p.Decrypt(context.Background(), "strait", bad)
		only(t, err, kms.ErrInvalidCiphertext)
	}
}
