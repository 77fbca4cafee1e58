package pkcs11

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strait-proxy/strait/crypto/kms"
)

// TestPINWarningAndFileMode (issue 12, point 10): an inline PIN is accepted
// with a warning; a pin_file group or others can read is refused (no token
// is needed to check either).
func TestPINWarningAndFileMode(t *testing.T) {
	if w := (&Config{PIN: "1234"}).Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], "pin is inline") {
		t.Errorf("inline PIN: warnings %q", w)
	}
	file := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(file, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Config{PINFile: file}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("pin_file: warnings %q", w)
	}
	if pin, err := c.pin(); err != nil || pin != "1234" {
		t.Fatalf("pin_file 0600: %q, %v", pin, err)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.pin(); !errors.Is(err, kms.ErrInsecurePermissions) {
		t.Errorf("pin_file 0644: %v, want ErrInsecurePermissions", err)
	}
}
