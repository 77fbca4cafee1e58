package kms_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestKeyStoresDoNotImportTheApplication: the key stores are libraries the
// encryption interceptors use; they take their settings as their own types
// and must not pull in the application's config, proxy or interceptors.
func TestKeyStoresDoNotImportTheApplication(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/strait-proxy/strait/"
	// internal/vaultauth: the Vault client setup vault-transit shares with
	// the authswap credentials store (a library, no application state).
	allowed := []string{mod + "crypto/kms", mod + "config/duration", mod + "internal/secfile", mod + "internal/vaultauth"}
	for _, p := range strings.Fields(string(out)) {
		if !strings.HasPrefix(p, mod) {
			continue
		}
		ok := false
		for _, a := range allowed {
			ok = ok || p == a || strings.HasPrefix(p, a+"/")
		}
		if !ok {
			t.Errorf("a key store depends on %s; allowed within Strait: %v", p, allowed)
		}
	}
}
