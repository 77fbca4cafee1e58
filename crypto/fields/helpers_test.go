package fields

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
)

// gcmFuncs returns a SealFunc/OpenFunc pair doing AES-256-GCM with a fixed
// key, a random nonce (prepended) and the path as additional data: the same
// binding the envelope engine provides.
func gcmFuncs(tb testing.TB) (SealFunc, OpenFunc) {
	tb.Helper()
	key := bytes.Repeat([]byte{0x42}, 32)
	blk, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		tb.Fatal(err)
	}
	seal := func(path string, pt []byte) ([]byte, error) {
		out := make([]byte, 12, 12+len(pt)+16)
		rand.Read(out)
		return aead.Seal(out, out[:12], pt, []byte(path)), nil
	}
	open := func(path string, ct []byte) ([]byte, error) {
		if len(ct) < 12+16 {
			return nil, errors.New("short ciphertext")
		}
		return aead.Open(nil, ct[:12], ct[12:], []byte(path))
	}
	return seal, open
}

// recorder wraps a SealFunc and records the paths it is called with.
type recorder struct {
	mu    sync.Mutex
	paths []string
}

func (r *recorder) wrap(fn SealFunc) SealFunc {
	return func(path string, pt []byte) ([]byte, error) {
		r.mu.Lock()
		r.paths = append(r.paths, path)
		r.mu.Unlock()
		return fn(path, pt)
	}
}

// identity "seal" for fuzzing: a reversible transformation that changes
// lengths (prefix with path length byte and reverse).
func fakeSeal(path string, pt []byte) ([]byte, error) {
	out := make([]byte, 0, len(pt)+2)
	out = append(out, 0xEE, byte(len(path)))
	for i := len(pt) - 1; i >= 0; i-- {
		out = append(out, pt[i])
	}
	return out, nil
}

func fakeOpen(path string, ct []byte) ([]byte, error) {
	if len(ct) < 2 || ct[0] != 0xEE || ct[1] != byte(len(path)) {
		return nil, errors.New("fake: bad ciphertext")
	}
	out := make([]byte, 0, len(ct)-2)
	for i := len(ct) - 1; i >= 2; i-- {
		out = append(out, ct[i])
	}
	return out, nil
}
