//go:build cgo

package pkcs11

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/strait-proxy/strait/crypto/kms"
)

// module is a loaded and initialized PKCS#11 library, shared by all
// providers of the process that use the same path (C_Initialize is
// per process).
type module struct {
	path string
	ctx  *p11.Ctx
	refs int
}

var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

func openModule(path string) (*module, error) {
	modules.Lock()
	defer modules.Unlock()
	if m := modules.m[path]; m != nil {
		m.refs++
		return m, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("pkcs11: module %s: %w", path, err)
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11: cannot load module %s", path)
	}
	if err := ctx.Initialize(); err != nil && !isCKR(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, fmt.Errorf("pkcs11: C_Initialize %s: %w", path, err)
	}
	m := &module{path: path, ctx: ctx, refs: 1}
	modules.m[path] = m
	return m, nil
}

func (m *module) release() {
	modules.Lock()
	defer modules.Unlock()
	m.refs--
	if m.refs == 0 {
		delete(modules.m, m.path)
		_ = m.ctx.Finalize()
		m.ctx.Destroy()
	}
}

func isCKR(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}

// Provider implements kms.Provider on a PKCS#11 token. It is safe for
// concurrent use; Close it when done.
type Provider struct {
	cfg  Config
	mod  *module
	ctx  *p11.Ctx
	slot uint
	pin  string
	mech byte

	pool   chan p11.SessionHandle // 0 = a slot whose session must be (re)opened
	opened int                    // sessions put in the pool by New

	mu      sync.Mutex
	handles map[string]p11.ObjectHandle // label + "\x00" + version → KEK object
	closed  bool

	createMu sync.Mutex // serializes EnsureKey/RotateKey in this process
}

var _ kms.Provider = (*Provider)(nil)

// New loads the module, finds the token by label, opens the session pool
// and logs in. Wrong PIN: an error wrapping kms.ErrAccessDenied.
func New(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pin, err := cfg.pin()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", kms.ErrAccessDenied, err)
	}
	mod, err := openModule(cfg.ModulePath)
	if err != nil {
		return nil, err
	}
	p := &Provider{cfg: cfg, mod: mod, ctx: mod.ctx, pin: pin, handles: map[string]p11.ObjectHandle{}}
	ok := false
	defer func() {
		if !ok {
			p.Close()
		}
	}()
	if p.slot, err = findSlot(p.ctx, cfg.TokenLabel); err != nil {
		return nil, err
	}
	if p.mech, err = chooseMechanism(p.ctx, p.slot, cfg.Mechanism); err != nil {
		return nil, err
	}
	p.pool = make(chan p11.SessionHandle, cfg.Sessions)
	for i := 0; i < cfg.Sessions; i++ {
		s, err := p.openSession()
		if err != nil {
			return nil, err
		}
		p.pool <- s
		p.opened++
	}
	ok = true
	return p, nil
}

func findSlot(ctx *p11.Ctx, label string) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: C_GetSlotList: %w", err)
	}
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if strings.TrimRight(ti.Label, " \x00") == label {
			return s, nil
		}
	}
	return 0, fmt.Errorf("pkcs11: no token labelled %q (%d slots with a token)", label, len(slots))
}

// chooseMechanism checks what the token can do.
func chooseMechanism(ctx *p11.Ctx, slot uint, want string) (byte, error) {
	list, err := ctx.GetMechanismList(slot)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: C_GetMechanismList: %w", err)
	}
	has := func(m uint, flags uint) bool {
		for _, x := range list {
			if x.Mechanism == m {
				info, err := ctx.GetMechanismInfo(slot, []*p11.Mechanism{p11.NewMechanism(m, nil)})
				return err == nil && info.Flags&flags == flags
			}
		}
		return false
	}
	kwp := has(p11.CKM_AES_KEY_WRAP_PAD, p11.CKF_WRAP|p11.CKF_UNWRAP)
	kw := has(p11.CKM_AES_KEY_WRAP, p11.CKF_WRAP|p11.CKF_UNWRAP)
	gcm := has(p11.CKM_AES_GCM, p11.CKF_ENCRYPT|p11.CKF_DECRYPT)
	switch {
	case want == MechAESKWP && kwp, want == MechAuto && kwp:
		return mechKWP, nil
	case want == MechAESKeyWrap && kw, want == MechAuto && kw:
		return mechKW, nil
	case want == MechAESGCM && gcm, want == MechAuto && gcm:
		return mechGCM, nil
	}
	return 0, fmt.Errorf("pkcs11: token does not support mechanism %s for wrapping (key wrap pad %v, key wrap %v, gcm %v)", want, kwp, kw, gcm)
}

func (p *Provider) openSession() (p11.SessionHandle, error) {
	s, err := p.ctx.OpenSession(p.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: C_OpenSession: %w: %w", kms.ErrUnavailable, err)
	}
	if err := p.ctx.Login(s, p11.CKU_USER, p.pin); err != nil && !isCKR(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		_ = p.ctx.CloseSession(s)
		return 0, fmt.Errorf("pkcs11: C_Login: %w: %w", classify(err, kms.ErrAccessDenied), err)
	}
	return s, nil
}

// Close closes the sessions and, with the last provider of the module,
// finalizes it. Calls in flight finish first (up to Timeout); later calls
// fail with ErrUnavailable.
func (p *Provider) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	if p.pool != nil {
		deadline := time.After(time.Duration(p.cfg.Timeout))
	drain:
		for i := 0; i < p.opened; i++ {
			select {
			case s := <-p.pool:
				if s != 0 {
					_ = p.ctx.CloseSession(s)
				}
			case <-deadline:
				break drain
			}
		}
		// Wake callers waiting for a session; they see closed and fail.
		for i := 0; i < cap(p.pool); i++ {
			select {
			case p.pool <- 0:
			default:
			}
		}
	}
	p.mod.release()
	return nil
}

// Name returns "pkcs11".
func (p *Provider) Name() string { return Name }

// MechanismName is the mechanism new data keys are wrapped with.
func (p *Provider) MechanismName() string {
	switch p.mech {
	case mechKW:
		return MechAESKeyWrap
	case mechKWP:
		return MechAESKWP
	}
	return MechAESGCM
}

// withSession runs fn on a pooled session. A broken session is replaced; a
// session that lost its login logs in again; fn is retried once then.
func (p *Provider) withSession(ctx context.Context, fn func(s p11.SessionHandle) error) error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return fmt.Errorf("pkcs11: %w: provider closed", kms.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.cfg.Timeout))
	defer cancel()
	var s p11.SessionHandle
	select {
	case s = <-p.pool:
	case <-ctx.Done():
		return fmt.Errorf("pkcs11: %w: waiting for a session: %w", kms.ErrUnavailable, ctx.Err())
	}
	p.mu.Lock()
	closed = p.closed
	p.mu.Unlock()
	if closed {
		p.pool <- s
		return fmt.Errorf("pkcs11: %w: provider closed", kms.ErrUnavailable)
	}
	defer func() {
		select {
		case p.pool <- s:
		default: // pool refilled by Close: this session is not wanted
			if s != 0 {
				_ = p.ctx.CloseSession(s)
			}
		}
	}()
	for attempt := 0; ; attempt++ {
		if s == 0 {
			ns, err := p.openSession()
			if err != nil {
				return err
			}
			s = ns
		}
		err := fn(s)
		if err == nil || attempt > 0 {
			return err
		}
		switch {
		case isCKR(err, p11.CKR_USER_NOT_LOGGED_IN):
			if lerr := p.ctx.Login(s, p11.CKU_USER, p.pin); lerr != nil && !isCKR(lerr, p11.CKR_USER_ALREADY_LOGGED_IN) {
				return err
			}
		case isCKR(err, p11.CKR_SESSION_HANDLE_INVALID), isCKR(err, p11.CKR_SESSION_CLOSED),
			isCKR(err, p11.CKR_DEVICE_REMOVED), isCKR(err, p11.CKR_TOKEN_NOT_PRESENT):
			_ = p.ctx.CloseSession(s)
			s = 0
			p.forgetHandles()
		case isCKR(err, p11.CKR_OBJECT_HANDLE_INVALID), isCKR(err, p11.CKR_KEY_HANDLE_INVALID):
			p.forgetHandles()
		default:
			return err
		}
	}
}

func (p *Provider) forgetHandles() {
	p.mu.Lock()
	p.handles = map[string]p11.ObjectHandle{}
	p.mu.Unlock()
}

func (p *Provider) label(keyID string) (string, error) {
	if keyID == "" {
		keyID = p.cfg.KeyLabel
	}
	if keyID == "" {
		return "", fmt.Errorf("pkcs11: %w: no key id given and no default key_label configured", kms.ErrKeyNotFound)
	}
	return keyID, nil
}

func versionID(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

// versions lists the KEK objects of label: version → handle.
func (p *Provider) versions(s p11.SessionHandle, label string) (map[uint32]p11.ObjectHandle, error) {
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_TOKEN, true),
	}
	if err := p.ctx.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	var all []p11.ObjectHandle
	for {
		hs, _, err := p.ctx.FindObjects(s, 32)
		if err != nil {
			_ = p.ctx.FindObjectsFinal(s)
			return nil, err
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	if err := p.ctx.FindObjectsFinal(s); err != nil {
		return nil, err
	}
	out := map[uint32]p11.ObjectHandle{}
	for _, h := range all {
		attrs, err := p.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, nil)})
		if err != nil || len(attrs) != 1 || len(attrs[0].Value) != 4 {
			continue // not a Strait KEK version
		}
		out[binary.BigEndian.Uint32(attrs[0].Value)] = h
	}
	return out, nil
}

func latest(vs map[uint32]p11.ObjectHandle) (uint32, p11.ObjectHandle) {
	var best uint32
	var h p11.ObjectHandle
	for v, oh := range vs {
		if v >= best {
			best, h = v, oh
		}
	}
	return best, h
}

// GenerateDataKey wraps a fresh 32-byte DEK with the latest KEK version
// on the token.
func (p *Provider) GenerateDataKey(ctx context.Context, keyID string) (kms.DataKey, error) {
	label, err := p.label(keyID)
	if err != nil {
		return kms.DataKey{}, err
	}
	var dk kms.DataKey
	err = p.withSession(ctx, func(s p11.SessionHandle) error {
		vs, err := p.versions(s, label)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return errNoKey
		}
		ver, kek := latest(vs)
		header := binary.AppendUvarint([]byte{formatV1, p.mech}, uint64(ver))
		var plain, blob []byte
		if p.mech == mechGCM {
			plain, blob, err = p.gcmWrap(s, kek, header, label)
		} else {
			plain, blob, err = p.tokenWrap(s, kek)
		}
		if err != nil {
			return err
		}
		dk = kms.DataKey{Plaintext: plain, Wrapped: append(header, blob...)}
		return nil
	})
	if err != nil {
		if errors.Is(err, errNoKey) {
			return kms.DataKey{}, fmt.Errorf("pkcs11: %w: no KEK labelled %q on token %q", kms.ErrKeyNotFound, label, p.cfg.TokenLabel)
		}
		return kms.DataKey{}, fmt.Errorf("pkcs11: wrap with %q: %w: %w", label, classify(err, kms.ErrKeyNotFound), err)
	}
	return dk, nil
}

var errNoKey = errors.New("no such key")

func (p *Provider) wrapMechanism(m byte) *p11.Mechanism {
	if m == mechKWP {
		return p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)
	}
	return p11.NewMechanism(p11.CKM_AES_KEY_WRAP, nil)
}

// tokenWrap generates the DEK on the token as an extractable session
// object, wraps it with the KEK (C_WrapKey), reads its value and destroys it.
func (p *Provider) tokenWrap(s p11.SessionHandle, kek p11.ObjectHandle) (plain, blob []byte, err error) {
	dek, err := p.ctx.GenerateKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, dekTemplate(true))
	if err != nil {
		return nil, nil, err
	}
	defer p.ctx.DestroyObject(s, dek)
	blob, err = p.ctx.WrapKey(s, []*p11.Mechanism{p.wrapMechanism(p.mech)}, kek, dek)
	if err != nil {
		return nil, nil, err
	}
	plain, err = p.keyValue(s, dek)
	if err != nil {
		return nil, nil, err
	}
	if len(blob) != kwBlobLen {
		return nil, nil, fmt.Errorf("token returned a %d-byte wrapped key, want %d", len(blob), kwBlobLen)
	}
	return plain, blob, nil
}

func dekTemplate(generate bool) []*p11.Attribute {
	t := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, false),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
	}
	if generate {
		t = append(t, p11.NewAttribute(p11.CKA_VALUE_LEN, 32))
	}
	return t
}

func (p *Provider) keyValue(s p11.SessionHandle, h p11.ObjectHandle) ([]byte, error) {
	attrs, err := p.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
	if err != nil {
		return nil, err
	}
	if len(attrs) != 1 || len(attrs[0].Value) != 32 {
		return nil, p11.Error(p11.CKR_WRAPPED_KEY_INVALID)
	}
	return attrs[0].Value, nil
}

func gcmAAD(header []byte, label string) []byte {
	return append(append([]byte{}, header...), label...)
}

// gcmWrap encrypts a crypto/rand DEK with the KEK on the token (AES-GCM).
func (p *Provider) gcmWrap(s p11.SessionHandle, kek p11.ObjectHandle, header []byte, label string) (plain, blob []byte, err error) {
	plain = make([]byte, 32)
	iv := make([]byte, 12)
	if _, err := rand.Read(plain); err != nil {
		return nil, nil, err
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, nil, err
	}
	params := p11.NewGCMParams(iv, gcmAAD(header, label), 128)
	defer params.Free()
	if err := p.ctx.EncryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, kek); err != nil {
		return nil, nil, err
	}
	ct, err := p.ctx.Encrypt(s, plain)
	if err != nil {
		return nil, nil, err
	}
	if got := params.IV(); len(got) == 12 {
		iv = got // tokens that generate the IV themselves report it here
	}
	if len(ct) != 48 {
		return nil, nil, fmt.Errorf("token returned %d bytes of AES-GCM output, want 48", len(ct))
	}
	return plain, append(append([]byte{}, iv...), ct...), nil
}

// Decrypt unwraps a DEK with the KEK version recorded in wrapped.
func (p *Provider) Decrypt(ctx context.Context, keyID string, wrapped []byte) ([]byte, error) {
	label, err := p.label(keyID)
	if err != nil {
		return nil, err
	}
	if len(wrapped) < minHeader || wrapped[0] != formatV1 {
		return nil, fmt.Errorf("pkcs11: %w: not a version-1 wrapped key", kms.ErrInvalidCiphertext)
	}
	mech := wrapped[1]
	v64, n := binary.Uvarint(wrapped[2:])
	if n <= 0 || v64 == 0 || v64 > 1<<32-1 || n != len(binary.AppendUvarint(nil, v64)) {
		return nil, fmt.Errorf("pkcs11: %w: bad KEK version", kms.ErrInvalidCiphertext)
	}
	ver := uint32(v64)
	headerLen := 2 + n
	blob := wrapped[headerLen:]
	switch {
	case (mech == mechKW || mech == mechKWP) && len(blob) == kwBlobLen:
	case mech == mechGCM && len(blob) == gcmBlobLen:
	default:
		return nil, fmt.Errorf("pkcs11: %w: mechanism %d with %d-byte blob", kms.ErrInvalidCiphertext, mech, len(blob))
	}
	var plain []byte
	var missing error
	err = p.withSession(ctx, func(s p11.SessionHandle) error {
		kek, err := p.kekVersion(s, label, ver)
		if err != nil {
			return err
		}
		if kek == 0 {
			missing = kms.ErrKeyNotFound
			vs, err := p.versions(s, label)
			if err != nil {
				return err
			}
			if max, _ := latest(vs); ver == 0 || (len(vs) > 0 && ver > max) {
				missing = kms.ErrInvalidCiphertext // a version that never existed
			}
			return errNoKey
		}
		if mech == mechGCM {
			params := p11.NewGCMParams(blob[:12], gcmAAD(wrapped[:headerLen], label), 128)
			defer params.Free()
			if err := p.ctx.DecryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, kek); err != nil {
				return err
			}
			plain, err = p.ctx.Decrypt(s, blob[12:])
			if err != nil {
				return err
			}
			if len(plain) != 32 {
				return p11.Error(p11.CKR_ENCRYPTED_DATA_INVALID)
			}
			return nil
		}
		dek, err := p.ctx.UnwrapKey(s, []*p11.Mechanism{p.wrapMechanism(mech)}, kek, blob, dekTemplate(false))
		if err != nil {
			return err
		}
		defer p.ctx.DestroyObject(s, dek)
		plain, err = p.keyValue(s, dek)
		return err
	})
	if err != nil {
		if errors.Is(err, errNoKey) {
			return nil, fmt.Errorf("pkcs11: %w: no version %d of KEK %q on token %q", missing, ver, label, p.cfg.TokenLabel)
		}
		return nil, fmt.Errorf("pkcs11: unwrap with %q v%d: %w: %w", label, ver, classify(err, kms.ErrInvalidCiphertext), err)
	}
	return plain, nil
}

// kekVersion finds (and caches) the object of one KEK version; 0 if absent.
func (p *Provider) kekVersion(s p11.SessionHandle, label string, ver uint32) (p11.ObjectHandle, error) {
	k := fmt.Sprintf("%s\x00%d", label, ver)
	p.mu.Lock()
	h, ok := p.handles[k]
	p.mu.Unlock()
	if ok {
		return h, nil
	}
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, versionID(ver)),
		p11.NewAttribute(p11.CKA_TOKEN, true),
	}
	if err := p.ctx.FindObjectsInit(s, tmpl); err != nil {
		return 0, err
	}
	hs, _, err := p.ctx.FindObjects(s, 1)
	ferr := p.ctx.FindObjectsFinal(s)
	if err != nil {
		return 0, err
	}
	if ferr != nil {
		return 0, ferr
	}
	if len(hs) == 0 {
		return 0, nil
	}
	p.mu.Lock()
	p.handles[k] = hs[0]
	p.mu.Unlock()
	return hs[0], nil
}

// EnsureKey makes sure KEK label exists on the token, creating version 1
// if it has no version yet, and returns the latest version.
func (p *Provider) EnsureKey(ctx context.Context, label string) (version uint32, created bool, err error) {
	p.createMu.Lock()
	defer p.createMu.Unlock()
	err = p.withSession(ctx, func(s p11.SessionHandle) error {
		vs, err := p.versions(s, label)
		if err != nil {
			return err
		}
		if len(vs) > 0 {
			version, _ = latest(vs)
			return nil
		}
		if err := p.createKEK(s, label, 1); err != nil {
			return err
		}
		version, created = 1, true
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("pkcs11: ensure KEK %q: %w: %w", label, classify(err, kms.ErrUnavailable), err)
	}
	return version, created, nil
}

// RotateKey creates the next version of KEK label (version 1 if it has
// none). New data keys use it; older versions stay for Decrypt.
func (p *Provider) RotateKey(ctx context.Context, label string) (uint32, error) {
	p.createMu.Lock()
	defer p.createMu.Unlock()
	var next uint32
	err := p.withSession(ctx, func(s p11.SessionHandle) error {
		vs, err := p.versions(s, label)
		if err != nil {
			return err
		}
		cur, _ := latest(vs)
		next = cur + 1
		return p.createKEK(s, label, next)
	})
	if err != nil {
		return 0, fmt.Errorf("pkcs11: rotate KEK %q: %w: %w", label, classify(err, kms.ErrUnavailable), err)
	}
	return next, nil
}

// KeyVersions lists the versions of KEK label present on the token.
func (p *Provider) KeyVersions(ctx context.Context, label string) ([]uint32, error) {
	var out []uint32
	err := p.withSession(ctx, func(s p11.SessionHandle) error {
		vs, err := p.versions(s, label)
		for v := range vs {
			out = append(out, v)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: list KEK %q: %w: %w", label, classify(err, kms.ErrUnavailable), err)
	}
	for i := 1; i < len(out); i++ { // tiny insertion sort
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, nil
}

// createKEK generates an AES-256 token object that cannot leave the token.
func (p *Provider) createKEK(s p11.SessionHandle, label string, ver uint32) error {
	gcm := p.mech == mechGCM
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_MODIFIABLE, false),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, versionID(ver)),
		p11.NewAttribute(p11.CKA_WRAP, !gcm),
		p11.NewAttribute(p11.CKA_UNWRAP, !gcm),
		p11.NewAttribute(p11.CKA_ENCRYPT, gcm),
		p11.NewAttribute(p11.CKA_DECRYPT, gcm),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	}
	_, err := p.ctx.GenerateKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, tmpl)
	return err
}

// classify maps a PKCS#11 return value onto a kms sentinel.
func classify(err error, fallback error) error {
	if s, ok := kms.Known(err); ok {
		return s
	}
	var e p11.Error
	if !errors.As(err, &e) {
		return fallback
	}
	switch uint(e) {
	case p11.CKR_PIN_INCORRECT, p11.CKR_PIN_LOCKED, p11.CKR_PIN_EXPIRED, p11.CKR_PIN_INVALID,
		p11.CKR_PIN_LEN_RANGE, p11.CKR_USER_NOT_LOGGED_IN, p11.CKR_USER_PIN_NOT_INITIALIZED,
		p11.CKR_USER_TYPE_INVALID, p11.CKR_KEY_FUNCTION_NOT_PERMITTED, p11.CKR_KEY_NOT_WRAPPABLE,
		p11.CKR_KEY_UNEXTRACTABLE:
		return kms.ErrAccessDenied
	case p11.CKR_WRAPPED_KEY_INVALID, p11.CKR_WRAPPED_KEY_LEN_RANGE, p11.CKR_ENCRYPTED_DATA_INVALID,
		p11.CKR_ENCRYPTED_DATA_LEN_RANGE, p11.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT:
		return kms.ErrInvalidCiphertext
	case p11.CKR_KEY_HANDLE_INVALID, p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_TYPE_INCONSISTENT,
		p11.CKR_KEY_SIZE_RANGE, p11.CKR_WRAPPING_KEY_HANDLE_INVALID, p11.CKR_UNWRAPPING_KEY_HANDLE_INVALID,
		p11.CKR_WRAPPING_KEY_TYPE_INCONSISTENT, p11.CKR_WRAPPING_KEY_SIZE_RANGE:
		return kms.ErrKeyNotFound
	case p11.CKR_DEVICE_ERROR, p11.CKR_DEVICE_MEMORY, p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT,
		p11.CKR_TOKEN_NOT_RECOGNIZED, p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED,
		p11.CKR_SESSION_COUNT, p11.CKR_HOST_MEMORY, p11.CKR_CRYPTOKI_NOT_INITIALIZED,
		p11.CKR_FUNCTION_CANCELED, p11.CKR_OPERATION_ACTIVE, p11.CKR_SLOT_ID_INVALID, p11.CKR_CANT_LOCK,
		p11.CKR_TOKEN_WRITE_PROTECTED:
		return kms.ErrUnavailable
	}
	return fallback
}
