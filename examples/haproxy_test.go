package examples_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strait-proxy/strait/internal/straitbin"
	"github.com/strait-proxy/strait/internal/straittest"
)

// needHAProxy skips without haproxy, loudly, and fails under CI=true
// (scripts/install-test-deps.sh installs it).
func needHAProxy(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		straitbin.Missing(t, "haproxy (the SNI router of the gateway and hybrid-bridge examples): %v", err)
	}
}

// runHAProxy runs an example's HAProxy configuration, cfgFile, with the
// test's addresses in place of the README's: pairs are old, new, ... as
// for strings.NewReplacer, and each old literal must be in the file, so the
// file the README shows is the one tested. It writes the result into dir,
// starts haproxy on it, stops it at cleanup and logs the configuration and
// haproxy's output if the test failed. exited is closed if haproxy ends;
// output is what it has printed so far.
func runHAProxy(t *testing.T, cfgFile, dir string, pairs []string) (exited <-chan struct{}, output func() string) {
	t.Helper()
	raw, err := os.ReadFile(cfgFile)
	straittest.Must(t, err, "read %s", cfgFile)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(string(raw), pairs[i]) {
			t.Fatalf("%s no longer contains %q: update the test's port plan", cfgFile, pairs[i])
		}
	}
	cfg := strings.NewReplacer(pairs...).Replace(string(raw))
	path := filepath.Join(dir, "haproxy.cfg")
	straittest.Must(t, os.WriteFile(path, []byte(cfg), 0o644), "write haproxy.cfg")
	var out bytes.Buffer
	var mu sync.Mutex
	cmd := exec.Command("haproxy", "-db", "-f", path)
	cmd.Stdout = &lockedWriter{&mu, &out}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	straittest.Must(t, cmd.Start(), "start haproxy")
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	output = func() string {
		mu.Lock()
		defer mu.Unlock()
		return out.String()
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("---- haproxy config ----\n%s---- haproxy output ----\n%s", cfg, output())
		}
	})
	return done, output
}
