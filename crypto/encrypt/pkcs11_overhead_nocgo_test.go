//go:build !cgo

package encrypt_test

import (
	"testing"

	"github.com/strait-proxy/strait/internal/straitbin"
)

// pkcs11Provider: a build without cgo has no PKCS#11 (crypto/kms/pkcs11).
func pkcs11Provider(t *testing.T, mech string) provider {
	straitbin.Missing(t, "a cgo build (CGO_ENABLED=1) for the PKCS#11 overhead (mechanism %s)", mech)
	return provider{}
}
