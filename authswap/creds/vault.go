package creds

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/strait-proxy/strait/config"
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

// Vault is the Vault KV v2 store.
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
	client *vault.Client
	login  *vault.Client

	mu           sync.Mutex
	gen          uint64 // successful authentications; 0: none yet
	stopWatch    func() // stops the watcher of the current token; nil: none
	watchPending bool   // the token's lookup-self failed: try again after a read
	exhausted    string // a token whose renewal ended: never watched again
	closed       chan struct{}
	closeOnce    sync.Once
	wg           sync.WaitGroup
	renewals     atomic.Int64
}

// NewVault builds the client without contacting Vault (Strait starts while
// Vault is down, and refuses connections until it is back).
func NewVault(cfg VaultConfig) (*Vault, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mk := func() (*vault.Client, error) {
		vc := vault.DefaultConfig()
		if vc.Error != nil {
			return nil, vc.Error
		}
		if cfg.Address != "" {
			vc.Address = cfg.Address
		}
		if t := cfg.TLS; t != (VaultTLS{}) {
			if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: t.CACert, ClientCert: t.ClientCert, ClientKey: t.ClientKey, TLSServerName: t.ServerName}); err != nil {
				return nil, fmt.Errorf("tls: %w", err)
			}
		}
		vc.Timeout = cfg.Timeout.D()
		vc.MaxRetries = cfg.MaxAttempts - 1
		vc.MinRetryWait, vc.MaxRetryWait = 100*time.Millisecond, 500*time.Millisecond
		c, err := vault.NewClient(vc)
		if err != nil {
			return nil, err
		}
		if cfg.Namespace != "" {
			c.SetNamespace(strings.Trim(cfg.Namespace, "/"))
		}
		c.ClearToken()
		return c, nil
	}
	client, err := mk()
	if err != nil {
		return nil, err
	}
	login, err := mk()
	if err != nil {
		return nil, err
	}
	return &Vault{cfg: cfg, client: client, login: login, closed: make(chan struct{})}, nil
}

// Close stops renewing the token.
func (v *Vault) Close() error {
	v.closeOnce.Do(func() {
		close(v.closed)
		v.mu.Lock()
		if v.stopWatch != nil {
			v.stopWatch()
			v.stopWatch = nil
		}
		v.mu.Unlock()
	})
	v.wg.Wait()
	return nil
}

// Renewals counts successful token renewals (tests, metrics).
func (v *Vault) Renewals() int64 { return v.renewals.Load() }

// watchLocked starts renewing the token sec carries (a login answer, or
// one built from lookup-self), replacing the previous watcher. v.mu is held.
func (v *Vault) watchLocked(sec *vault.Secret) {
	if v.stopWatch != nil {
		v.stopWatch()
		v.stopWatch = nil
	}
	select {
	case <-v.closed:
		return
	default:
	}
	if sec == nil || sec.Auth == nil || !sec.Auth.Renewable || sec.Auth.LeaseDuration <= 0 || sec.Auth.ClientToken == v.exhausted {
		return
	}
	w, err := v.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: sec, RenewBehavior: vault.RenewBehaviorIgnoreErrors})
	if err != nil {
		return
	}
	gen, tok := v.gen, sec.Auth.ClientToken
	stop := make(chan struct{})
	v.stopWatch = sync.OnceFunc(func() { w.Stop(); close(stop) })
	v.wg.Add(2)
	go func() { defer v.wg.Done(); w.Start() }()
	go func() {
		defer v.wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-w.RenewCh():
				v.renewals.Add(1)
			case <-w.DoneCh():
				// Renewal is over: the token nears its max TTL, or renewing
				// failed until its lease ran out. Get a new one.
				v.mu.Lock()
				v.exhausted = tok
				v.mu.Unlock()
				v.relogin(gen, stop)
				return
			}
		}
	}()
}

// relogin replaces the token of generation gen, retrying with a backoff
// (1s doubling to 1m) until it works, another goroutine replaced it, or
// the store is closed.
func (v *Vault) relogin(gen uint64, stop chan struct{}) {
	wait := time.Second
	for {
		ctx, cancel := context.WithTimeout(context.Background(), v.cfg.Timeout.D())
		err := v.authenticate(ctx, gen)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-v.closed:
			return
		case <-stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// lookupSelfLocked asks Vault about the client's token, for its TTL and
// whether it is renewable; an answer that cannot be had is retried after
// the next successful read.
func (v *Vault) lookupSelfLocked(ctx context.Context, tok string) *vault.Secret {
	v.watchPending = false
	sec, err := v.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil || sec == nil {
		var re *vault.ResponseError
		v.watchPending = !(errors.As(err, &re) && re.StatusCode == 403) // a refused token is replaced on 403
		return nil
	}
	ttl, _ := sec.TokenTTL()
	renewable, _ := sec.TokenIsRenewable()
	return &vault.Secret{Auth: &vault.SecretAuth{ClientToken: tok, Renewable: renewable, LeaseDuration: int(ttl / time.Second)}}
}

// watchAfterRead retries lookup-self when it failed when the token was set.
func (v *Vault) watchAfterRead(ctx context.Context) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.watchPending {
		v.watchLocked(v.lookupSelfLocked(ctx, v.client.Token()))
	}
}

// Name is "vault".
func (*Vault) Name() string { return "vault" }

func readSecret(file, env, what string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading %s file: %w", what, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("%s file %s is empty", what, file)
		}
		return s, nil
	case env != "":
		s := os.Getenv(env)
		if s == "" {
			return "", fmt.Errorf("environment variable %s (%s) is empty", env, what)
		}
		return s, nil
	}
	return "", nil
}

// authenticate gets a token unless another goroutine did since seen.
func (v *Vault) authenticate(ctx context.Context, seen uint64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.gen != seen {
		return nil
	}
	a := v.cfg.Auth
	body := map[string]any{}
	switch a.Method {
	case "token":
		tok, err := readSecret(a.TokenFile, a.TokenEnv, "token")
		if err == nil && tok == "" {
			if tok = os.Getenv("VAULT_TOKEN"); tok == "" {
				err = errors.New("no token (auth.token_file, auth.token_env or VAULT_TOKEN)")
			}
		}
		if err != nil {
			return err
		}
		v.client.SetToken(tok)
		v.gen++
		v.watchLocked(v.lookupSelfLocked(ctx, tok))
		return nil
	case "approle":
		roleID := a.RoleID
		if a.RoleIDFile != "" {
			var err error
			if roleID, err = readSecret(a.RoleIDFile, "", "role_id"); err != nil {
				return err
			}
		}
		body["role_id"] = roleID
		sid, err := readSecret(a.SecretIDFile, a.SecretIDEnv, "secret_id")
		if err != nil {
			return err
		}
		if sid != "" {
			body["secret_id"] = sid
		}
	case "kubernetes":
		jwt, err := readSecret(a.JWTFile, "", "service account token")
		if err != nil {
			return err
		}
		body["role"], body["jwt"] = a.Role, jwt
	}
	sec, err := v.login.Logical().WriteWithContext(ctx, "auth/"+strings.Trim(a.MountPath, "/")+"/login", body)
	if err != nil {
		return fmt.Errorf("%s login: %w", a.Method, cleanErr(err))
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return fmt.Errorf("%s login: no client token in the answer", a.Method)
	}
	v.client.SetToken(sec.Auth.ClientToken)
	v.gen++
	v.watchLocked(sec)
	return nil
}

func (v *Vault) generation() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.gen
}

// Lookup reads the principal's secret (the latest version).
func (v *Vault) Lookup(ctx context.Context, principal string) (Credentials, error) {
	if err := CheckName(principal); err != nil {
		return Credentials{}, fmt.Errorf("%w: %v", ErrNoMapping, err)
	}
	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout.D())
	defer cancel()
	path := strings.ReplaceAll(strings.Trim(v.cfg.Path, "/"), "{principal}", principal)
	gen := v.generation()
	if gen == 0 {
		if err := v.authenticate(ctx, 0); err != nil {
			return Credentials{}, fmt.Errorf("%w: vault: %v", ErrUnavailable, err)
		}
		gen = v.generation()
	}
	kv := v.client.KVv2(v.cfg.Mount)
	sec, err := kv.Get(ctx, path)
	var re *vault.ResponseError
	if err != nil && errors.As(err, &re) && re.StatusCode == 403 && v.canReauth() {
		if aerr := v.authenticate(ctx, gen); aerr != nil {
			return Credentials{}, fmt.Errorf("%w: vault: %v", ErrUnavailable, aerr)
		}
		sec, err = kv.Get(ctx, path)
	}
	if errors.Is(err, vault.ErrSecretNotFound) {
		return Credentials{}, fmt.Errorf("%w: %q (vault %s/data/%s)", ErrNoMapping, principal, v.cfg.Mount, path)
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("%w: vault: read %s/data/%s: %v", ErrUnavailable, v.cfg.Mount, path, cleanErr(err))
	}
	v.watchAfterRead(ctx)
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

func (v *Vault) canReauth() bool {
	return v.cfg.Auth.Method != "token" || v.cfg.Auth.TokenFile != ""
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
