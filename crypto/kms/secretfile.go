package kms

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrInsecurePermissions is returned (wrapped) by ReadSecretFile for a file
// that group or others can access.
var ErrInsecurePermissions = errors.New("kms: insecure permissions on a secret file")

// ReadSecretFile reads a file holding a credential (a Vault token or
// AppRole secret_id, a PKCS#11 PIN) and returns its content without
// surrounding whitespace. Like the local keyring, it refuses a file that is
// not a regular file or that group or others can access (any of mode
// 0o077): chmod 600 it, and give it to the user Strait runs as.
func ReadSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat() // the file opened, not a path that may have changed since
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file (mode %s)", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%w: %s has mode %04o, group or others can access it (chmod 600 %s)", ErrInsecurePermissions, path, perm, path)
	}
	const limit = 64 << 10 // a credential, not a data file
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return "", err
	}
	if len(b) > limit {
		return "", fmt.Errorf("%s: more than %d bytes: not a credential", path, limit)
	}
	return strings.TrimSpace(string(b)), nil
}
