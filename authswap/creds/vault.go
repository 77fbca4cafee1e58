package creds

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/vaultauth"
)

// VaultConfig is the Vault KV v2 store. The secret of principal p is read
// from <mount>/data/<path with {principal} replaced by p>, and holds the
// keys of Credentials: username and password, or token, or client_id and
// client_secret (with optional token_url, scope, audience), or
// aws_access_key_id and aws_secret_access_key (and aws_session_token); and
// optionally mechanism.
type VaultConfig struct {
	// Address, e.g. "https://vault.example.com:8200". Empty: VAULT_ADDR.
	Address string `json:"address,omitempty"`
	// Namespace (Vault Enterprise, HCP Vault), e.g. "admin/team-a".
	Namespace string `json:"namespace,omitempty"`
	// Mount of the KV v2 engine (default "secret").
	Mount string `json:"mount,omitempty"`
	// Path inside the mount, with {principal} (default
	// "strait/principals/{principal}").
	Path string    `json:"path,omitempty"`
	Auth VaultAuth `json:"auth"`
	TLS  VaultTLS  `json:"tls,omitempty"`
	// Timeout bounds one lookup, retries and a re-login included (default 5s).
	Timeout config.Duration `json:"timeout,omitempty"`
	// MaxAttempts per HTTP request, first included (default 2).
	MaxAttempts int `json:"max_attempts,omitempty"`
}

// VaultAuth says how Strait gets a Vault token. Secrets only by file or
// environment variable reference.
type VaultAuth struct {
	// Method: "token" (default), "approle" or "kubernetes".
	Method string `json:"method,omitempty"`
	// TokenFile (e.g. a Vault Agent sink, re-read on 403) or TokenEnv (the
	// name of an environment variable); neither: VAULT_TOKEN.
	TokenFile string `json:"token_file,omitempty"`
	TokenEnv  string `json:"token_env,omitempty"`
	// MountPath of the auth method (default "approle" or "kubernetes").
	MountPath string `json:"mount_path,omitempty"`
	// RoleID (not a secret) or RoleIDFile, and SecretIDFile or SecretIDEnv
	// (method approle).
	RoleID       string `json:"role_id,omitempty"`
	RoleIDFile   string `json:"role_id_file,omitempty"`
	SecretIDFile string `json:"secret_id_file,omitempty"`
	SecretIDEnv  string `json:"secret_id_env,omitempty"`
	// Role and JWTFile (method kubernetes; default the pod's service
	// account token).
	Role    string `json:"role,omitempty"`
	JWTFile string `json:"jwt_file,omitempty"`
}

// VaultTLS configures TLS to Vault.
type VaultTLS struct {
	CACert     string `json:"ca_cert,omitempty"`
	ClientCert string `json:"client_cert,omitempty"`
	ClientKey  string `json:"client_key,omitempty"`
	ServerName string `json:"server_name,omitempty"`
}

// Validate fills defaults and checks the configuration; errors name the
// keys under vault.
func (c *VaultConfig) Validate() error {
	var errs []string
	if c.Mount == "" {
		c.Mount = "secret"
	}
	c.Mount = strings.Trim(c.Mount, "/")
	if c.Path == "" {
		c.Path = "strait/principals/{principal}"
	}
	if !strings.Contains(c.Path, "{principal}") {
		errs = append(errs, "path: must contain {principal}")
	}
	if c.Timeout == 0 {
		c.Timeout = config.Duration(5 * time.Second)
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 2
	}
	a := &c.Auth
	switch a.Method {
	case "", "token":
		a.Method = "token"
		if a.TokenFile != "" && a.TokenEnv != "" {
			errs = append(errs, "auth: token_file and token_env are exclusive")
		}
	case "approle":
		if (a.RoleID == "") == (a.RoleIDFile == "") {
			errs = append(errs, "auth: approle needs exactly one of role_id, role_id_file")
		}
		if a.SecretIDFile != "" && a.SecretIDEnv != "" {
			errs = append(errs, "auth: secret_id_file and secret_id_env are exclusive")
		}
		if a.MountPath == "" {
			a.MountPath = "approle"
		}
	case "kubernetes":
		if a.Role == "" {
			errs = append(errs, "auth.role: required for kubernetes auth")
		}
		if a.JWTFile == "" {
			a.JWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
		}
		if a.MountPath == "" {
			a.MountPath = "kubernetes"
		}
	default:
		errs = append(errs, fmt.Sprintf("auth.method: unknown %q (token, approle, kubernetes)", a.Method))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// Vault is the Vault KV v2 store. Its client and token handling are
// internal/vaultauth's, shared with the vault-transit key provider.
//
// A renewable token (from a login, or a token whose lookup-self reports a
// TTL) is renewed in the background with vault/api's LifetimeWatcher
// (auth/token/renew-self at about two thirds of its TTL). When renewal is
// no longer possible (the token nears its max TTL, or renewing failed until
// it ran out) Strait logs in again (AppRole, Kubernetes) or re-reads the
// token file (Vault Agent writes the new token there), retrying with a
// backoff while Vault is down. Close stops it.
type Vault struct {
	cfg    VaultConfig
	sess   *vaultauth.Session
	client *vault.Client // sess.Client(): carries the token
}

// NewVault builds the client without contacting Vault (Strait starts while
// Vault is down, and refuses connections until it is back).
func NewVault(cfg VaultConfig) (*Vault, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, a := cfg.TLS, cfg.Auth
	sess, err := vaultauth.NewSession(vaultauth.ClientConfig{
		Address: cfg.Address, Namespace: cfg.Namespace,
		TLS:     vaultauth.TLS{CACert: t.CACert, ClientCert: t.ClientCert, ClientKey: t.ClientKey, ServerName: t.ServerName},
		Timeout: cfg.Timeout.D(), MaxAttempts: cfg.MaxAttempts, MinRetryWait: 100 * time.Millisecond, MaxRetryWait: 500 * time.Millisecond,
	}, vaultauth.Auth{
		Method: a.Method, TokenFile: a.TokenFile, TokenEnv: a.TokenEnv, MountPath: a.MountPath,
		RoleID: a.RoleID, RoleIDFile: a.RoleIDFile, SecretIDFile: a.SecretIDFile, SecretIDEnv: a.SecretIDEnv,
		Role: a.Role, JWTFile: a.JWTFile,
	}, vaultauth.Options{Renew: true})
	if err != nil {
		return nil, err
	}
	return &Vault{cfg: cfg, sess: sess, client: sess.Client()}, nil
}

// Close stops renewing the token.
func (v *Vault) Close() error { return v.sess.Close() }

// Renewals counts successful token renewals (tests, metrics).
func (v *Vault) Renewals() int64 { return v.sess.Renewals() }

// Name is "vault".
func (*Vault) Name() string { return "vault" }

// Lookup reads the principal's secret (the latest version).
func (v *Vault) Lookup(ctx context.Context, principal string) (Credentials, error) {
	if err := CheckName(principal); err != nil {
		return Credentials{}, fmt.Errorf("%w: %v", ErrNoMapping, err)
	}
	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout.D())
	defer cancel()
	path := strings.ReplaceAll(strings.Trim(v.cfg.Path, "/"), "{principal}", principal)
	kv := v.client.KVv2(v.cfg.Mount)
	sec, err := vaultauth.Do(ctx, v.sess, func(ctx context.Context) (*vault.KVSecret, error) { return kv.Get(ctx, path) })
	var ae *vaultauth.AuthError
	if errors.As(err, &ae) {
		return Credentials{}, fmt.Errorf("%w: vault: %v", ErrUnavailable, authErr(ae.Err))
	}
	if errors.Is(err, vault.ErrSecretNotFound) {
		return Credentials{}, fmt.Errorf("%w: %q (vault %s/data/%s)", ErrNoMapping, principal, v.cfg.Mount, path)
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("%w: vault: read %s/data/%s: %v", ErrUnavailable, v.cfg.Mount, path, cleanErr(err))
	}
	str := func(k string) string { s, _ := sec.Data[k].(string); return s }
	c := Credentials{Mechanism: str("mechanism"), Username: str("username"), Password: str("password"), Token: str("token"),
		ClientID: str("client_id"), ClientSecret: str("client_secret"), TokenURL: str("token_url"), Scope: str("scope"), Audience: str("audience"),
		AWSAccessKeyID: str("aws_access_key_id"), AWSSecretAccessKey: str("aws_secret_access_key"), AWSSessionToken: str("aws_session_token")}
	if sec.VersionMetadata != nil {
		c.Version = strconv.Itoa(sec.VersionMetadata.Version)
	}
	if c.Username == "" && c.Password == "" && c.Token == "" && c.ClientID == "" && c.AWSAccessKeyID == "" {
		return Credentials{}, fmt.Errorf("%w: vault %s/data/%s has none of username, password, token, client_id, aws_access_key_id", ErrInvalid, v.cfg.Mount, path)
	}
	return c, nil
}

// authErr words a failure to get a token.
func authErr(err error) error {
	var le *vaultauth.LoginError
	switch {
	case errors.As(err, &le):
		return fmt.Errorf("%s login: %w", le.Method, cleanErr(le.Err))
	case errors.Is(err, vaultauth.ErrNoToken):
		return errors.New("no token (auth.token_file, auth.token_env or VAULT_TOKEN)")
	}
	return err
}

// cleanErr keeps Vault's status and error strings but not the request
// dump, which names the URL (fine) and nothing secret; it exists so that
// a future client version echoing request bodies cannot leak into logs.
func cleanErr(err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("HTTP %d: %s", re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return err
}
