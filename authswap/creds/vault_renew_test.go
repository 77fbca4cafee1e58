package creds

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/strait-proxy/strait/internal/kmsdouble"
)

// waitFor polls cond (no timing assertion: a deadline only bounds a hang).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tokenFileStore is a store reading alice's secret with the token in a
// token file; it returns the file too.
func tokenFileStore(t *testing.T, v *kmsdouble.Vault, tok string) (*Vault, string) {
	t.Helper()
	v.PutKV("", "secret", "strait/principals/alice", map[string]any{"username": "alice-up", "password": "pw-1"})
	tf := filepath.Join(t.TempDir(), "token")
	writeFile(t, tf, tok, 0o600)
	st, err := NewVault(VaultConfig{Address: v.URL(), Auth: VaultAuth{TokenFile: tf}, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, err := st.Lookup(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	return st, tf
}

// appRoleStore is a store reading alice's secret with AppRole logins
// whose tokens live l (the secret_id in a file).
func appRoleStore(t *testing.T, v *kmsdouble.Vault, l kmsdouble.TokenTTL) *Vault {
	t.Helper()
	v.Mount("", "approle", kmsdouble.KindAppRole)
	v.AddAppRole("", "approle", "role-1", "sid-1")
	v.SetLoginTTL("", "approle", l)
	v.PutKV("", "secret", "strait/principals/alice", map[string]any{"username": "alice-up", "password": "pw-1"})
	sid := filepath.Join(t.TempDir(), "sid")
	writeFile(t, sid, "sid-1", 0o600)
	st, err := NewVault(VaultConfig{Address: v.URL(), Auth: VaultAuth{Method: "approle", RoleID: "role-1", SecretIDFile: sid}, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, err := st.Lookup(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	return st
}

// A renewable AppRole token is renewed (auth/token/renew-self) before its
// TTL ends, and replaced by a new login when its max TTL stops renewals,
// without any lookup needing it (no 403 path).
func TestVaultRenewsAndLogsInAgain(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	st := appRoleStore(t, v, kmsdouble.TokenTTL{TTL: 2 * time.Second, MaxTTL: 5 * time.Second, Renewable: true})
	ctx := context.Background()
	waitFor(t, "a renewal", func() bool { return v.Calls("auth/token/renew-self") >= 1 && st.Renewals() >= 1 })
	waitFor(t, "a second login after the max TTL", func() bool { return v.Calls("auth/approle/login") >= 2 })
	if _, err := st.Lookup(ctx, "alice"); err != nil {
		t.Fatalf("lookup with the new token: %v", err)
	}
	t.Logf("renew-self %d, logins %d", v.Calls("auth/token/renew-self"), v.Calls("auth/approle/login"))
	// Close stops renewing.
	_ = st.Close()
	n := v.Calls("auth/token/renew-self") + v.Calls("auth/approle/login")
	time.Sleep(3 * time.Second)
	if m := v.Calls("auth/token/renew-self") + v.Calls("auth/approle/login"); m != n {
		t.Fatalf("%d renewals or logins after Close", m-n)
	}
}

// A renewable token from a token file outlives its TTL because it is
// renewed; the double revokes tokens past their TTL, so the read after
// that TTL proves it.
func TestVaultRenewsAToken(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	tok := v.IssueTokenTTL("", kmsdouble.TokenTTL{TTL: 2 * time.Second, Renewable: true})
	issued := time.Now()
	st, _ := tokenFileStore(t, v, tok)
	waitFor(t, "the token's first TTL to pass and two renewals", func() bool {
		return time.Since(issued) > 3*time.Second && st.Renewals() >= 2
	})
	if _, ok := v.TokenExpiry(tok); !ok {
		t.Fatal("the token expired although it was renewed")
	}
	if _, err := st.Lookup(context.Background(), "alice"); err != nil {
		t.Fatalf("lookup after the first TTL: %v", err)
	}
}

// A token that reached its max TTL is replaced by the one Vault Agent
// wrote to the token file; one that is not renewable is never renewed.
func TestVaultTokenFileAfterMaxTTL(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	old := v.IssueTokenTTL("", kmsdouble.TokenTTL{TTL: 2 * time.Second, MaxTTL: 3 * time.Second, Renewable: true})
	st, tf := tokenFileStore(t, v, old)
	fresh := v.IssueTokenTTL("", kmsdouble.TokenTTL{TTL: time.Hour, Renewable: false})
	writeFile(t, tf, fresh, 0o600)
	lookups := v.Calls("auth/token/lookup-self")
	// The watcher gives up near the max TTL and re-reads the file: the new
	// token is looked up (lookup-self) without any read needing it.
	waitFor(t, "the token file to be re-read", func() bool { return v.Calls("auth/token/lookup-self") > lookups })
	waitFor(t, "the old token to expire", func() bool { _, ok := v.TokenExpiry(old); return !ok })
	if _, err := st.Lookup(context.Background(), "alice"); err != nil {
		t.Fatalf("lookup with the new token: %v", err)
	}
	renews := v.Calls("auth/token/renew-self")
	time.Sleep(1500 * time.Millisecond)
	if v.Calls("auth/token/renew-self") != renews {
		t.Fatal("a non-renewable token is being renewed")
	}
}

// Vault down past the token's TTL: lookups fail closed; when Vault is back
// a new login gets a token again.
func TestVaultDownThroughRenewal(t *testing.T) {
	v := kmsdouble.NewVault(kmsdouble.VaultOptions{})
	t.Cleanup(v.Close)
	st := appRoleStore(t, v, kmsdouble.TokenTTL{TTL: 2 * time.Second, Renewable: true})
	ctx := context.Background()
	v.SetFault(kmsdouble.FaultDown)
	downAt := time.Now()
	waitFor(t, "the token's TTL to pass", func() bool { return time.Since(downAt) > 3*time.Second })
	if _, err := st.Lookup(ctx, "alice"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Vault down: %v, want ErrUnavailable", err)
	}
	v.SetFault(kmsdouble.FaultNone)
	waitFor(t, "a lookup once Vault is back", func() bool { _, err := st.Lookup(ctx, "alice"); return err == nil })
}
