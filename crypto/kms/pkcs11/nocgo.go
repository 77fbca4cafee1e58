//go:build !cgo

package pkcs11

import (
	"context"
	"errors"

	"github.com/strait-proxy/strait/crypto/kms"
)

// ErrNoCgo is New's answer in a build without cgo (the static container
// image): PKCS#11 loads a vendor's C module, which needs cgo and libc.
var ErrNoCgo = errors.New("pkcs11: this Strait was built without cgo (CGO_ENABLED=0); PKCS#11 needs a cgo build (docs/operations.md)")

// Provider is unavailable without cgo.
type Provider struct{}

var _ kms.Provider = (*Provider)(nil)

// New fails: see ErrNoCgo.
func New(cfg Config) (*Provider, error) { return nil, ErrNoCgo }

// Name returns "pkcs11".
func (*Provider) Name() string { return Name }

// GenerateDataKey fails: see ErrNoCgo.
func (*Provider) GenerateDataKey(context.Context, string) (kms.DataKey, error) {
	return kms.DataKey{}, ErrNoCgo
}

// Decrypt fails: see ErrNoCgo.
func (*Provider) Decrypt(context.Context, string, []byte) ([]byte, error) { return nil, ErrNoCgo }

// Close does nothing.
func (*Provider) Close() error { return nil }
