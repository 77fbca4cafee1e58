package kmsdouble

// Vault is a TEST DOUBLE of the documented HashiCorp Vault HTTP API, not
// Vault. It implements, under /v1/:
//
//   - Transit (https://developer.hashicorp.com/vault/api-docs/secret/transit):
//     keys/<name> (create, read), keys/<name>/rotate, keys/<name>/config
//     (min_decryption_version), datakey/plaintext|wrapped/<name> (bits),
//     encrypt/<name> (creates the key if missing, as Vault does by default),
//     decrypt/<name>. Keys are aes256-gcm96; ciphertexts are
//     "vault:v<N>:" + base64(12-byte nonce || AES-256-GCM ciphertext || tag),
//     exactly the shape Vault produces, with Vault's 400 error strings
//     ("encryption key not found", "invalid ciphertext: ...",
//     "cipher: message authentication failed", "... (too old)").
//   - KV version 2 (https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2):
//     data/<path> read ({"data":{"data":{...},"metadata":{...}}}, ?version=N)
//     and write.
//   - auth/<mount>/login for AppRole (role_id, secret_id) and Kubernetes
//     (role, jwt) returning {"auth":{"client_token":...,"lease_duration":N,
//     "renewable":true}};
//   - tokens (https://developer.hashicorp.com/vault/api-docs/auth/token):
//     auth/token/lookup-self (ttl, creation_ttl, explicit_max_ttl,
//     renewable, expire_time, issue_time) and auth/token/renew-self
//     (increment in seconds or as a duration string; the new TTL is the
//     increment, else the token's TTL, capped at its explicit max TTL with
//     Vault's warning; a non-renewable token gets 400 "lease is not
//     renewable"). A token past its TTL is gone: 403 permission denied;
//   - sys/health.
//   - Tokens in X-Vault-Token (or Authorization: Bearer), 403
//     {"errors":["permission denied"]} otherwise; Enterprise namespaces in
//     X-Vault-Namespace and/or as a path prefix; a token is valid in the
//     namespace that issued it and its children.
//
// Errors use Vault's body {"errors":["..."]}. Policies, secret leases (and
// sys/leases), periodic and batch tokens, convergent/derived keys and batch
// requests are not implemented.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// VaultOptions configures NewVault.
type VaultOptions struct {
	// TLS serves HTTPS with a fresh test PKI (see Vault.TLS).
	TLS bool
	// RequireClientCert (with TLS) demands a client certificate signed by
	// the test CA.
	RequireClientCert bool
}

// Vault is the Vault test double. Create it with NewVault.
type Vault struct {
	server
	// RootToken is valid in every namespace.
	RootToken string
	// TLS is the PKI when VaultOptions.TLS was set.
	TLS *TLSBundle

	mu         sync.Mutex
	namespaces map[string]*vaultNS
	tokens     map[string]*vaultToken
}

type vaultNS struct {
	mounts map[string]*vaultMount // path without slashes; auth mounts as "auth/<path>"
}

type vaultMount struct {
	kind  string // transit, kv-v2, approle, kubernetes
	keys  map[string]*transitKey
	kv    map[string][]kvVersion
	roles map[string]string // approle: role_id → secret_id; kubernetes: role → jwt
	login TokenTTL          // of the tokens a login on this auth mount issues
}

type transitKey struct {
	versions   [][]byte
	created    []time.Time
	minDecrypt int
}

type kvVersion struct {
	data    map[string]any
	created time.Time
}

type vaultToken struct {
	ns        string
	policies  []string
	meta      map[string]string
	created   time.Time
	ttl       time.Duration // creation TTL (the default renewal increment); 0: never expires
	maxTTL    time.Duration // explicit max TTL from creation; 0: none
	renewable bool
	expires   time.Time // zero: never
	accessor  string
}

// TokenTTL is a token's lifetime: TTL (0: the token never expires), the
// explicit max TTL renewals cannot pass (0: none), and whether it may be
// renewed.
type TokenTTL struct {
	TTL, MaxTTL time.Duration
	Renewable   bool
}

func newVaultToken(ns string, policies []string, meta map[string]string, l TokenTTL) *vaultToken {
	now := time.Now()
	t := &vaultToken{ns: ns, policies: policies, meta: meta, created: now, ttl: l.TTL, maxTTL: l.MaxTTL, renewable: l.Renewable, accessor: randToken()}
	if l.TTL > 0 {
		t.expires = now.Add(l.TTL)
		if l.MaxTTL > 0 && l.MaxTTL < l.TTL {
			t.expires = now.Add(l.MaxTTL)
		}
	}
	return t
}

// Mount kinds for Vault.Mount.
const (
	KindTransit    = "transit"
	KindKVv2       = "kv-v2"
	KindAppRole    = "approle"
	KindKubernetes = "kubernetes"
)

// NewVault starts a Vault double on 127.0.0.1 with, in the root namespace, a
// transit engine at "transit" and a KV v2 engine at "secret".
func NewVault(opts VaultOptions) *Vault {
	v := &Vault{
		RootToken:  "hvs." + randToken(),
		namespaces: map[string]*vaultNS{"": {mounts: map[string]*vaultMount{}}},
		tokens:     map[string]*vaultToken{},
	}
	v.tokens[v.RootToken] = &vaultToken{ns: "", policies: []string{"root"}, created: time.Now()}
	v.Mount("", "transit", KindTransit)
	v.Mount("", "secret", KindKVv2)
	v.handler = http.HandlerFunc(v.handle)
	var err error
	if opts.TLS {
		if v.TLS, err = NewTLSBundle(); err != nil {
			panic(err)
		}
		err = v.start(v.TLS.serverConfig(opts.RequireClientCert))
	} else {
		err = v.start(nil)
	}
	if err != nil {
		panic(err)
	}
	return v
}

func randToken() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// CreateNamespace creates namespace ns (e.g. "team-a" or "team-a/sub"; its
// parents are created too) with no mounts.
func (v *Vault) CreateNamespace(ns string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.nsLocked(trimSlashes(ns))
}

func (v *Vault) nsLocked(ns string) *vaultNS {
	if n := v.namespaces[ns]; n != nil {
		return n
	}
	if i := strings.LastIndexByte(ns, '/'); i >= 0 {
		v.nsLocked(ns[:i])
	}
	n := &vaultNS{mounts: map[string]*vaultMount{}}
	v.namespaces[ns] = n
	return n
}

// Mount enables a secrets engine or auth method of kind at path in ns (auth
// methods at "auth/<path>", so pass e.g. "approle" and it becomes
// auth/approle).
func (v *Vault) Mount(ns, path, kind string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := v.nsLocked(trimSlashes(ns))
	path = trimSlashes(path)
	if kind == KindAppRole || kind == KindKubernetes {
		path = "auth/" + strings.TrimPrefix(path, "auth/")
	}
	n.mounts[path] = &vaultMount{kind: kind, keys: map[string]*transitKey{}, kv: map[string][]kvVersion{}, roles: map[string]string{},
		login: TokenTTL{TTL: time.Hour, Renewable: true}}
}

// SetLoginTTL sets the lifetime of the tokens that logins on the auth mount
// (approle, kubernetes) issue from now on (default: TTL 1h, no max,
// renewable), as the role's token_ttl, token_max_ttl settings do.
func (v *Vault) SetLoginTTL(ns, mount string, l TokenTTL) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mountLocked(ns, "auth/"+trimSlashes(mount)).login = l
}

// mountLocked returns a mount the test set up; a missing one is a bug in
// the test, reported loudly.
func (v *Vault) mountLocked(ns, path string) *vaultMount {
	n := v.namespaces[trimSlashes(ns)]
	if n == nil || n.mounts[trimSlashes(path)] == nil {
		panic(fmt.Sprintf("kmsdouble: no mount %q in namespace %q", path, ns))
	}
	return n.mounts[trimSlashes(path)]
}

func (m *vaultMount) key(name string) *transitKey {
	k := m.keys[name]
	if k == nil {
		panic(fmt.Sprintf("kmsdouble: no transit key %q", name))
	}
	return k
}

// CreateTransitKey creates an aes256-gcm96 key (version 1).
func (v *Vault) CreateTransitKey(ns, mount, name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.mountLocked(ns, mount)
	if m.keys[name] == nil {
		m.keys[name] = newTransitKey()
	}
}

// RotateTransitKey adds a key version; new ciphertexts are vault:v<N+1>:.
func (v *Vault) RotateTransitKey(ns, mount, name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mountLocked(ns, mount).key(name).rotate()
}

// SetMinDecryptionVersion makes older versions undecryptable, as
// keys/<name>/config does.
func (v *Vault) SetMinDecryptionVersion(ns, mount, name string, ver int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mountLocked(ns, mount).key(name).minDecrypt = ver
}

// PutKV writes a new version of a KV v2 secret.
func (v *Vault) PutKV(ns, mount, path string, data map[string]any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.mountLocked(ns, mount)
	m.kv[trimSlashes(path)] = append(m.kv[trimSlashes(path)], kvVersion{data: data, created: time.Now()})
}

// AddAppRole registers role_id/secret_id on an approle mount.
func (v *Vault) AddAppRole(ns, mount, roleID, secretID string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mountLocked(ns, "auth/"+trimSlashes(mount)).roles[roleID] = secretID
}

// AddKubernetesRole registers a role on a kubernetes auth mount that accepts
// exactly the service account JWT jwt (the double does not validate JWTs
// against a Kubernetes API server).
func (v *Vault) AddKubernetesRole(ns, mount, role, jwt string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mountLocked(ns, "auth/"+trimSlashes(mount)).roles[role] = jwt
}

// IssueToken returns a new token valid in ns (and its children).
func (v *Vault) IssueToken(ns string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	t := "hvs." + randToken()
	v.tokens[t] = newVaultToken(trimSlashes(ns), []string{"default"}, nil, TokenTTL{})
	return t
}

// IssueTokenTTL returns a new token valid in ns with lifetime l, as
// `vault token create -ttl -explicit-max-ttl -renewable` makes.
func (v *Vault) IssueTokenTTL(ns string, l TokenTTL) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	t := "hvs." + randToken()
	v.tokens[t] = newVaultToken(trimSlashes(ns), []string{"default"}, nil, l)
	return t
}

// TokenExpiry reports when token expires (zero: never) and whether it is
// still valid.
func (v *Vault) TokenExpiry(token string) (time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	t := v.tokens[token]
	if t == nil || (!t.expires.IsZero() && time.Now().After(t.expires)) {
		return time.Time{}, false
	}
	return t.expires, true
}

// RevokeToken revokes a token (as if it expired); its next use gets 403.
func (v *Vault) RevokeToken(token string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.tokens, token)
}

// Tokens returns how many tokens are valid (root included).
func (v *Vault) Tokens() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.tokens)
}

func newTransitKey() *transitKey {
	k := &transitKey{}
	k.rotate()
	return k
}

func (k *transitKey) rotate() {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	k.versions = append(k.versions, b)
	k.created = append(k.created, time.Now())
}

func (k *transitKey) info(name string) map[string]any {
	keys := map[string]any{}
	for i, c := range k.created {
		keys[strconv.Itoa(i+1)] = c.Unix()
	}
	min := k.minDecrypt
	if min == 0 {
		min = 1
	}
	return map[string]any{
		"name": name, "type": "aes256-gcm96", "keys": keys,
		"latest_version": len(k.versions), "min_decryption_version": min,
		"min_encryption_version": 0, "deletion_allowed": false, "derived": false,
		"exportable": false, "allow_plaintext_backup": false,
		"supports_encryption": true, "supports_decryption": true,
		"supports_derivation": true, "supports_signing": false,
		"auto_rotate_period": 0, "imported_key": false,
	}
}

func (k *transitKey) encrypt(pt []byte) string {
	ver := len(k.versions)
	blk, _ := aes.NewCipher(k.versions[ver-1])
	g, _ := cipher.NewGCM(blk)
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	return fmt.Sprintf("vault:v%d:%s", ver, base64.StdEncoding.EncodeToString(g.Seal(nonce, nonce, pt, nil)))
}

// decrypt follows the checks and messages of Vault's keysutil.Policy.
func (k *transitKey) decrypt(ct string) ([]byte, string) {
	if !strings.HasPrefix(ct, "vault:") {
		return nil, "invalid ciphertext: no prefix"
	}
	parts := strings.SplitN(strings.TrimPrefix(ct, "vault:"), ":", 2)
	if len(parts) != 2 {
		return nil, "invalid ciphertext: wrong number of fields"
	}
	ver, err := strconv.Atoi(strings.TrimPrefix(parts[0], "v"))
	if err != nil || !strings.HasPrefix(parts[0], "v") {
		return nil, "invalid ciphertext: version number could not be decoded"
	}
	if ver == 0 {
		ver = 1
	}
	if ver > len(k.versions) {
		return nil, "invalid ciphertext: version is too new"
	}
	if k.minDecrypt > 0 && ver < k.minDecrypt {
		return nil, "ciphertext or signature version is disallowed by policy (too old)"
	}
	raw, err := base64.StdEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, "invalid ciphertext: could not decode base64"
	}
	if len(raw) < 12+16 {
		return nil, "invalid ciphertext: unable to decrypt"
	}
	blk, _ := aes.NewCipher(k.versions[ver-1])
	g, _ := cipher.NewGCM(blk)
	pt, err := g.Open(nil, raw[:12], raw[12:], nil)
	if err != nil {
		return nil, "cipher: message authentication failed"
	}
	return pt, ""
}

type vaultReq struct {
	w      http.ResponseWriter
	r      *http.Request
	body   map[string]any
	ns     string
	rel    string
	reqID  string
	method string
}

func (q *vaultReq) errs(status int, msgs ...string) {
	if msgs == nil {
		msgs = []string{}
	}
	q.w.Header().Set("Content-Type", "application/json")
	q.w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"errors": msgs})
	_, _ = q.w.Write(b)
}

func (q *vaultReq) ok(data any, auth any) {
	q.w.Header().Set("Content-Type", "application/json")
	q.w.WriteHeader(http.StatusOK)
	b, _ := json.Marshal(map[string]any{
		"request_id": q.reqID, "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": data, "wrap_info": nil, "warnings": nil, "auth": auth, "mount_type": "",
	})
	_, _ = q.w.Write(b)
}

func (q *vaultReq) str(name string) string {
	s, _ := q.body[name].(string)
	return s
}

func (q *vaultReq) integer(name string) (int, bool) {
	switch x := q.body[name].(type) {
	case float64:
		return int(x), true
	case string:
		n, err := strconv.Atoi(x)
		return n, err == nil
	}
	return 0, false
}

func (v *Vault) handle(w http.ResponseWriter, r *http.Request) {
	q := &vaultReq{w: w, r: r, reqID: newUUID(), method: r.Method}
	rest, okPrefix := strings.CutPrefix(r.URL.Path, "/v1/")
	hdrNS := trimSlashes(r.Header.Get("X-Vault-Namespace"))
	full := trimSlashes(hdrNS + "/" + trimSlashes(rest))

	v.mu.Lock()
	ns, rel, nsOK := v.splitNSLocked(hdrNS, full)
	v.mu.Unlock()
	v.count(opName(rel))

	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	f, release := v.currentFault()
	switch f {
	case FaultDeny:
		q.errs(http.StatusForbidden, "permission denied")
		return
	case FaultThrottle:
		w.Header().Set("Retry-After", "1")
		q.errs(http.StatusTooManyRequests, fmt.Sprintf("request path %q: rate limit quota exceeded", rel))
		return
	case Fault5xx:
		q.errs(http.StatusServiceUnavailable, "Vault is sealed")
		return
	case FaultHang:
		hang(r, release)
		panic(http.ErrAbortHandler)
	}
	if !okPrefix || !nsOK {
		q.errs(http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", rest))
		return
	}
	if len(raw) > 0 && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
		if err := json.Unmarshal(raw, &q.body); err != nil {
			q.errs(http.StatusBadRequest, "error parsing JSON")
			return
		}
	}
	q.ns, q.rel = ns, rel

	v.mu.Lock()
	defer v.mu.Unlock()
	if rel == "sys/health" {
		q.ok(map[string]any{"initialized": true, "sealed": false, "standby": false}, nil)
		return
	}
	nsState := v.namespaces[ns]
	if mp, sub, m := findMount(nsState, rel); m != nil && (m.kind == KindAppRole || m.kind == KindKubernetes) && sub == "login" {
		_ = mp
		v.login(q, m)
		return
	}
	tok := r.Header.Get("X-Vault-Token")
	if tok == "" {
		tok = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	t := v.tokens[tok]
	if t != nil && !t.expires.IsZero() && time.Now().After(t.expires) {
		delete(v.tokens, tok) // expired tokens are revoked
		t = nil
	}
	if t == nil || !(t.ns == "" || ns == t.ns || strings.HasPrefix(ns, t.ns+"/")) {
		q.errs(http.StatusForbidden, "permission denied")
		return
	}
	switch rel {
	case "auth/token/lookup-self":
		v.lookupSelf(q, tok, t)
		return
	case "auth/token/renew-self":
		v.renewSelf(q, tok, t)
		return
	}
	_, sub, m := findMount(nsState, rel)
	if m == nil {
		q.errs(http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", rel))
		return
	}
	switch m.kind {
	case KindTransit:
		v.transit(q, m, sub)
	case KindKVv2:
		v.kv(q, m, sub)
	default:
		q.errs(http.StatusNotFound, "unsupported path")
	}
}

// splitNSLocked finds the longest known namespace that prefixes full and is
// at least the header namespace.
func (v *Vault) splitNSLocked(hdrNS, full string) (ns, rel string, ok bool) {
	if _, known := v.namespaces[hdrNS]; !known {
		return "", full, false
	}
	ns = hdrNS
	for cand := range v.namespaces {
		if cand == "" || len(cand) <= len(ns) {
			continue
		}
		if (ns == "" || strings.HasPrefix(cand, ns+"/")) && strings.HasPrefix(full, cand+"/") {
			ns = cand
		}
	}
	if ns == "" {
		return "", full, true
	}
	return ns, strings.TrimPrefix(strings.TrimPrefix(full, ns), "/"), true
}

func findMount(n *vaultNS, rel string) (string, string, *vaultMount) {
	best := ""
	var bm *vaultMount
	for p, m := range n.mounts {
		if (rel == p || strings.HasPrefix(rel, p+"/")) && len(p) > len(best) {
			best, bm = p, m
		}
	}
	if bm == nil {
		return "", "", nil
	}
	return best, strings.TrimPrefix(strings.TrimPrefix(rel, best), "/"), bm
}

// opName is what Calls counts: "transit/datakey", "transit/decrypt",
// "auth/approle/login", ... (the first two path segments after the mount
// for secrets, whole path for auth).
func opName(rel string) string {
	parts := strings.Split(rel, "/")
	if parts[0] == "auth" || len(parts) < 2 {
		return rel
	}
	return parts[0] + "/" + parts[1]
}

func (v *Vault) login(q *vaultReq, m *vaultMount) {
	if q.method != http.MethodPost && q.method != http.MethodPut {
		q.errs(http.StatusMethodNotAllowed, "unsupported operation")
		return
	}
	meta := map[string]string{}
	switch m.kind {
	case KindAppRole:
		roleID, secretID := q.str("role_id"), q.str("secret_id")
		if roleID == "" {
			q.errs(http.StatusBadRequest, "missing role_id")
			return
		}
		want, ok := m.roles[roleID]
		if !ok || want != secretID {
			q.errs(http.StatusBadRequest, "invalid role or secret ID")
			return
		}
		meta["role_name"] = roleID
	case KindKubernetes:
		role, jwt := q.str("role"), q.str("jwt")
		if role == "" {
			q.errs(http.StatusBadRequest, "missing role")
			return
		}
		if jwt == "" {
			q.errs(http.StatusBadRequest, "missing jwt")
			return
		}
		want, ok := m.roles[role]
		if !ok {
			q.errs(http.StatusBadRequest, fmt.Sprintf("invalid role name %q", role))
			return
		}
		if want != jwt {
			q.errs(http.StatusForbidden, "permission denied")
			return
		}
		meta["role"] = role
	}
	tok := "hvs." + randToken()
	t := newVaultToken(q.ns, []string{"default", "strait"}, meta, m.login)
	v.tokens[tok] = t
	q.ok(nil, authBlock(tok, t, int(m.login.TTL/time.Second)))
}

func authBlock(tok string, t *vaultToken, leaseSeconds int) map[string]any {
	return map[string]any{
		"client_token": tok, "accessor": t.accessor, "policies": t.policies,
		"token_policies": t.policies, "metadata": t.meta,
		"lease_duration": leaseSeconds, "renewable": t.renewable, "entity_id": newUUID(),
		"token_type": "service", "orphan": true,
	}
}

func seconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// lookupSelf answers GET (or POST) auth/token/lookup-self with the fields of
// Vault's token lookup.
func (v *Vault) lookupSelf(q *vaultReq, tok string, t *vaultToken) {
	ttl := 0
	var expire any
	if !t.expires.IsZero() {
		ttl = seconds(time.Until(t.expires))
		expire = t.expires.UTC().Format(time.RFC3339Nano)
	}
	q.ok(map[string]any{"id": tok, "accessor": t.accessor, "policies": t.policies, "meta": t.meta, "namespace_path": t.ns,
		"creation_time": t.created.Unix(), "creation_ttl": int(t.ttl / time.Second), "explicit_max_ttl": int(t.maxTTL / time.Second),
		"ttl": ttl, "renewable": t.renewable, "expire_time": expire, "issue_time": t.created.UTC().Format(time.RFC3339Nano),
		"num_uses": 0, "orphan": true, "type": "service", "path": "auth/token/create"}, nil)
}

// renewSelf answers PUT/POST auth/token/renew-self: the new TTL is the
// increment (default: the token's creation TTL), capped at the explicit
// max TTL.
func (v *Vault) renewSelf(q *vaultReq, tok string, t *vaultToken) {
	if q.method != http.MethodPost && q.method != http.MethodPut {
		q.errs(http.StatusMethodNotAllowed, "unsupported operation")
		return
	}
	if !t.renewable || t.ttl == 0 {
		q.errs(http.StatusBadRequest, "lease is not renewable")
		return
	}
	inc := t.ttl
	switch x := q.body["increment"].(type) {
	case float64:
		if x > 0 {
			inc = time.Duration(x) * time.Second
		}
	case string:
		if n, err := strconv.Atoi(x); err == nil && n > 0 {
			inc = time.Duration(n) * time.Second
		} else if d, err := time.ParseDuration(x); err == nil && d > 0 {
			inc = d
		} else if x != "" && x != "0" {
			q.errs(http.StatusBadRequest, "error parsing increment")
			return
		}
	}
	now := time.Now()
	exp := now.Add(inc)
	var warnings []string
	if t.maxTTL > 0 {
		if limit := t.created.Add(t.maxTTL); exp.After(limit) {
			warnings = append(warnings, fmt.Sprintf("TTL of %q exceeded the effective max_ttl of %q; TTL value is capped accordingly",
				inc.String(), limit.Sub(now).Truncate(time.Second).String()))
			exp = limit
		}
	}
	t.expires = exp
	q.w.Header().Set("Content-Type", "application/json")
	b, _ := json.Marshal(map[string]any{
		"request_id": q.reqID, "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": nil, "wrap_info": nil, "warnings": warnings, "auth": authBlock(tok, t, int(exp.Sub(now)/time.Second)), "mount_type": "token",
	})
	_, _ = q.w.Write(b)
}

func (v *Vault) transit(q *vaultReq, m *vaultMount, sub string) {
	parts := strings.Split(sub, "/")
	write := q.method == http.MethodPost || q.method == http.MethodPut
	switch {
	case len(parts) == 2 && parts[0] == "keys" && q.method == http.MethodGet:
		k := m.keys[parts[1]]
		if k == nil {
			q.errs(http.StatusNotFound)
			return
		}
		q.ok(k.info(parts[1]), nil)
	case len(parts) == 2 && parts[0] == "keys" && write:
		if typ := q.str("type"); typ != "" && typ != "aes256-gcm96" {
			q.errs(http.StatusBadRequest, fmt.Sprintf("unknown key type: %v", typ))
			return
		}
		if m.keys[parts[1]] == nil {
			m.keys[parts[1]] = newTransitKey()
		}
		q.ok(m.keys[parts[1]].info(parts[1]), nil)
	case len(parts) == 3 && parts[0] == "keys" && parts[2] == "rotate" && write:
		k := m.keys[parts[1]]
		if k == nil {
			q.errs(http.StatusBadRequest, "key not found")
			return
		}
		k.rotate()
		q.ok(k.info(parts[1]), nil)
	case len(parts) == 3 && parts[0] == "keys" && parts[2] == "config" && write:
		k := m.keys[parts[1]]
		if k == nil {
			q.errs(http.StatusBadRequest, "no existing key named "+parts[1]+" could be found")
			return
		}
		if n, ok := q.integer("min_decryption_version"); ok {
			if n > len(k.versions) {
				q.errs(http.StatusBadRequest, "cannot set min decryption version to a value greater than the latest version")
				return
			}
			k.minDecrypt = n
		}
		q.ok(k.info(parts[1]), nil)
	case len(parts) == 3 && parts[0] == "datakey" && write:
		if parts[1] != "plaintext" && parts[1] != "wrapped" {
			q.errs(http.StatusBadRequest, "Invalid path")
			return
		}
		k := m.keys[parts[2]]
		if k == nil {
			q.errs(http.StatusBadRequest, "encryption key not found")
			return
		}
		bits := 256
		if n, ok := q.integer("bits"); ok {
			bits = n
		}
		if bits != 128 && bits != 256 && bits != 512 {
			q.errs(http.StatusBadRequest, "invalid bits given")
			return
		}
		dk := make([]byte, bits/8)
		_, _ = rand.Read(dk)
		data := map[string]any{"ciphertext": k.encrypt(dk), "key_version": len(k.versions)}
		if parts[1] == "plaintext" {
			data["plaintext"] = base64.StdEncoding.EncodeToString(dk)
		}
		q.ok(data, nil)
	case len(parts) == 2 && parts[0] == "encrypt" && write:
		ptb64, ok := q.body["plaintext"].(string)
		if !ok {
			q.errs(http.StatusBadRequest, "missing plaintext to encrypt")
			return
		}
		pt, err := base64.StdEncoding.DecodeString(ptb64)
		if err != nil {
			q.errs(http.StatusBadRequest, "failed to base64-decode plaintext")
			return
		}
		k := m.keys[parts[1]]
		if k == nil { // upsert, as Vault does for callers with "create"
			k = newTransitKey()
			m.keys[parts[1]] = k
		}
		q.ok(map[string]any{"ciphertext": k.encrypt(pt), "key_version": len(k.versions)}, nil)
	case len(parts) == 2 && parts[0] == "decrypt" && write:
		ct := q.str("ciphertext")
		if ct == "" {
			q.errs(http.StatusBadRequest, "missing ciphertext to decrypt")
			return
		}
		k := m.keys[parts[1]]
		if k == nil {
			q.errs(http.StatusBadRequest, "encryption key not found")
			return
		}
		pt, msg := k.decrypt(ct)
		if msg != "" {
			q.errs(http.StatusBadRequest, msg)
			return
		}
		q.ok(map[string]any{"plaintext": base64.StdEncoding.EncodeToString(pt)}, nil)
	default:
		q.errs(http.StatusNotFound, "1 error occurred:\n\t* unsupported path\n\n")
	}
}

func (v *Vault) kv(q *vaultReq, m *vaultMount, sub string) {
	path, isData := strings.CutPrefix(sub, "data/")
	if !isData || path == "" {
		q.errs(http.StatusNotFound, "1 error occurred:\n\t* unsupported path\n\n")
		return
	}
	meta := func(ver int, c time.Time) map[string]any {
		return map[string]any{"created_time": c.UTC().Format(time.RFC3339Nano), "custom_metadata": nil,
			"deletion_time": "", "destroyed": false, "version": ver}
	}
	switch q.method {
	case http.MethodGet:
		vers := m.kv[path]
		ver := len(vers)
		if s := q.r.URL.Query().Get("version"); s != "" && s != "0" {
			n, err := strconv.Atoi(s)
			if err != nil {
				q.errs(http.StatusBadRequest, "invalid version")
				return
			}
			ver = n
		}
		if ver < 1 || ver > len(vers) {
			q.errs(http.StatusNotFound)
			return
		}
		kv := vers[ver-1]
		q.ok(map[string]any{"data": kv.data, "metadata": meta(ver, kv.created)}, nil)
	case http.MethodPost, http.MethodPut:
		data, ok := q.body["data"].(map[string]any)
		if !ok {
			q.errs(http.StatusBadRequest, "no data provided")
			return
		}
		m.kv[path] = append(m.kv[path], kvVersion{data: data, created: time.Now()})
		q.ok(meta(len(m.kv[path]), time.Now()), nil)
	default:
		q.errs(http.StatusMethodNotAllowed, "unsupported operation")
	}
}
