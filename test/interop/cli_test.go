package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLI: `strait version` and `strait validate --config` as a user runs
// them (the flag names of `strait run` are exercised by every other test).
func TestCLI(t *testing.T) {
	if directMode {
		t.Skip("STRAIT_INTEROP_DIRECT=1: this test checks Strait itself")
	}
	need(t, "strait")
	r := mustRun(t, 30*time.Second, "", nil, straitBin, "version")
	if strings.TrimSpace(r.Stdout+r.Stderr) == "" {
		t.Error("strait version printed nothing")
	}

	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("upstream:\n  bootstrap: [\"127.0.0.1:9092\"]\nlisten:\n  bootstrap: 127.0.0.1:19092\n  broker_port_base: 19100\n"), 0o644)
	if r := run(t, 30*time.Second, "", nil, straitBin, "validate", "--config", good); r.Err != nil {
		t.Errorf("strait validate rejected a minimal valid config: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("upstream:\n  bootstrap: [\"127.0.0.1:9092\"]\nlisten:\n  bootstrap: 127.0.0.1:19092\n  no_such_setting: 1\n"), 0o644)
	r = run(t, 30*time.Second, "", nil, straitBin, "validate", "--config", bad)
	if r.Err == nil {
		t.Errorf("strait validate accepted an unknown key:\n%s%s", r.Stdout, r.Stderr)
	} else if !strings.Contains(r.Stdout+r.Stderr, "no_such_setting") {
		t.Errorf("strait validate did not name the bad key's path:\n%s%s", r.Stdout, r.Stderr)
	}
}
