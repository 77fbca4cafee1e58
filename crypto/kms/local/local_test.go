package local

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strait-proxy/strait/crypto/kms"
)

func keyring(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "keyring.json")
}

func TestGenerateCreatesPrivateFile(t *testing.T) {
	path := keyring(t)
	if err := Generate(path, "customers"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("mode %04o, want 0600", perm)
	}
	if err := Generate(path, "payments"); err != nil {
		t.Fatal(err)
	}
	if err := Generate(path, "customers"); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second generate of the same id: %v, want ErrKeyExists", err)
	}
	infos, err := List(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].ID != "customers" || infos[1].ID != "payments" || infos[0].Current != 1 || len(infos[0].Versions) != 1 {
		t.Fatalf("list: %+v", infos)
	}
	// No material leaks into what List returns (it is printed by the CLI).
	raw, _ := os.ReadFile(path)
	var info strings.Builder
	for _, k := range infos {
		info.WriteString(k.ID)
		for _, v := range k.Versions {
			info.WriteString(v.Created.String())
		}
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if i := strings.Index(line, `"key": "`); i >= 0 {
			material := strings.TrimSuffix(strings.TrimSpace(line[i+len(`"key": "`):]), `"`)
			if strings.Contains(info.String(), material) {
				t.Fatal("List output contains key material")
			}
		}
	}
}

// The rule of every secret file (internal/secfile): others no access, the
// group no write; group read is fine (a Kubernetes Secret read via fsGroup).
func TestLoadRefusesGroupOrOtherAccess(t *testing.T) {
	path := keyring(t)
	if err := Generate(path, "k"); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o604, 0o660, 0o644, 0o601, 0o620, 0o602, 0o777} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if !errors.Is(err, ErrInsecurePermissions) {
			t.Fatalf("mode %04o: err %v, want ErrInsecurePermissions", mode, err)
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), modeOctal(mode)) {
			t.Fatalf("mode %04o: error does not name path and mode: %v", mode, err)
		}
		if _, err := Rotate(path, "k"); !errors.Is(err, ErrInsecurePermissions) {
			t.Fatalf("rotate with mode %04o: %v", mode, err)
		}
		if _, err := List(path); !errors.Is(err, ErrInsecurePermissions) {
			t.Fatalf("list with mode %04o: %v", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400, 0o640, 0o440} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path); err != nil {
			t.Fatalf("mode %04o: %v", mode, err)
		}
	}
}

func modeOctal(m os.FileMode) string {
	const digits = "01234567"
	p := uint32(m.Perm())
	return string([]byte{'0', digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}

func TestLoadRejectsBadFiles(t *testing.T) {
	good := base64.StdEncoding.EncodeToString(make([]byte, 32))
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	cases := []struct {
		name, body, want string
	}{
		{"not json", "{", "unexpected EOF"},
		{"wrong format", `{"format":"x","keys":[]}`, "format"},
		{"unknown field", `{"format":"strait-keyring/1","keys":[],"extra":1}`, "unknown field"},
		{"short key", `{"format":"strait-keyring/1","keys":[{"id":"a","current":1,"versions":[{"version":1,"key":"` + short + `"}]}]}`, "want 32"},
		{"bad base64", `{"format":"strait-keyring/1","keys":[{"id":"a","current":1,"versions":[{"version":1,"key":"!!"}]}]}`, "illegal base64"},
		{"current missing", `{"format":"strait-keyring/1","keys":[{"id":"a","current":2,"versions":[{"version":1,"key":"` + good + `"}]}]}`, "current version 2"},
		{"version zero", `{"format":"strait-keyring/1","keys":[{"id":"a","current":0,"versions":[{"version":0,"key":"` + good + `"}]}]}`, "version 0"},
		{"dup id", `{"format":"strait-keyring/1","keys":[{"id":"a","current":1,"versions":[{"version":1,"key":"` + good + `"}]},{"id":"a","current":1,"versions":[{"version":1,"key":"` + good + `"}]}]}`, "duplicate key id"},
		{"dup version", `{"format":"strait-keyring/1","keys":[{"id":"a","current":1,"versions":[{"version":1,"key":"` + good + `"},{"version":1,"key":"` + good + `"}]}]}`, "duplicate version"},
		{"bad id", `{"format":"strait-keyring/1","keys":[{"id":"a b","current":1,"versions":[{"version":1,"key":"` + good + `"}]}]}`, "only letters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := keyring(t)
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want containing %q", err, tc.want)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestRoundTripAndRotation(t *testing.T) {
	ctx := context.Background()
	path := keyring(t)
	if err := Generate(path, "customers"); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "local" {
		t.Fatal(p.Name())
	}
	dk1, err := p.GenerateDataKey(ctx, "customers")
	if err != nil {
		t.Fatal(err)
	}
	if len(dk1.Plaintext) != 32 || len(dk1.Wrapped) != WrappedSize {
		t.Fatalf("sizes: dek %d, wrapped %d (want 32, %d)", len(dk1.Plaintext), len(dk1.Wrapped), WrappedSize)
	}
	if dk1.Wrapped[1] != 1 {
		t.Fatalf("wrapped under version %d, want 1", dk1.Wrapped[1])
	}
	v, err := Rotate(path, "customers")
	if err != nil || v != 2 {
		t.Fatalf("rotate: %d %v", v, err)
	}
	if _, err := Rotate(path, "nope"); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("rotate unknown: %v", err)
	}
	// No explicit Reload: GenerateDataKey notices the replaced file.
	dk2, err := p.GenerateDataKey(ctx, "customers")
	if err != nil {
		t.Fatal(err)
	}
	if dk2.Wrapped[1] != 2 {
		t.Fatalf("after rotation wrapped under version %d, want 2", dk2.Wrapped[1])
	}
	// A fresh provider (another process) decrypts both generations.
	p2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, dk := range []kms.DataKey{dk1, dk2} {
		got, err := p2.Decrypt(ctx, "customers", dk.Wrapped)
		if err != nil {
			t.Fatalf("dk%d: %v", i+1, err)
		}
		if !bytes.Equal(got, dk.Plaintext) {
			t.Fatalf("dk%d: wrong plaintext", i+1)
		}
	}
	infos, err := List(path)
	if err != nil {
		t.Fatal(err)
	}
	if infos[0].Current != 2 || len(infos[0].Versions) != 2 || infos[0].Versions[0].Version != 1 {
		t.Fatalf("list after rotate: %+v", infos)
	}
	// Fresh DEKs every time.
	dk3, _ := p.GenerateDataKey(ctx, "customers")
	if bytes.Equal(dk2.Plaintext, dk3.Plaintext) || bytes.Equal(dk2.Wrapped, dk3.Wrapped) {
		t.Fatal("GenerateDataKey repeated a key")
	}
}

func TestDecryptPicksUpRotationFromAnotherProcess(t *testing.T) {
	ctx := context.Background()
	path := keyring(t)
	if err := Generate(path, "k"); err != nil {
		t.Fatal(err)
	}
	reader, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	reader.lastReload = reader.lastReload.Add(-2 * reloadEvery) // allow an immediate re-read
	if _, err := Rotate(path, "k"); err != nil {
		t.Fatal(err)
	}
	writer, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := writer.GenerateDataKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	got, err := reader.Decrypt(ctx, "k", dk.Wrapped)
	if err != nil {
		t.Fatalf("reader did not pick up version 2: %v", err)
	}
	if !bytes.Equal(got, dk.Plaintext) {
		t.Fatal("wrong plaintext")
	}
}

func TestErrorsAndTamper(t *testing.T) {
	ctx := context.Background()
	kek1 := bytes.Repeat([]byte{1}, 32)
	kek2 := bytes.Repeat([]byte{2}, 32)
	p, err := New(KEK{ID: "a", Current: 1, Versions: map[uint32][]byte{1: kek1}}, KEK{ID: "b", Current: 1, Versions: map[uint32][]byte{1: kek2}})
	if err != nil {
		t.Fatal(err)
	}
	dk, err := p.GenerateDataKey(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.GenerateDataKey(ctx, "missing"); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("generate missing: %v", err)
	}
	cases := []struct {
		name    string
		keyID   string
		wrapped func() []byte
		want    error
	}{
		{"unknown key", "missing", func() []byte { return dk.Wrapped }, kms.ErrKeyNotFound},
		{"other key", "b", func() []byte { return dk.Wrapped }, kms.ErrInvalidCiphertext},
		{"unknown version", "a", func() []byte { w := bytes.Clone(dk.Wrapped); w[1] = 7; return w }, kms.ErrKeyNotFound},
		{"version zero", "a", func() []byte { w := bytes.Clone(dk.Wrapped); w[1] = 0; return w }, kms.ErrInvalidCiphertext},
		{"bad format", "a", func() []byte { w := bytes.Clone(dk.Wrapped); w[0] = 2; return w }, kms.ErrInvalidCiphertext},
		{"truncated", "a", func() []byte { return dk.Wrapped[:len(dk.Wrapped)-1] }, kms.ErrInvalidCiphertext},
		{"extended", "a", func() []byte { return append(bytes.Clone(dk.Wrapped), 0) }, kms.ErrInvalidCiphertext},
		{"empty", "a", func() []byte { return nil }, kms.ErrInvalidCiphertext},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Decrypt(ctx, tc.keyID, tc.wrapped())
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	// Every single-bit flip of every byte is detected.
	for i := range dk.Wrapped {
		for bit := 0; bit < 8; bit++ {
			w := bytes.Clone(dk.Wrapped)
			w[i] ^= 1 << bit
			if _, err := p.Decrypt(ctx, "a", w); !errors.Is(err, kms.ErrInvalidCiphertext) && !errors.Is(err, kms.ErrKeyNotFound) {
				t.Fatalf("flip byte %d bit %d: %v", i, bit, err)
			}
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.Decrypt(cctx, "a", dk.Wrapped); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("cancelled ctx: %v", err)
	}
}

// TestWrapVector pins the wrapped-DEK format with a fixed nonce (the same
// layout docs/encryption.md describes).
func TestWrapVector(t *testing.T) {
	kek := bytes.Repeat([]byte{0x11}, 32)
	dek := bytes.Repeat([]byte{0x22}, 32)
	p, err := New(KEK{ID: "customers", Current: 3, Versions: map[uint32][]byte{3: kek}})
	if err != nil {
		t.Fatal(err)
	}
	var nonce [nonceSize]byte
	copy(nonce[:], bytes.Repeat([]byte{0x33}, nonceSize))
	w := wrap(p.keys["customers"].versions[3], "customers", 3, nonce, dek)
	const want = "0103333333333333333333333333"
	if got := hex.EncodeToString(w[:14]); got != want {
		t.Fatalf("header %s, want %s", got, want)
	}
	if len(w) != WrappedSize {
		t.Fatalf("len %d", len(w))
	}
	got, err := p.Decrypt(context.Background(), "customers", w)
	if err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("decrypt: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	k := bytes.Repeat([]byte{1}, 32)
	bad := []KEK{
		{ID: "", Current: 1, Versions: map[uint32][]byte{1: k}},
		{ID: strings.Repeat("x", 256), Current: 1, Versions: map[uint32][]byte{1: k}},
		{ID: "a", Current: 2, Versions: map[uint32][]byte{1: k}},
		{ID: "a", Current: 1, Versions: map[uint32][]byte{1: k[:16]}},
	}
	for i, kk := range bad {
		if _, err := New(kk); err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
	if _, err := New(KEK{ID: "a", Current: 1, Versions: map[uint32][]byte{1: k}}, KEK{ID: "a", Current: 1, Versions: map[uint32][]byte{1: k}}); err == nil {
		t.Error("duplicate accepted")
	}
}

func BenchmarkGenerateDataKey(b *testing.B) {
	p, _ := New(KEK{ID: "a", Current: 1, Versions: map[uint32][]byte{1: bytes.Repeat([]byte{1}, 32)}})
	ctx := context.Background()
	for b.Loop() {
		if _, err := p.GenerateDataKey(ctx, "a"); err != nil {
			b.Fatal(err)
		}
	}
}
