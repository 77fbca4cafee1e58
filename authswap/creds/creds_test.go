package creds

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strait-proxy/strait/internal/kmsdouble"
)

func TestCredentialsNeverPrintSecrets(t *testing.T) {
	c := Credentials{Mechanism: "PLAIN", Username: "u", Password: "s3cret-pw", Token: "tok-123"}
	for _, s := range []string{c.String(), c.GoString()} {
		if strings.Contains(s, "s3cret-pw") || strings.Contains(s, "tok-123") || !strings.Contains(s, "username:u") {
			t.Errorf("printed %q", s)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"alice", "svc-orders", "alice@STRAIT.TEST", "a.b_c=d+e"} {
		if err := CheckName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../root", "a/b", "CN=a,O=b", "a b", "a?x", strings.Repeat("a", 256)} {
		if err := CheckName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func writeFile(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "creds.yaml")
	writeFile(t, p, "principals: {alice: {username: alice-up, password: pw1}}", 0o644)
	if _, err := NewFile(p, "PLAIN", nil); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Fatalf("world-readable credentials file accepted: %v", err)
	}
	writeFile(t, p, "principals: {alice: {username: alice-up, password: pw1}, bob: {mechanism: SCRAM-SHA-512, username: bob-up, password: pw2}}", 0o600)
	var reloadErrs []error
	f, err := NewFile(p, "PLAIN", func(err error) { reloadErrs = append(reloadErrs, err) })
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if c, err := f.Lookup(ctx, "alice"); err != nil || c.Username != "alice-up" || c.Password != "pw1" {
		t.Fatalf("alice: %v %v", c, err)
	}
	if _, err := f.Lookup(ctx, "carol"); !errors.Is(err, ErrNoMapping) {
		t.Fatalf("carol: %v, want ErrNoMapping", err)
	}
	// An invalid rewrite is refused and reported; the old mapping stays.
	writeFile(t, p, "principals: {alice: {username: alice-up}}", 0o600)
	if c, err := f.Lookup(ctx, "alice"); err != nil || c.Password != "pw1" || len(reloadErrs) != 1 || !strings.Contains(reloadErrs[0].Error(), "needs username and password") {
		t.Fatalf("after a bad rewrite: %v %v, reload errors %v", c, err, reloadErrs)
	}
	writeFile(t, p, "principals: {alice: {username: alice-up, password: pw-rotated}}", 0o600)
	if c, _ := f.Lookup(ctx, "alice"); c.Password != "pw-rotated" {
		t.Fatalf("rotation not picked up: %v", c)
	}
	if _, err := f.Lookup(ctx, "bob"); !errors.Is(err, ErrNoMapping) {
		t.Fatalf("bob removed from the file is still mapped: %v", err)
	}
}

func TestParseFileErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"principals: {alice: {username: u}}", "principals.alice: PLAIN needs username and password"},
		{"principals: {alice: {mechanism: OAUTHBEARER}}", "principals.alice: OAUTHBEARER needs token"},
		{"principals: {alice: {mechanism: GSSAPI, username: u, password: pw-XYZ}}", `unknown mechanism "GSSAPI"`},
		{"principals: {'a/b': {username: u, password: pw-XYZ}}", `principal name "a/b" cannot be looked up`},
		{"principals: {alice: {user: u}}", "unknown field"},
	} {
		_, err := ParseFile([]byte(tc.body), "PLAIN")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.body, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw-XYZ") {
			t.Errorf("error shows a password: %v", err)
		}
	}
}

type countingStore struct {
	calls atomic.Int32
	fail  atomic.Bool
	gate  chan struct{}
	pw    atomic.Value
}

func (s *countingStore) Name() string { return "test" }
func (s *countingStore) Lookup(_ context.Context, p string) (Credentials, error) {
	s.calls.Add(1)
	if s.gate != nil {
		<-s.gate
	}
	if s.fail.Load() {
		return Credentials{}, ErrUnavailable
	}
	pw, _ := s.pw.Load().(string)
	return Credentials{Username: p, Password: pw}, nil
}

func TestCache(t *testing.T) {
	st := &countingStore{}
	st.pw.Store("v1")
	c := NewCache(st, time.Minute)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	ctx := context.Background()
	get := func() (Credentials, bool, error) { return c.Lookup(ctx, "alice") }

	if cr, cached, err := get(); err != nil || cached || cr.Password != "v1" {
		t.Fatalf("first: %v %v %v", cr, cached, err)
	}
	if _, cached, _ := get(); !cached || st.calls.Load() != 1 {
		t.Fatalf("second lookup within the TTL went to the store (%d calls)", st.calls.Load())
	}
	// After the TTL the store is asked again and a rotated secret is seen.
	st.pw.Store("v2")
	now = now.Add(61 * time.Second)
	if cr, cached, _ := get(); cached || cr.Password != "v2" {
		t.Fatalf("after TTL: %v cached=%v", cr, cached)
	}
	// Invalidate (upstream refused the cached password) forces a lookup.
	st.pw.Store("v3")
	c.Invalidate("alice")
	if cr, _, _ := get(); cr.Password != "v3" {
		t.Fatalf("after Invalidate: %v", cr)
	}
	// A store that is down after the TTL: refused, not served stale.
	st.fail.Store(true)
	now = now.Add(2 * time.Minute)
	if _, _, err := get(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("store down after TTL: %v, want ErrUnavailable", err)
	}
	if _, _, err := get(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("failure was cached as success: %v", err)
	}
	st.fail.Store(false)
	if _, _, err := get(); err != nil {
		t.Fatalf("store back: %v", err)
	}
	// Unsafe names never reach the store.
	n := st.calls.Load()
	if _, _, err := c.Lookup(ctx, "../admin"); !errors.Is(err, ErrNoMapping) || st.calls.Load() != n {
		t.Fatalf("../admin: %v (store calls %d -> %d)", err, n, st.calls.Load())
	}
}

func TestCacheSharesConcurrentLookups(t *testing.T) {
	st := &countingStore{gate: make(chan struct{})}
	c := NewCache(st, time.Minute)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _, _, err := c.Lookup(context.Background(), "alice"); errs <- err }()
	}
	for st.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the others join the flight (not an assertion)
	close(st.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := st.calls.Load(); n > 2 {
		t.Errorf("20 concurrent lookups made %d store calls", n)
	}
}

func TestVault(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	v.PutKV("", "secret", "strait/principals/alice", map[string]any{"username": "alice-up", "password": "pw-v1", "mechanism": "SCRAM-SHA-512"})
	v.PutKV("", "secret", "strait/principals/empty", map[string]any{"note": "nothing"})
	tokFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokFile, v.IssueToken("")+"\n", 0o600)
	st, err := NewVault(VaultConfig{Address: v.URL(), Auth: VaultAuth{TokenFile: tokFile}, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := st.Lookup(ctx, "alice")
	if err != nil || c.Username != "alice-up" || c.Password != "pw-v1" || c.Mechanism != "SCRAM-SHA-512" || c.Version != "1" {
		t.Fatalf("alice: %v %v (version %q)", c, err, c.Version)
	}
	if _, err := st.Lookup(ctx, "bob"); !errors.Is(err, ErrNoMapping) {
		t.Fatalf("bob: %v, want ErrNoMapping", err)
	}
	if _, err := st.Lookup(ctx, "empty"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty: %v, want ErrInvalid", err)
	}
	// Rotation: the next lookup returns the new version.
	v.PutKV("", "secret", "strait/principals/alice", map[string]any{"username": "alice-up", "password": "pw-v2"})
	if c, _ := st.Lookup(ctx, "alice"); c.Password != "pw-v2" || c.Version != "2" {
		t.Fatalf("after rotation: %v version %s", c, c.Version)
	}
	// Down, sealed, denied: ErrUnavailable, and the error carries no secret.
	for _, f := range []kmsdouble.Fault{kmsdouble.FaultDown, kmsdouble.Fault5xx, kmsdouble.FaultDeny} {
		v.SetFault(f)
		_, err := st.Lookup(ctx, "alice")
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("fault %v: %v, want ErrUnavailable", f, err)
		}
		if err != nil && strings.Contains(err.Error(), "pw-v") {
			t.Errorf("fault %v: error shows the password: %v", f, err)
		}
	}
	v.SetFault(kmsdouble.FaultNone)
	// The token is revoked and the token file rewritten (Vault Agent): re-read on 403.
	old := strings.TrimSpace(readAll(t, tokFile))
	v.RevokeToken(old)
	writeFile(t, tokFile, v.IssueToken(""), 0o600)
	if _, err := st.Lookup(ctx, "alice"); err != nil {
		t.Fatalf("after token rotation: %v", err)
	}
}

func readAll(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestVaultAppRoleNamespace(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	v.CreateNamespace("team-a")
	v.Mount("team-a", "kv", kmsdouble.KindKVv2)
	v.Mount("team-a", "approle", kmsdouble.KindAppRole)
	v.AddAppRole("team-a", "approle", "strait-role", "sid-secret")
	v.PutKV("team-a", "kv", "kafka/alice", map[string]any{"username": "alice-a", "password": "pw-a"})
	// The same path in the root namespace must not be what is read.
	v.Mount("", "kv", kmsdouble.KindKVv2)
	v.PutKV("", "kv", "kafka/alice", map[string]any{"username": "alice-root", "password": "pw-root"})
	t.Setenv("TEST_SECRET_ID", "sid-secret")
	st, err := NewVault(VaultConfig{Address: v.URL(), Namespace: "team-a", Mount: "kv", Path: "kafka/{principal}",
		Auth: VaultAuth{Method: "approle", RoleID: "strait-role", SecretIDEnv: "TEST_SECRET_ID"}, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Lookup(context.Background(), "alice")
	if err != nil || c.Username != "alice-a" {
		t.Fatalf("alice in team-a: %v %v", c, err)
	}
	if n := v.Calls("auth/approle/login"); n != 1 {
		t.Fatalf("%d logins", n)
	}
	// All tokens revoked (expired): one new login, then success.
	v.RevokeToken(st.client.Token())
	if _, err := st.Lookup(context.Background(), "alice"); err != nil {
		t.Fatalf("after token expiry: %v", err)
	}
	if n := v.Calls("auth/approle/login"); n != 2 {
		t.Fatalf("%d logins after expiry, want 2", n)
	}
	// A wrong secret_id: unavailable, not a fallback.
	t.Setenv("TEST_SECRET_ID", "wrong")
	st2, _ := NewVault(VaultConfig{Address: v.URL(), Namespace: "team-a", Mount: "kv", Path: "kafka/{principal}",
		Auth: VaultAuth{Method: "approle", RoleID: "strait-role", SecretIDEnv: "TEST_SECRET_ID"}, MaxAttempts: 1})
	if _, err := st2.Lookup(context.Background(), "alice"); !errors.Is(err, ErrUnavailable) || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong secret_id: %v", err)
	}
}

func TestVaultConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		c    VaultConfig
		want string
	}{
		{VaultConfig{Path: "fixed"}, "path: must contain {principal}"},
		{VaultConfig{Auth: VaultAuth{Method: "ldap"}}, `auth.method: unknown "ldap"`},
		{VaultConfig{Auth: VaultAuth{Method: "approle"}}, "exactly one of role_id, role_id_file"},
		{VaultConfig{Auth: VaultAuth{TokenFile: "a", TokenEnv: "B"}}, "exclusive"},
		{VaultConfig{Auth: VaultAuth{Method: "kubernetes"}}, "auth.role: required"},
	} {
		if err := tc.c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}
}

// Kubernetes auth over TLS: the service account token is read from its file
// at every login; the server is verified against the configured CA.
func TestVaultKubernetesTLS(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{TLS: true})
	t.Cleanup(v.Close)
	v.Mount("", "kubernetes", kmsdouble.KindKubernetes)
	v.AddKubernetesRole("", "kubernetes", "strait", "sa-jwt-1")
	v.PutKV("", "secret", "strait/principals/alice", map[string]any{"username": "alice-up", "password": "pw"})
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writeFile(t, ca, string(v.TLS.CAPEM), 0o644)
	jwt := filepath.Join(dir, "token")
	writeFile(t, jwt, "sa-jwt-1", 0o600)
	st, err := NewVault(VaultConfig{Address: v.URL(), TLS: VaultTLS{CACert: ca}, MaxAttempts: 1,
		Auth: VaultAuth{Method: "kubernetes", Role: "strait", JWTFile: jwt}})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := st.Lookup(context.Background(), "alice"); err != nil || c.Username != "alice-up" {
		t.Fatalf("kubernetes auth: %v %v", c, err)
	}
	// Kubernetes rotated the projected token and Vault's token expired.
	v.AddKubernetesRole("", "kubernetes", "strait", "sa-jwt-2")
	writeFile(t, jwt, "sa-jwt-2", 0o600)
	v.RevokeToken(st.client.Token())
	if _, err := st.Lookup(context.Background(), "alice"); err != nil {
		t.Fatalf("after the token rotation: %v", err)
	}
	// Without the CA, the server is not trusted: unavailable.
	st2, _ := NewVault(VaultConfig{Address: v.URL(), MaxAttempts: 1, Auth: VaultAuth{Method: "kubernetes", Role: "strait", JWTFile: jwt}})
	if _, err := st2.Lookup(context.Background(), "alice"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("untrusted Vault certificate: %v", err)
	}
}
