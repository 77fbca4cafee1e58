//go:build cgo

package encrypt_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/strait-proxy/strait/crypto/kms/pkcs11"
	"github.com/strait-proxy/strait/internal/straitbin"
	"github.com/strait-proxy/strait/internal/straittest"
)

// softHSMModule is SoftHSM2's PKCS#11 module (scripts/install-test-deps.sh
// installs it); STRAIT_PKCS11_MODULE overrides the path.
func softHSMModule() string {
	if m := os.Getenv("STRAIT_PKCS11_MODULE"); m != "" {
		return m
	}
	return "/usr/lib/softhsm/libsofthsm2.so"
}

// pkcs11Provider is a fresh SoftHSM2 token (its own SOFTHSM2_CONF and
// token directory) holding the KEK strait-kek, and the key store section
// that wraps data keys with mech.
func pkcs11Provider(t *testing.T, mech string) provider {
	module := softHSMModule()
	util, err := exec.LookPath("softhsm2-util")
	if err == nil {
		_, err = os.Stat(module)
	}
	if err != nil {
		straitbin.Missing(t, "SoftHSM2 for the PKCS#11 overhead (apt-get install -y softhsm2): %v", err)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	straittest.Must(t, os.Mkdir(tokens, 0o700), "token dir")
	conf := filepath.Join(dir, "softhsm2.conf")
	straittest.Must(t, os.WriteFile(conf, fmt.Appendf(nil, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens), 0o600), "softhsm2.conf")
	t.Setenv("SOFTHSM2_CONF", conf)
	const label, pin = "strait-overhead", "1234"
	if out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "5678").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	pinFile := filepath.Join(dir, "pin")
	straittest.Must(t, os.WriteFile(pinFile, []byte(pin), 0o600), "pin file")
	p, err := pkcs11.New(pkcs11.Config{ModulePath: module, TokenLabel: label, PINFile: pinFile, Mechanism: mech})
	straittest.Must(t, err, "pkcs11")
	_, _, err = p.EnsureKey(context.Background(), "strait-kek")
	p.Close()
	straittest.Must(t, err, "create the KEK")
	return provider{
		name:    "pkcs11(" + mech + ")",
		kmsYAML: fmt.Sprintf("{pkcs11: {module_path: %q, token_label: %q, pin_file: %q, mechanism: %s}}", module, label, pinFile, mech),
		keyID:   "strait-kek",
	}
}
