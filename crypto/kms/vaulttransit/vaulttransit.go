// Package vaulttransit is the "vault-transit" key-management provider: data
// keys come from Vault's Transit secrets engine
// (POST <mount>/datakey/plaintext/<key>, bits 256) and are unwrapped with
// POST <mount>/decrypt/<key>, through the official hashicorp/vault/api client.
//
// Wrapped is the Transit ciphertext string exactly as Vault returns it,
// "vault:v<N>:<base64>", as bytes (or, with CompactWrapped, the same in
// binary: 0x01 || uvarint(N) || raw): it names the key version, so records
// wrapped before a `transit/keys/<key>/rotate` keep decrypting (until
// min_decryption_version retires that version).
//
// Authentication: a token (config, token file or VAULT_TOKEN), AppRole
// (role_id + secret_id file) or Kubernetes (role + service account JWT file).
// Namespaces (Vault Enterprise / HCP) and TLS with a custom CA and client
// certificate are supported. On a 403 the provider logs in again (AppRole,
// Kubernetes) or re-reads the token file once, then retries the call once.
package vaulttransit

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/strait-proxy/strait/config/duration"
	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/internal/vaultauth"
)

// Name is the provider kind in configuration.
const Name = "vault-transit"

// Defaults applied by Validate to zero fields.
const (
	DefaultMountPath      = "transit"
	DefaultTimeout        = 5 * time.Second
	DefaultMaxAttempts    = 3
	DefaultMaxBackoff     = 1 * time.Second
	DefaultAppRoleMount   = "approle"
	DefaultKubernetesAuth = "kubernetes"
	DefaultKubernetesJWT  = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// Auth methods.
const (
	AuthToken      = "token"
	AuthAppRole    = "approle"
	AuthKubernetes = "kubernetes"
)

// Config configures the vault-transit provider.
type Config struct {
	// Address of Vault, e.g. "https://vault.example.com:8200". Empty:
	// VAULT_ADDR.
	Address string `json:"address,omitempty"`
	// Namespace (Vault Enterprise/HCP), e.g. "admin/team-a". Empty:
	// VAULT_NAMESPACE, else none. Login happens in this namespace too.
	Namespace string `json:"namespace,omitempty"`
	// MountPath of the Transit engine (default "transit").
	MountPath string `json:"mount_path,omitempty"`
	// KeyName is used when a caller passes an empty key id.
	KeyName string `json:"key_name,omitempty"`
	// Auth selects and configures the auth method.
	Auth AuthConfig `json:"auth"`
	// TLS configures server verification and the client certificate.
	// Empty fields fall back to VAULT_CACERT, VAULT_CLIENT_CERT, ... as the
	// vault CLI does.
	TLS TLSConfig `json:"tls,omitempty"`
	// Timeout bounds one provider call, retries and a re-login included
	// (default 5s).
	Timeout duration.Duration `json:"timeout,omitempty"`
	// MaxAttempts bounds HTTP attempts per request, first one included;
	// the client retries connection errors, 5xx (except 501), 412 and 429
	// (default 3; 1 disables retries).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// MaxBackoff caps the wait between attempts (default 1s).
	MaxBackoff duration.Duration `json:"max_backoff,omitempty"`
	// CompactWrapped makes GenerateDataKey return Vault's ciphertext in
	// binary form, 0x01 || uvarint(key version) || raw bytes (62 bytes
	// instead of 89 for versions below 128). Decrypt accepts both forms
	// whatever this is set to, and sends Vault the original text.
	CompactWrapped bool `json:"compact_wrapped,omitempty"`
}

// AuthConfig configures how the provider gets a Vault token.
type AuthConfig struct {
	// Method is "token" (default), "approle" or "kubernetes".
	Method string `json:"method,omitempty"`
	// Token (method token). Prefer TokenFile or VAULT_TOKEN.
	Token string `json:"token,omitempty"`
	// TokenFile holds the token (method token), e.g. a Vault Agent sink;
	// it is re-read when Vault answers 403.
	TokenFile string `json:"token_file,omitempty"`
	// MountPath of the auth method (default "approle" or "kubernetes").
	MountPath string `json:"mount_path,omitempty"`
	// RoleID or RoleIDFile (method approle).
	RoleID     string `json:"role_id,omitempty"`
	RoleIDFile string `json:"role_id_file,omitempty"`
	// SecretIDFile holds the AppRole secret_id (method approle). Empty
	// means the role does not require one (bind_secret_id=false).
	SecretIDFile string `json:"secret_id_file,omitempty"`
	// Role (method kubernetes): the Vault role bound to the service account.
	Role string `json:"role,omitempty"`
	// JWTFile (method kubernetes) holds the service account token (default
	// /var/run/secrets/kubernetes.io/serviceaccount/token); re-read at every
	// login, since Kubernetes rotates projected tokens.
	JWTFile string `json:"jwt_file,omitempty"`
}

// TLSConfig configures TLS to Vault.
type TLSConfig struct {
	CACert             string `json:"ca_cert,omitempty"`     // PEM file with the CA(s) to trust
	CAPath             string `json:"ca_path,omitempty"`     // directory of PEM CA files
	ClientCert         string `json:"client_cert,omitempty"` // PEM client certificate (mTLS)
	ClientKey          string `json:"client_key,omitempty"`  // PEM key of ClientCert
	ServerName         string `json:"server_name,omitempty"` // SNI / name to verify
	InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty"`
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.Timeout < 0 || c.MaxBackoff < 0 || c.MaxAttempts < 0 {
		return errors.New("vault-transit: timeout, max_backoff and max_attempts must not be negative")
	}
	if c.MaxAttempts > 10 {
		return errors.New("vault-transit: max_attempts must be at most 10")
	}
	if c.Address != "" {
		u, err := url.Parse(c.Address)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("vault-transit: address %q must be an http(s) URL", c.Address)
		}
	}
	c.MountPath = strings.Trim(c.MountPath, "/")
	if c.MountPath == "" {
		c.MountPath = DefaultMountPath
	}
	if c.KeyName != "" {
		if err := checkKeyName(c.KeyName); err != nil {
			return err
		}
	}
	if c.Timeout == 0 {
		c.Timeout = duration.Duration(DefaultTimeout)
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = duration.Duration(DefaultMaxBackoff)
	}
	if (c.TLS.ClientCert == "") != (c.TLS.ClientKey == "") {
		return errors.New("vault-transit: tls.client_cert and tls.client_key go together")
	}
	a := &c.Auth
	if a.Method == "" {
		a.Method = AuthToken
	}
	a.MountPath = strings.Trim(a.MountPath, "/")
	switch a.Method {
	case AuthToken:
		if a.Token != "" && a.TokenFile != "" {
			return errors.New("vault-transit: auth.token and auth.token_file are exclusive")
		}
	case AuthAppRole:
		if (a.RoleID == "") == (a.RoleIDFile == "") {
			return errors.New("vault-transit: approle auth needs exactly one of auth.role_id, auth.role_id_file")
		}
		if a.MountPath == "" {
			a.MountPath = DefaultAppRoleMount
		}
	case AuthKubernetes:
		if a.Role == "" {
			return errors.New("vault-transit: kubernetes auth needs auth.role")
		}
		if a.JWTFile == "" {
			a.JWTFile = DefaultKubernetesJWT
		}
		if a.MountPath == "" {
			a.MountPath = DefaultKubernetesAuth
		}
	default:
		return fmt.Errorf("vault-transit: unknown auth.method %q (token, approle, kubernetes)", a.Method)
	}
	return nil
}

// Warnings lists what the configuration allows but should not be used in
// production; the encrypt and decrypt interceptors log each at start.
func (c *Config) Warnings() []string {
	var w []string
	if c.TLS.InsecureSkipVerify {
		w = append(w, "tls.insecure_skip_verify is set: Vault's certificate is not verified, so anyone on the path can impersonate Vault and read every data key")
	} else if v, _ := strconv.ParseBool(os.Getenv("VAULT_SKIP_VERIFY")); v {
		w = append(w, "VAULT_SKIP_VERIFY is set in the environment: Vault's certificate is not verified")
	}
	if c.Auth.Token != "" {
		w = append(w, "auth.token is inline in the configuration: prefer auth.token_file (mode 0600) or VAULT_TOKEN, so the token is not in a file that is copied, versioned and shown")
	}
	return w
}

func checkKeyName(name string) error {
	if name == "" || strings.ContainsAny(name, "/?#% ") || name == "." || name == ".." {
		return fmt.Errorf("vault-transit: %w: invalid transit key name %q", kms.ErrKeyNotFound, name)
	}
	return nil
}

// Provider implements kms.Provider on Vault Transit. It is safe for
// concurrent use. Its client and token handling are internal/vaultauth's,
// shared with the authswap credentials store.
type Provider struct {
	cfg    Config
	sess   *vaultauth.Session
	client *vault.Client // sess.Client(): requests, carries the token
}

var _ kms.Provider = (*Provider)(nil)

// New builds the Vault client. It does not contact Vault: AppRole and
// Kubernetes logins happen on the first call (so Strait can start while
// Vault is down and fail closed until it is back). A token from the config,
// token file or VAULT_TOKEN is loaded now.
func New(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, a := cfg.TLS, cfg.Auth
	sess, err := vaultauth.NewSession(vaultauth.ClientConfig{
		Address: cfg.Address, Namespace: cfg.Namespace,
		TLS: vaultauth.TLS{CACert: t.CACert, CAPath: t.CAPath, ClientCert: t.ClientCert, ClientKey: t.ClientKey,
			ServerName: t.ServerName, Insecure: t.InsecureSkipVerify},
		Timeout: time.Duration(cfg.Timeout), MaxAttempts: cfg.MaxAttempts,
		MinRetryWait: time.Duration(cfg.MaxBackoff) / 4, MaxRetryWait: time.Duration(cfg.MaxBackoff),
	}, vaultauth.Auth{
		Method: a.Method, Token: a.Token, TokenFile: a.TokenFile, MountPath: a.MountPath,
		RoleID: a.RoleID, RoleIDFile: a.RoleIDFile, SecretIDFile: a.SecretIDFile,
		Role: a.Role, JWTFile: a.JWTFile, ReadSecretFile: kms.ReadSecretFile,
	}, vaultauth.Options{Renew: true}) // a renewable token is renewed before its TTL, so no call waits on a 403 and a re-login

	if err != nil {
		return nil, fmt.Errorf("vault-transit: %w", err)
	}
	p := &Provider{cfg: cfg, sess: sess, client: sess.Client()}
	if cfg.Auth.Method == AuthToken {
		if err := sess.Authenticate(context.Background(), 0); err != nil { // reads the token; no request
			return nil, authErr(err)
		}
	}
	return p, nil
}

// authErr words a failure to get a token: ErrAccessDenied, or
// ErrUnavailable for a login Vault could not answer.
func authErr(err error) error {
	var le *vaultauth.LoginError
	switch {
	case errors.As(err, &le) && errors.Is(le.Err, vaultauth.ErrNoClientToken):
		return fmt.Errorf("vault-transit: %s login: %w: no client token in the answer", le.Method, kms.ErrAccessDenied)
	case errors.As(err, &le):
		return fmt.Errorf("vault-transit: %s login: %w: %w", le.Method, classifyLogin(le.Err), le.Err)
	case errors.Is(err, vaultauth.ErrNoToken):
		return fmt.Errorf("vault-transit: %w: no token (auth.token, auth.token_file or VAULT_TOKEN)", kms.ErrAccessDenied)
	}
	return fmt.Errorf("vault-transit: %w: %w", kms.ErrAccessDenied, err)
}

// Name returns "vault-transit".
func (p *Provider) Name() string { return Name }

// Close stops renewing the token (the interceptor closes its key stores when
// a reload replaces it).
func (p *Provider) Close() error { return p.sess.Close() }

// write performs one authenticated write, re-authenticating once on 403.
func (p *Provider) write(ctx context.Context, path string, data map[string]any) (*vault.Secret, error) {
	return p.do(ctx, func(ctx context.Context) (*vault.Secret, error) {
		return p.client.Logical().WriteWithContext(ctx, path, data)
	})
}

func (p *Provider) do(ctx context.Context, call func(context.Context) (*vault.Secret, error)) (*vault.Secret, error) {
	sec, err := vaultauth.Do(ctx, p.sess, call)
	var ae *vaultauth.AuthError
	if errors.As(err, &ae) {
		return nil, authErr(ae.Err)
	}
	return sec, err
}

// GenerateDataKey calls <mount>/datakey/plaintext/<keyID> with bits=256.
func (p *Provider) GenerateDataKey(ctx context.Context, keyID string) (kms.DataKey, error) {
	key, err := p.keyName(keyID)
	if err != nil {
		return kms.DataKey{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.cfg.Timeout))
	defer cancel()
	sec, err := p.write(ctx, p.cfg.MountPath+"/datakey/plaintext/"+key, map[string]any{"bits": 256})
	if err != nil {
		return kms.DataKey{}, wrapErr("datakey", key, err, kms.ErrKeyNotFound)
	}
	if sec == nil || sec.Data == nil {
		return kms.DataKey{}, fmt.Errorf("vault-transit: datakey %s: %w: empty answer", key, kms.ErrKeyNotFound)
	}
	ct, _ := sec.Data["ciphertext"].(string)
	ptB64, _ := sec.Data["plaintext"].(string)
	pt, derr := base64.StdEncoding.DecodeString(ptB64)
	if derr != nil || len(pt) != 32 || !strings.HasPrefix(ct, "vault:v") {
		return kms.DataKey{}, fmt.Errorf("vault-transit: datakey %s: %w: malformed answer", key, kms.ErrUnavailable)
	}
	wrapped := []byte(ct)
	if p.cfg.CompactWrapped {
		if wrapped, err = compact(ct); err != nil {
			return kms.DataKey{}, fmt.Errorf("vault-transit: datakey %s: %w: %v", key, kms.ErrUnavailable, err)
		}
	}
	return kms.DataKey{Plaintext: pt, Wrapped: wrapped}, nil
}

// compactFormat is the first byte of the binary form; the text form starts
// with 'v'.
const compactFormat = 0x01

// compact turns "vault:v<N>:<base64>" into 0x01 || uvarint(N) || raw.
func compact(ct string) ([]byte, error) {
	rest, ok := strings.CutPrefix(ct, "vault:v")
	if !ok {
		return nil, errors.New("ciphertext without vault:v prefix")
	}
	ver, b64, ok := strings.Cut(rest, ":")
	if !ok {
		return nil, errors.New("ciphertext without version separator")
	}
	n, err := strconv.ParseUint(ver, 10, 32)
	if err != nil {
		return nil, errors.New("ciphertext with a bad version")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("ciphertext with bad base64")
	}
	if base64.StdEncoding.EncodeToString(raw) != b64 {
		return nil, errors.New("non-canonical base64") // could not be restored byte for byte
	}
	out := binary.AppendUvarint([]byte{compactFormat}, n)
	return append(out, raw...), nil
}

// expand restores Vault's text form from either form.
func expand(wrapped []byte) (string, error) {
	if len(wrapped) > 0 && wrapped[0] == compactFormat {
		n, k := binary.Uvarint(wrapped[1:])
		if k <= 0 || n == 0 || n > 1<<32-1 {
			return "", errors.New("bad key version")
		}
		raw := wrapped[1+k:]
		if len(raw) == 0 {
			return "", errors.New("no ciphertext")
		}
		return "vault:v" + strconv.FormatUint(n, 10) + ":" + base64.StdEncoding.EncodeToString(raw), nil
	}
	if err := checkCiphertext(wrapped); err != nil {
		return "", err
	}
	return string(wrapped), nil
}

// Decrypt calls <mount>/decrypt/<keyID> with the "vault:v<N>:..." ciphertext.
func (p *Provider) Decrypt(ctx context.Context, keyID string, wrapped []byte) ([]byte, error) {
	key, err := p.keyName(keyID)
	if err != nil {
		return nil, err
	}
	ct, err := expand(wrapped)
	if err != nil {
		return nil, fmt.Errorf("vault-transit: decrypt %s: %w: %v", key, kms.ErrInvalidCiphertext, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.cfg.Timeout))
	defer cancel()
	sec, err := p.write(ctx, p.cfg.MountPath+"/decrypt/"+key, map[string]any{"ciphertext": ct})
	if err != nil {
		return nil, wrapErr("decrypt", key, err, kms.ErrInvalidCiphertext)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("vault-transit: decrypt %s: %w: empty answer", key, kms.ErrKeyNotFound)
	}
	ptB64, _ := sec.Data["plaintext"].(string)
	pt, derr := base64.StdEncoding.DecodeString(ptB64)
	if derr != nil || len(pt) != 32 {
		return nil, fmt.Errorf("vault-transit: decrypt %s: %w: plaintext is not a 32-byte key", key, kms.ErrInvalidCiphertext)
	}
	return pt, nil
}

// ReadKV reads the latest version of a KV v2 secret at <mount>/data/<path>
// with the provider's authentication (for credentials kept in Vault). A
// missing secret is ErrKeyNotFound.
func (p *Provider) ReadKV(ctx context.Context, mount, path string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.cfg.Timeout))
	defer cancel()
	full := strings.Trim(mount, "/") + "/data/" + strings.Trim(path, "/")
	sec, err := p.do(ctx, func(ctx context.Context) (*vault.Secret, error) {
		return p.client.Logical().ReadWithContext(ctx, full)
	})
	if err != nil {
		return nil, wrapErr("kv read", full, err, kms.ErrKeyNotFound)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("vault-transit: kv read %s: %w", full, kms.ErrKeyNotFound)
	}
	data, ok := sec.Data["data"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("vault-transit: kv read %s: %w: no data (deleted version?)", full, kms.ErrKeyNotFound)
	}
	return data, nil
}

func (p *Provider) keyName(keyID string) (string, error) {
	if keyID == "" {
		keyID = p.cfg.KeyName
	}
	if keyID == "" {
		return "", fmt.Errorf("vault-transit: %w: no key name given and no default key_name configured", kms.ErrKeyNotFound)
	}
	if err := checkKeyName(keyID); err != nil {
		return "", err
	}
	return keyID, nil
}

// checkCiphertext rejects what cannot be a Transit ciphertext before it
// reaches Vault: "vault:v<N>:<base64>".
func checkCiphertext(b []byte) error {
	s := string(b)
	rest, ok := strings.CutPrefix(s, "vault:v")
	if !ok {
		return errors.New(`no "vault:v" prefix`)
	}
	ver, b64, ok := strings.Cut(rest, ":")
	if !ok {
		return errors.New("no version separator")
	}
	// Vault reads v0 as v1 (a compatibility rule); it never writes v0, so
	// refuse it rather than accept a second spelling of the same ciphertext.
	if n, err := strconv.Atoi(ver); err != nil || n <= 0 || strconv.Itoa(n) != ver {
		return errors.New("bad version")
	}
	if _, err := base64.StdEncoding.DecodeString(b64); err != nil {
		return errors.New("bad base64")
	}
	return nil
}

func wrapErr(op, key string, err error, fallback error) error {
	return fmt.Errorf("vault-transit: %s %s: %w: %w", op, key, classify(err, fallback), err)
}

// classify maps a vault/api error onto a kms sentinel. fallback is used for
// 4xx answers that match nothing better: ErrKeyNotFound when asking for a
// data key (the key cannot be used as configured), ErrInvalidCiphertext when
// decrypting (the ciphertext is the only request-specific input).
func classify(err error, fallback error) error {
	if s, ok := kms.Known(err); ok {
		return s
	}
	var re *vault.ResponseError
	if !errors.As(err, &re) {
		// Connection refused/reset, DNS, TLS handshake, retries exhausted.
		return kms.ErrUnavailable
	}
	msg := strings.ToLower(strings.Join(re.Errors, "; "))
	switch s := re.StatusCode; {
	case s == 401 || s == 403:
		return kms.ErrAccessDenied
	case s == 429 || s == 412 || s == 408 || s >= 500:
		return kms.ErrUnavailable
	case s == 404:
		return kms.ErrKeyNotFound
	}
	switch {
	case strings.Contains(msg, "encryption key not found"),
		strings.Contains(msg, "no existing key named"),
		strings.Contains(msg, "key not found"),
		// min_decryption_version retired the version that wrapped the key.
		strings.Contains(msg, "disallowed by policy (too old)"),
		strings.Contains(msg, "does not support"):
		return kms.ErrKeyNotFound
	case strings.Contains(msg, "invalid ciphertext"),
		strings.Contains(msg, "message authentication failed"),
		strings.Contains(msg, "unable to decrypt"),
		strings.Contains(msg, "missing ciphertext"):
		return kms.ErrInvalidCiphertext
	case strings.Contains(msg, "permission denied"):
		return kms.ErrAccessDenied
	}
	return fallback
}

// classifyLogin: a refused login is ErrAccessDenied; outages stay
// ErrUnavailable.
func classifyLogin(err error) error {
	switch s := classify(err, kms.ErrAccessDenied); s {
	case kms.ErrUnavailable:
		return s
	}
	return kms.ErrAccessDenied
}
