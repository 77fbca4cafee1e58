// Package pkcs11 is the "pkcs11" key-management provider for hardware
// security modules (and SoftHSM2): the key-encryption key (KEK) is an
// AES-256 secret-key object on the token that never leaves it (sensitive,
// non-extractable); data keys are wrapped and unwrapped by the token.
//
// KEK versions: every version is its own AES key object with
// CKA_LABEL = the key id and CKA_ID = the version as a 4-byte big-endian
// number (00000001, 00000002, ...). GenerateDataKey uses the highest version
// present; Decrypt uses the version recorded in the wrapped key, so records
// wrapped before a rotation keep decrypting as long as that object exists.
// EnsureKey and RotateKey create the objects.
//
// Wrapped-key format (self-describing, version 1):
//
//	byte 0      0x01 format version
//	byte 1      mechanism: 0x01 CKM_AES_KEY_WRAP (RFC 3394),
//	            0x02 CKM_AES_KEY_WRAP_PAD (RFC 5649), 0x03 CKM_AES_GCM
//	bytes 2..   KEK version, uvarint (minimal encoding, >= 1; 1 byte below
//	            128); the KEK object's CKA_ID is the same number as 4 bytes
//	            big-endian
//	then        KW/KWP: the 40-byte wrapped key (C_WrapKey of a token-generated
//	            session key);
//	            GCM: 12-byte IV || 32-byte ciphertext || 16-byte tag
//	            (C_Encrypt of a crypto/rand key; additional data = the header
//	            bytes followed by the key id)
//
// so a wrapped DEK is 43 bytes (KW, KWP) or 63 bytes (GCM) for KEK versions
// below 128.
//
// PKCS#11 sessions are not safe for concurrent use: the provider keeps a
// small pool of sessions and gives each call its own.
package pkcs11

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/strait-proxy/strait/config/duration"
	"github.com/strait-proxy/strait/crypto/kms"
)

// Name is the provider kind in configuration.
const Name = "pkcs11"

// Mechanism names for Config.Mechanism.
const (
	MechAuto       = "auto"
	MechAESKeyWrap = "aes-key-wrap"     // CKM_AES_KEY_WRAP, RFC 3394
	MechAESKWP     = "aes-key-wrap-pad" // CKM_AES_KEY_WRAP_PAD, RFC 5649
	MechAESGCM     = "aes-gcm"          // CKM_AES_GCM via C_Encrypt
)

// Defaults applied by Validate.
const (
	DefaultSessions = 4
	DefaultTimeout  = 5 * time.Second
	DefaultPINEnv   = "STRAIT_PKCS11_PIN"
)

const (
	formatV1   = 0x01
	mechKW     = 0x01
	mechKWP    = 0x02
	mechGCM    = 0x03
	minHeader  = 3 // format, mechanism, uvarint version (1 byte below 128)
	kwBlobLen  = 40
	gcmBlobLen = 12 + 32 + 16
)

// Config configures the pkcs11 provider.
type Config struct {
	// ModulePath is the PKCS#11 library, e.g.
	// /usr/lib/softhsm/libsofthsm2.so.
	ModulePath string `json:"module_path"`
	// TokenLabel selects the token (slot) by its label.
	TokenLabel string `json:"token_label"`
	// PIN of the user (CKU_USER). Prefer PINFile or PINEnv.
	PIN string `json:"pin,omitempty"`
	// PINFile holds the PIN (surrounding whitespace is ignored).
	PINFile string `json:"pin_file,omitempty"`
	// PINEnv names the environment variable holding the PIN when neither
	// PIN nor PINFile is set (default STRAIT_PKCS11_PIN).
	PINEnv string `json:"pin_env,omitempty"`
	// KeyLabel is the KEK label used when a caller passes an empty key id.
	KeyLabel string `json:"key_label,omitempty"`
	// Mechanism used to wrap new data keys: "auto" (default: the first the
	// token supports of aes-key-wrap-pad, aes-key-wrap, aes-gcm),
	// "aes-key-wrap-pad", "aes-key-wrap" or "aes-gcm". Decrypt always uses
	// the mechanism recorded in the wrapped key.
	Mechanism string `json:"mechanism,omitempty"`
	// Sessions is the size of the session pool (default 4).
	Sessions int `json:"sessions,omitempty"`
	// Timeout bounds the wait for a free session (default 5s). Calls into
	// the module itself cannot be interrupted.
	Timeout duration.Duration `json:"timeout,omitempty"`
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.ModulePath == "" {
		return errors.New("pkcs11: module_path is required")
	}
	if c.TokenLabel == "" {
		return errors.New("pkcs11: token_label is required")
	}
	if c.PIN != "" && c.PINFile != "" {
		return errors.New("pkcs11: pin and pin_file are exclusive")
	}
	if c.PINEnv == "" {
		c.PINEnv = DefaultPINEnv
	}
	switch c.Mechanism {
	case "":
		c.Mechanism = MechAuto
	case MechAuto, MechAESKeyWrap, MechAESKWP, MechAESGCM:
	default:
		return fmt.Errorf("pkcs11: unknown mechanism %q (auto, aes-key-wrap-pad, aes-key-wrap, aes-gcm)", c.Mechanism)
	}
	if c.Sessions < 0 || c.Sessions > 64 {
		return errors.New("pkcs11: sessions must be between 1 and 64")
	}
	if c.Sessions == 0 {
		c.Sessions = DefaultSessions
	}
	if c.Timeout < 0 {
		return errors.New("pkcs11: timeout must not be negative")
	}
	if c.Timeout == 0 {
		c.Timeout = duration.Duration(DefaultTimeout)
	}
	return nil
}

// Warnings lists what the configuration allows but should not be used in
// production; the encrypt and decrypt interceptors log each at start.
func (c *Config) Warnings() []string {
	if c.PIN != "" {
		return []string{"pin is inline in the configuration: prefer pin_file (mode 0600) or pin_env, so the PIN is not in a file that is copied, versioned and shown"}
	}
	return nil
}

func (c *Config) pin() (string, error) {
	switch {
	case c.PIN != "":
		return c.PIN, nil
	case c.PINFile != "":
		pin, err := kms.ReadSecretFile(c.PINFile)
		if err != nil {
			return "", fmt.Errorf("pkcs11: reading pin_file: %w: %w", kms.ErrAccessDenied, err)
		}
		return pin, nil
	}
	if v := os.Getenv(c.PINEnv); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("pkcs11: no PIN (pin, pin_file or $%s)", c.PINEnv)
}
