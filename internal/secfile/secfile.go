// Package secfile is the one rule for files that hold secrets (keyrings,
// keytabs, tokens, PINs, password hashes): a regular file that others cannot
// access at all and its group cannot write. Group read is allowed because a
// Kubernetes Secret volume read by a non-root container through the pod's
// fsGroup is mode 0440; 0600 and 0400 are the strict choices elsewhere.
package secfile

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrInsecure is returned (wrapped) for a file whose mode breaks the rule.
var ErrInsecure = errors.New("insecure permissions on a secret file")

// Forbidden are the permission bits a secret file must not have.
const Forbidden os.FileMode = 0o027

// Check applies the rule to fi, the file at path.
func Check(path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file (mode %s)", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&Forbidden != 0 {
		return fmt.Errorf("%w: %s has mode %04o: others must have no access and the group no write (chmod 600 %s, or 0440 for a Kubernetes Secret read through fsGroup)", ErrInsecure, path, perm, path)
	}
	return nil
}

// Read checks path and returns at most limit bytes of it; a longer file is
// an error (a secret file is small; a huge one is a mistake).
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat() // the file opened, not a path that may have changed since
	if err != nil {
		return nil, err
	}
	if err := Check(path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes: not a secret file", path, limit)
	}
	return b, nil
}
