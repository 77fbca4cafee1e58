// Package local is the embedded key-management provider: key-encryption keys
// (KEKs) live in a keyring file on the proxy's disk, each with numbered
// versions. Data keys are wrapped with AES-256-GCM under the current version of
// a KEK; the wrapped form names the version, so records written before a
// rotation keep decrypting as long as the old version stays in the file.
//
// The keyring file is JSON, must be readable by its owner only (mode 0600 or
// stricter) and is managed with Generate, Rotate and List (the CLI's
// `strait keys generate|rotate|list`).
package local

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/internal/secfile"
)

// Name is the provider kind as configuration names it.
const Name = "local"

// FileFormat is the value of the keyring file's "format" field.
const FileFormat = "strait-keyring/1"

// Wrapped-DEK layout (see docs/encryption.md, "local wrapped DEK"):
//
//	format(1)=0x01 | uvarint(version) | nonce(12) | AES-256-GCM(DEK) (32) | tag(16)
//
// AAD = format byte | uvarint(version) | key id bytes.
const (
	wrapFormatV1 = 0x01
	nonceSize    = 12
	dekSize      = 32
	tagSize      = 16
	// WrappedSize is the size of a wrapped DEK whose KEK version is below 128
	// (one uvarint byte); each further 7 bits of version add one byte.
	WrappedSize = 1 + 1 + nonceSize + dekSize + tagSize
)

// MaxKeyIDLen bounds key ids (the envelope stores the id with a one-byte length).
const MaxKeyIDLen = 255

// reloadEvery bounds how often a Decrypt or GenerateDataKey miss re-reads the file.
const reloadEvery = time.Second

// ErrKeyExists is returned by Generate when the key id is already in the file.
var ErrKeyExists = errors.New("local keyring: key already exists")

// ErrInsecurePermissions is returned (wrapped) by Load and the file functions
// when the keyring file grants any access to group or others.
var ErrInsecurePermissions = secfile.ErrInsecure

// KEK is one key-encryption key with its versions (each 32 bytes, AES-256).
type KEK struct {
	ID       string
	Current  uint32
	Versions map[uint32][]byte
}

// KeyInfo describes a key without its material (what `strait keys list` prints).
type KeyInfo struct {
	ID       string        `json:"id"`
	Current  uint32        `json:"current"`
	Versions []VersionInfo `json:"versions"`
}

// VersionInfo describes one version of a key.
type VersionInfo struct {
	Version uint32    `json:"version"`
	Created time.Time `json:"created"`
}

// file is the on-disk form.
type file struct {
	Format string    `json:"format"`
	Keys   []fileKey `json:"keys"`
}

type fileKey struct {
	ID       string        `json:"id"`
	Current  uint32        `json:"current"`
	Versions []fileVersion `json:"versions"`
}

type fileVersion struct {
	Version uint32    `json:"version"`
	Created time.Time `json:"created"`
	Key     string    `json:"key"` // base64 (standard, padded) of 32 bytes
}

type kek struct {
	current  uint32
	versions map[uint32]cipher.AEAD
}

// Provider implements kms.Provider over a keyring. It is safe for concurrent use.
type Provider struct {
	path string // "" for keyrings built with New

	mu         sync.RWMutex
	keys       map[string]*kek
	lastReload time.Time
	loaded     os.FileInfo // the file as last read, to notice a rotation
}

var _ kms.Provider = (*Provider)(nil)

// New builds a provider from in-memory keys (tests, embedding).
func New(keks ...KEK) (*Provider, error) {
	keys := make(map[string]*kek, len(keks))
	for _, k := range keks {
		if _, dup := keys[k.ID]; dup {
			return nil, fmt.Errorf("local keyring: duplicate key id %q", k.ID)
		}
		built, err := buildKEK(k.ID, k.Current, k.Versions)
		if err != nil {
			return nil, err
		}
		keys[k.ID] = built
	}
	return &Provider{keys: keys}, nil
}

// Load reads the keyring file at path. It refuses a file whose mode grants any
// access to group or others.
func Load(path string) (*Provider, error) {
	fi, _ := os.Stat(path)
	keys, err := loadKeys(path)
	if err != nil {
		return nil, err
	}
	return &Provider{path: path, keys: keys, lastReload: time.Now(), loaded: fi}, nil
}

// Reload re-reads the keyring file (after `strait keys rotate`, on SIGHUP).
// On error the provider keeps its previous keys.
func (p *Provider) Reload() error {
	if p.path == "" {
		return nil
	}
	fi, _ := os.Stat(p.path)
	keys, err := loadKeys(p.path)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastReload = time.Now()
	if err != nil {
		return err
	}
	p.keys, p.loaded = keys, fi
	return nil
}

// reloadIfChanged re-reads the file when it was replaced or modified since it
// was read. GenerateDataKey calls it (once per DEK, so at most a few times an
// hour per key id): a rotation takes effect at the next data key without a
// restart.
func (p *Provider) reloadIfChanged() {
	if p.path == "" {
		return
	}
	fi, err := os.Stat(p.path)
	if err != nil {
		return
	}
	p.mu.RLock()
	old := p.loaded
	p.mu.RUnlock()
	if old != nil && os.SameFile(old, fi) && old.ModTime().Equal(fi.ModTime()) && old.Size() == fi.Size() {
		return
	}
	_ = p.Reload() // on error the old keys stay; Load-time checks apply (permissions)
}

// Name returns "local".
func (p *Provider) Name() string { return Name }

// GenerateDataKey returns a fresh random DEK wrapped under the current version
// of keyID.
func (p *Provider) GenerateDataKey(ctx context.Context, keyID string) (kms.DataKey, error) {
	if err := ctx.Err(); err != nil {
		return kms.DataKey{}, fmt.Errorf("local: %w: %w", kms.ErrUnavailable, err)
	}
	p.reloadIfChanged()
	k := p.lookup(keyID, 0)
	if k == nil {
		return kms.DataKey{}, fmt.Errorf("local: key %q: %w", keyID, kms.ErrKeyNotFound)
	}
	dek := make([]byte, dekSize)
	if _, err := rand.Read(dek); err != nil {
		return kms.DataKey{}, fmt.Errorf("local: random: %w", err)
	}
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return kms.DataKey{}, fmt.Errorf("local: random: %w", err)
	}
	wrapped := wrap(k.versions[k.current], keyID, k.current, nonce, dek)
	return kms.DataKey{Plaintext: dek, Wrapped: wrapped}, nil
}

// wrap seals dek under aead (version v of keyID) with the given nonce.
func wrap(aead cipher.AEAD, keyID string, v uint32, nonce [nonceSize]byte, dek []byte) []byte {
	out := make([]byte, 0, 1+binary.MaxVarintLen32+nonceSize+len(dek)+tagSize)
	out = append(out, wrapFormatV1)
	out = binary.AppendUvarint(out, uint64(v))
	hdr := len(out)
	out = append(out, nonce[:]...)
	aad := make([]byte, 0, hdr+len(keyID))
	aad = append(append(aad, out[:hdr]...), keyID...)
	return aead.Seal(out, nonce[:], dek, aad)
}

// Decrypt unwraps a DEK produced by GenerateDataKey for keyID, with whichever
// version of the KEK the wrapped form names.
func (p *Provider) Decrypt(ctx context.Context, keyID string, wrapped []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: %w: %w", kms.ErrUnavailable, err)
	}
	v, hdr, err := parseWrapped(wrapped)
	if err != nil {
		return nil, fmt.Errorf("local: key %q: %w: %v", keyID, kms.ErrInvalidCiphertext, err)
	}
	k := p.lookup(keyID, v)
	if k == nil {
		return nil, fmt.Errorf("local: key %q: %w", keyID, kms.ErrKeyNotFound)
	}
	aead, ok := k.versions[v]
	if !ok {
		return nil, fmt.Errorf("local: key %q version %d: %w", keyID, v, kms.ErrKeyNotFound)
	}
	aad := make([]byte, 0, hdr+len(keyID))
	aad = append(append(aad, wrapped[:hdr]...), keyID...)
	dek, err := aead.Open(nil, wrapped[hdr:hdr+nonceSize], wrapped[hdr+nonceSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("local: key %q version %d: %w: authentication failed", keyID, v, kms.ErrInvalidCiphertext)
	}
	return dek, nil
}

// parseWrapped returns the KEK version and the length of the header
// (format byte + version uvarint) that precedes the nonce.
func parseWrapped(w []byte) (version uint32, hdr int, err error) {
	if len(w) == 0 || w[0] != wrapFormatV1 {
		return 0, 0, errors.New("unknown wrapped-key format")
	}
	v, n := binary.Uvarint(w[1:])
	if n <= 0 || v == 0 || v > 1<<32-1 {
		return 0, 0, errors.New("bad version")
	}
	hdr = 1 + n
	if len(w) != hdr+nonceSize+dekSize+tagSize {
		return 0, 0, fmt.Errorf("wrapped key is %d bytes, want %d", len(w), hdr+nonceSize+dekSize+tagSize)
	}
	return uint32(v), hdr, nil
}

// lookup returns the KEK, re-reading the file (rate-limited) when the key or
// the wanted version (0: any) is unknown, so that a rotation done by another
// process is picked up without a restart.
func (p *Provider) lookup(keyID string, version uint32) *kek {
	p.mu.RLock()
	k := p.keys[keyID]
	stale := p.path != "" && time.Since(p.lastReload) >= reloadEvery
	p.mu.RUnlock()
	if k != nil && (version == 0 || k.versions[version] != nil) {
		return k
	}
	if !stale {
		return k
	}
	_ = p.Reload() // a broken file keeps the old keys; the caller reports not-found
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.keys[keyID]
}

func buildKEK(id string, current uint32, versions map[uint32][]byte) (*kek, error) {
	if err := validKeyID(id); err != nil {
		return nil, err
	}
	k := &kek{current: current, versions: make(map[uint32]cipher.AEAD, len(versions))}
	for v, material := range versions {
		if v == 0 {
			return nil, fmt.Errorf("local keyring: key %q: version 0 is not allowed", id)
		}
		if len(material) != 32 {
			return nil, fmt.Errorf("local keyring: key %q version %d: key is %d bytes, want 32 (AES-256)", id, v, len(material))
		}
		block, err := aes.NewCipher(material)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		k.versions[v] = aead
	}
	if _, ok := k.versions[current]; !ok {
		return nil, fmt.Errorf("local keyring: key %q: current version %d has no key material", id, current)
	}
	return k, nil
}

func validKeyID(id string) error {
	if id == "" || len(id) > MaxKeyIDLen {
		return fmt.Errorf("local keyring: key id %q must be 1 to %d bytes", id, MaxKeyIDLen)
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '/' || c == ':'
		if !ok {
			return fmt.Errorf("local keyring: key id %q: only letters, digits and -_./: are allowed", id)
		}
	}
	return nil
}

// checkPerms refuses files that are not regular or that group/others can access.
func checkPerms(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("local keyring: %w", err)
	}
	if err := secfile.Check(path, fi); err != nil {
		return fmt.Errorf("local keyring: %w", err)
	}
	return nil
}

func readFile(path string) (*file, error) {
	if err := checkPerms(path); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("local keyring: %w", err)
	}
	var f file
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("local keyring %s: %w", path, err)
	}
	if f.Format != FileFormat {
		return nil, fmt.Errorf("local keyring %s: format %q, want %q", path, f.Format, FileFormat)
	}
	return &f, nil
}

func loadKeys(path string) (map[string]*kek, error) {
	f, err := readFile(path)
	if err != nil {
		return nil, err
	}
	keys := make(map[string]*kek, len(f.Keys))
	for _, fk := range f.Keys {
		if _, dup := keys[fk.ID]; dup {
			return nil, fmt.Errorf("local keyring %s: duplicate key id %q", path, fk.ID)
		}
		versions := make(map[uint32][]byte, len(fk.Versions))
		for _, fv := range fk.Versions {
			if _, dup := versions[fv.Version]; dup {
				return nil, fmt.Errorf("local keyring %s: key %q: duplicate version %d", path, fk.ID, fv.Version)
			}
			material, err := base64.StdEncoding.DecodeString(fv.Key)
			if err != nil {
				return nil, fmt.Errorf("local keyring %s: key %q version %d: %w", path, fk.ID, fv.Version, err)
			}
			versions[fv.Version] = material
		}
		k, err := buildKEK(fk.ID, fk.Current, versions)
		if err != nil {
			return nil, fmt.Errorf("%w (in %s)", err, path)
		}
		keys[fk.ID] = k
	}
	return keys, nil
}

// writeFile replaces path atomically with f, mode 0600.
func writeFile(path string, f *file) error {
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	raw = append(raw, '\n')
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("local keyring: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("local keyring: %w", err)
	}
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return fmt.Errorf("local keyring: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("local keyring: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("local keyring: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("local keyring: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func newVersion(v uint32) (fileVersion, error) {
	material := make([]byte, 32)
	if _, err := rand.Read(material); err != nil {
		return fileVersion{}, err
	}
	return fileVersion{Version: v, Created: time.Now().UTC().Truncate(time.Second), Key: base64.StdEncoding.EncodeToString(material)}, nil
}

// Generate adds a new key (version 1) to the keyring at path, creating the file
// with mode 0600 if it does not exist. It fails with ErrKeyExists if the id is
// already present.
func Generate(path, keyID string) error {
	if err := validKeyID(keyID); err != nil {
		return err
	}
	f := &file{Format: FileFormat}
	switch _, err := os.Stat(path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("local keyring: %w", err)
	default:
		if f, err = readFile(path); err != nil {
			return err
		}
	}
	for _, k := range f.Keys {
		if k.ID == keyID {
			return fmt.Errorf("%w: %q in %s", ErrKeyExists, keyID, path)
		}
	}
	v, err := newVersion(1)
	if err != nil {
		return err
	}
	f.Keys = append(f.Keys, fileKey{ID: keyID, Current: 1, Versions: []fileVersion{v}})
	return writeFile(path, f)
}

// Rotate adds a new version to keyID and makes it current; older versions stay
// in the file so existing records keep decrypting. It returns the new version.
func Rotate(path, keyID string) (uint32, error) {
	f, err := readFile(path)
	if err != nil {
		return 0, err
	}
	for i := range f.Keys {
		k := &f.Keys[i]
		if k.ID != keyID {
			continue
		}
		var last uint32
		for _, v := range k.Versions {
			last = max(last, v.Version)
		}
		if last == 1<<32-1 {
			return 0, fmt.Errorf("local keyring %s: key %q: no versions left", path, keyID)
		}
		nv, err := newVersion(last + 1)
		if err != nil {
			return 0, err
		}
		k.Versions = append(k.Versions, nv)
		k.Current = nv.Version
		if err := writeFile(path, f); err != nil {
			return 0, err
		}
		return nv.Version, nil
	}
	return 0, fmt.Errorf("local keyring %s: key %q: %w", path, keyID, kms.ErrKeyNotFound)
}

// List describes the keys in the file, sorted by id; no key material.
func List(path string) ([]KeyInfo, error) {
	f, err := readFile(path)
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, 0, len(f.Keys))
	for _, k := range f.Keys {
		info := KeyInfo{ID: k.ID, Current: k.Current}
		for _, v := range k.Versions {
			info.Versions = append(info.Versions, VersionInfo{Version: v.Version, Created: v.Created})
		}
		sort.Slice(info.Versions, func(i, j int) bool { return info.Versions[i].Version < info.Versions[j].Version })
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
