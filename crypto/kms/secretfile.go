package kms

import (
	"strings"

	"github.com/strait-proxy/strait/internal/secfile"
)

// ErrInsecurePermissions is returned (wrapped) by ReadSecretFile for a file
// whose mode lets others access it or its group write it.
var ErrInsecurePermissions = secfile.ErrInsecure

// ReadSecretFile reads a file holding a credential (a Vault token or
// AppRole secret_id, a PKCS#11 PIN) and returns its content without
// surrounding whitespace. It applies the rule of every secret file
// (internal/secfile): regular, no access for others, no write for the group.
func ReadSecretFile(path string) (string, error) {
	b, err := secfile.Read(path, 64<<10)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
