// Package straitbin is how tests that run the real strait binary get it,
// and how any test says a prerequisite is missing. The test suites under
// test/, examples/ and charts/ used to carry a copy each.
package straitbin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI=true, where every
// prerequisite must be installed (scripts/install-test-deps.sh).
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing reports a missing prerequisite: a loud skip locally, a failure
// under CI=true.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("MISSING PREREQUISITE (fatal because CI=true): %s; scripts/install-test-deps.sh installs it", msg)
	}
	t.Skipf("!!! SKIPPED: MISSING PREREQUISITE: %s; run scripts/install-test-deps.sh !!!", msg)
}

var (
	once  sync.Once
	path  string
	built string // the temporary directory of a binary built here
	err   error
)

// Path returns $STRAIT_BIN (make test sets it) or ./cmd/strait built once
// for this test binary into a temporary directory; call Cleanup from
// TestMain to remove it.
func Path() (string, error) {
	once.Do(func() { path, built, err = find() })
	return path, err
}

// Get is Path for a test: a binary that cannot be found or built fails it.
func Get(t testing.TB) string {
	t.Helper()
	p, err := Path()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Cleanup removes the binary Path built, if any.
func Cleanup() {
	if built != "" {
		os.RemoveAll(built)
	}
}

func find() (bin, dir string, err error) {
	if p := os.Getenv("STRAIT_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", "", fmt.Errorf("STRAIT_BIN=%s: %w", p, err)
		}
		return abs, "", nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", "", err
	}
	dir, err = os.MkdirTemp("", "strait-test-bin-")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "strait")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/strait")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("go build ./cmd/strait: %v\n%s", err, out)
	}
	return bin, dir, nil
}

// moduleRoot is the directory holding go.mod and cmd/strait, found upwards
// from the test's working directory (its package directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "cmd", "strait")); err != nil {
				return "", fmt.Errorf("no ./cmd/strait in %s and STRAIT_BIN unset", dir)
			}
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("no go.mod above the test directory and STRAIT_BIN unset")
		}
		dir = up
	}
}
