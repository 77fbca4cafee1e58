// Package vaultauth is the HashiCorp Vault client setup that Strait's two
// Vault users share, the authswap credentials store (authswap/creds) and
// the vault-transit key provider (crypto/kms/vaulttransit): a vault/api
// client from address, TLS, timeout, retries and namespace, and a Session
// that gets a token (a token, AppRole or Kubernetes login, with secrets
// read again at every login), logs in again once when Vault answers 403,
// and, when asked, renews renewable tokens before their TTL ends.
//
// Each user keeps its own configuration keys, defaults and error texts;
// this package holds the mechanics only.
package vaultauth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// Auth methods.
const (
	MethodToken      = "token"
	MethodAppRole    = "approle"
	MethodKubernetes = "kubernetes"
)

// ClientConfig builds a vault/api client. vault.DefaultConfig reads the
// VAULT_* environment first, as the vault CLI does; set fields override it.
type ClientConfig struct {
	Address   string // empty: VAULT_ADDR
	Namespace string // Vault Enterprise / HCP; login happens there too
	TLS       TLS
	Timeout   time.Duration // of one HTTP request
	// MaxAttempts per HTTP request, the first included; MinRetryWait and
	// MaxRetryWait bound the wait between attempts.
	MaxAttempts                int
	MinRetryWait, MaxRetryWait time.Duration
}

// TLS towards Vault. The zero value keeps vault/api's (and VAULT_CACERT,
// VAULT_CLIENT_CERT, ...) settings.
type TLS struct {
	CACert, CAPath, ClientCert, ClientKey, ServerName string
	Insecure                                          bool
}

// NewClient returns a client without a token. Errors are prefixed
// "environment: " (a malformed VAULT_* variable) or "tls: ".
func NewClient(c ClientConfig) (*vault.Client, error) {
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("environment: %w", vc.Error)
	}
	if c.Address != "" {
		vc.Address = c.Address
	}
	if t := c.TLS; t != (TLS{}) {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: t.CACert, CAPath: t.CAPath, ClientCert: t.ClientCert, ClientKey: t.ClientKey,
			TLSServerName: t.ServerName, Insecure: t.Insecure}); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
	}
	vc.Timeout = c.Timeout
	vc.MaxRetries = c.MaxAttempts - 1
	vc.MinRetryWait, vc.MaxRetryWait = c.MinRetryWait, c.MaxRetryWait
	client, err := vault.NewClient(vc)
	if err != nil {
		return nil, err
	}
	if c.Namespace != "" {
		client.SetNamespace(strings.Trim(c.Namespace, "/"))
	}
	client.ClearToken()
	return client, nil
}

// Auth says how to get a token; the users validate and default it. Secrets
// are read at every (re-)login, so a rotated file is picked up.
type Auth struct {
	Method string // MethodToken (default), MethodAppRole, MethodKubernetes
	// Method token: Token (inline), else TokenFile, else the environment
	// variable TokenEnv, else VAULT_TOKEN.
	Token, TokenFile, TokenEnv string
	// MountPath of the auth method (approle, kubernetes).
	MountPath string
	// Method approle: RoleID or RoleIDFile; SecretIDFile or SecretIDEnv
	// (neither: the role needs no secret_id).
	RoleID, RoleIDFile        string
	SecretIDFile, SecretIDEnv string
	// Method kubernetes: Role and the service account token in JWTFile.
	Role, JWTFile string
	// ReadSecretFile reads TokenFile and SecretIDFile (nil: os.ReadFile);
	// the result is trimmed.
	ReadSecretFile func(path string) (string, error)
}

// ErrNoToken: method token, and no token anywhere.
var ErrNoToken = errors.New("no token")

// ErrNoClientToken: a login answer without a client token.
var ErrNoClientToken = errors.New("no client token in the answer")

// LoginError is a failed auth/<mount>/login: Err is vault/api's error (a
// *vault.ResponseError for an answer) or ErrNoClientToken.
type LoginError struct {
	Method string
	Err    error
}

func (e *LoginError) Error() string { return e.Method + " login: " + e.Err.Error() }
func (e *LoginError) Unwrap() error { return e.Err }

// AuthError is how Do reports that getting a token failed (Err: a
// LoginError, ErrNoToken or an error reading a secret), as opposed to the
// call's own error.
type AuthError struct{ Err error }

func (e *AuthError) Error() string { return e.Err.Error() }
func (e *AuthError) Unwrap() error { return e.Err }

// Options of a Session.
type Options struct {
	// Renew renews a renewable token with vault/api's LifetimeWatcher
	// (auth/token/renew-self at about two thirds of its TTL) and, when
	// renewal ends (max TTL, or renewing failed until the lease ran out),
	// logs in again or re-reads the token, retrying with a backoff.
	Renew bool
}

// Session holds the client with the current token. Safe for concurrent use.
type Session struct {
	client *vault.Client // requests; carries the token
	login  *vault.Client // unauthenticated, for auth/<mount>/login
	auth   Auth
	opts   Options

	mu           sync.Mutex
	gen          uint64 // successful authentications; 0: none yet
	stopWatch    func() // stops the watcher of the current token; nil: none
	watchPending bool   // the token's lookup-self failed: try again after a call
	exhausted    string // a token whose renewal ended: never watched again
	closed       chan struct{}
	closeOnce    sync.Once
	wg           sync.WaitGroup
	renewals     atomic.Int64
}

// NewSession builds the clients without contacting Vault.
func NewSession(c ClientConfig, a Auth, o Options) (*Session, error) {
	client, err := NewClient(c)
	if err != nil {
		return nil, err
	}
	login, err := NewClient(c)
	if err != nil {
		return nil, err
	}
	if a.Method == "" {
		a.Method = MethodToken
	}
	return &Session{client: client, login: login, auth: a, opts: o, closed: make(chan struct{})}, nil
}

// Client is the client carrying the token.
func (s *Session) Client() *vault.Client { return s.client }

// CanReauth: a 403 may mean the token expired and a fresh one can be had
// (a login, or a token file Vault Agent rewrites).
func (s *Session) CanReauth() bool {
	return s.auth.Method != MethodToken || s.auth.TokenFile != ""
}

// Generation counts successful authentications (0: none yet).
func (s *Session) Generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// Renewals counts successful token renewals.
func (s *Session) Renewals() int64 { return s.renewals.Load() }

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}

// secret reads a secret from file (with read) or the environment variable
// env; "" when neither is set.
func secret(read func(string) (string, error), file, env, what string) (string, error) {
	switch {
	case file != "":
		s, err := read(file)
		if err != nil {
			return "", fmt.Errorf("reading %s file: %w", what, err)
		}
		if s = strings.TrimSpace(s); s == "" {
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

func (s *Session) readToken() (string, error) {
	a := s.auth
	if a.Token != "" {
		return a.Token, nil
	}
	read := a.ReadSecretFile
	if read == nil {
		read = readFile
	}
	tok, err := secret(read, a.TokenFile, a.TokenEnv, "token")
	if err == nil && tok == "" {
		if tok = os.Getenv("VAULT_TOKEN"); tok == "" {
			err = ErrNoToken
		}
	}
	return tok, err
}

// Authenticate gets a token unless another goroutine did since generation
// seen. Errors are LoginError, ErrNoToken or a failure to read a secret.
func (s *Session) Authenticate(ctx context.Context, seen uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != seen {
		return nil
	}
	a := s.auth
	read := a.ReadSecretFile
	if read == nil {
		read = readFile
	}
	body := map[string]any{}
	switch a.Method {
	case MethodToken:
		tok, err := s.readToken()
		if err != nil {
			return err
		}
		s.client.SetToken(tok)
		s.gen++
		if s.opts.Renew {
			s.watchLocked(s.lookupSelfLocked(ctx, tok))
		}
		return nil
	case MethodAppRole:
		roleID := a.RoleID
		if a.RoleIDFile != "" {
			var err error
			if roleID, err = secret(readFile, a.RoleIDFile, "", "role_id"); err != nil {
				return err
			}
		}
		body["role_id"] = roleID
		sid, err := secret(read, a.SecretIDFile, a.SecretIDEnv, "secret_id")
		if err != nil {
			return err
		}
		if sid != "" {
			body["secret_id"] = sid
		}
	case MethodKubernetes:
		jwt, err := secret(readFile, a.JWTFile, "", "service account token")
		if err != nil {
			return err
		}
		body["role"], body["jwt"] = a.Role, jwt
	default:
		return fmt.Errorf("unknown auth method %q", a.Method)
	}
	sec, err := s.login.Logical().WriteWithContext(ctx, "auth/"+strings.Trim(a.MountPath, "/")+"/login", body)
	if err != nil {
		return &LoginError{Method: a.Method, Err: err}
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return &LoginError{Method: a.Method, Err: ErrNoClientToken}
	}
	s.client.SetToken(sec.Auth.ClientToken)
	s.gen++
	if s.opts.Renew {
		s.watchLocked(sec)
	}
	return nil
}

// Do runs call with a token: it authenticates first if nothing has yet,
// and once more when Vault answers 403 and a fresh token can be had, then
// calls again. A failure to get a token is an *AuthError.
func Do[T any](ctx context.Context, s *Session, call func(context.Context) (T, error)) (T, error) {
	var zero T
	gen := s.Generation()
	if gen == 0 {
		if err := s.Authenticate(ctx, 0); err != nil {
			return zero, &AuthError{Err: err}
		}
		gen = s.Generation()
	}
	r, err := call(ctx)
	var re *vault.ResponseError
	if err != nil && errors.As(err, &re) && re.StatusCode == 403 && s.CanReauth() {
		if aerr := s.Authenticate(ctx, gen); aerr != nil {
			return zero, &AuthError{Err: aerr}
		}
		r, err = call(ctx)
	}
	if err == nil && s.opts.Renew {
		s.watchAfterCall(ctx)
	}
	return r, err
}

// Close stops renewing the token.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.mu.Lock()
		if s.stopWatch != nil {
			s.stopWatch()
			s.stopWatch = nil
		}
		s.mu.Unlock()
	})
	s.wg.Wait()
	return nil
}

// watchLocked starts renewing the token sec carries (a login answer, or
// one built from lookup-self), replacing the previous watcher. s.mu is held.
func (s *Session) watchLocked(sec *vault.Secret) {
	if s.stopWatch != nil {
		s.stopWatch()
		s.stopWatch = nil
	}
	select {
	case <-s.closed:
		return
	default:
	}
	if sec == nil || sec.Auth == nil || !sec.Auth.Renewable || sec.Auth.LeaseDuration <= 0 || sec.Auth.ClientToken == s.exhausted {
		return
	}
	w, err := s.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: sec, RenewBehavior: vault.RenewBehaviorIgnoreErrors})
	if err != nil {
		return
	}
	gen, tok := s.gen, sec.Auth.ClientToken
	stop := make(chan struct{})
	s.stopWatch = sync.OnceFunc(func() { w.Stop(); close(stop) })
	s.wg.Add(2)
	go func() { defer s.wg.Done(); w.Start() }()
	go func() {
		defer s.wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-w.RenewCh():
				s.renewals.Add(1)
			case <-w.DoneCh():
				// Renewal is over: the token nears its max TTL, or renewing
				// failed until its lease ran out. Get a new one.
				s.mu.Lock()
				s.exhausted = tok
				s.mu.Unlock()
				s.relogin(gen, stop)
				return
			}
		}
	}()
}

// relogin replaces the token of generation gen, retrying with a backoff
// (1s doubling to 1m) until it works, another goroutine replaced it, or
// the session is closed.
func (s *Session) relogin(gen uint64, stop chan struct{}) {
	wait := time.Second
	for {
		timeout := s.client.ClientTimeout()
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := s.Authenticate(ctx, gen)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.closed:
			return
		case <-stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// lookupSelfLocked asks Vault about the client's token, for its TTL and
// whether it is renewable; when no answer can be had, it is asked again
// after the next successful call.
func (s *Session) lookupSelfLocked(ctx context.Context, tok string) *vault.Secret {
	s.watchPending = false
	sec, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil || sec == nil {
		var re *vault.ResponseError
		s.watchPending = !(errors.As(err, &re) && re.StatusCode == 403) // a refused token is replaced on 403
		return nil
	}
	ttl, _ := sec.TokenTTL()
	renewable, _ := sec.TokenIsRenewable()
	return &vault.Secret{Auth: &vault.SecretAuth{ClientToken: tok, Renewable: renewable, LeaseDuration: int(ttl / time.Second)}}
}

func (s *Session) watchAfterCall(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watchPending {
		s.watchLocked(s.lookupSelfLocked(ctx, s.client.Token()))
	}
}
