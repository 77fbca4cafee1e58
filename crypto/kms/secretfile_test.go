package kms_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/strait-proxy/strait/crypto/kms"
)

// TestReadSecretFile (issue 12, point 10): a credential file is read only
// if group and others cannot access it, like the local keyring.
func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	if err := os.WriteFile(path, []byte("  s.token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := kms.ReadSecretFile(path); err != nil || got != "s.token" {
		t.Fatalf("mode 0600: %q, %v", got, err)
	}
	for _, mode := range []os.FileMode{0o604, 0o660, 0o644, 0o620} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if got, err := kms.ReadSecretFile(path); !errors.Is(err, kms.ErrInsecurePermissions) {
			t.Errorf("mode %04o: %q, %v; want ErrInsecurePermissions", mode, got, err)
		}
	}
	if _, err := kms.ReadSecretFile(dir); err == nil {
		t.Error("a directory was read as a secret")
	}
	if _, err := kms.ReadSecretFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
