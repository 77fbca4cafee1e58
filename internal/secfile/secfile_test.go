package secfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestModes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	if err := os.WriteFile(path, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o640, true}, {0o440, true},
		{0o660, false}, {0o620, false}, {0o604, false}, {0o644, false}, {0o602, false}, {0o601, false}, {0o777, false},
	} {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		b, err := Read(path, 64)
		if tc.ok && (err != nil || string(b) != "s3cret") {
			t.Errorf("mode %04o: %q, %v; want it read", tc.mode, b, err)
		}
		if !tc.ok && !errors.Is(err, ErrInsecure) {
			t.Errorf("mode %04o: %v; want ErrInsecure", tc.mode, err)
		}
	}
	os.Chmod(path, 0o600)
	if _, err := Read(path, 3); err == nil {
		t.Error("a file over the limit was read")
	}
	if _, err := Read(dir, 64); err == nil {
		t.Error("a directory was read as a secret file")
	}
}
