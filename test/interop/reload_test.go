package interop

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/crypto/kms/local"
)

// TestReloadUnderLoad is issue 9's reload check with the real binary: an
// idempotent producer sends 1000 records through an encrypting Strait while
// its configuration is reloaded three times, once by a file change to a new
// key, once with an invalid file (rejected: the old configuration stays),
// once by SIGHUP, and once more by a rotated keyring. Every record lands exactly once, none in clear, and the
// producer never reconnects.
func TestReloadUnderLoad(t *testing.T) {
	if directMode {
		t.Skip("STRAIT_INTEROP_DIRECT=1: reload is Strait's own")
	}
	need(t, "strait")
	dir := t.TempDir()
	keyring := filepath.Join(dir, "keys.json")
	for _, k := range []string{"kek-a", "kek-b"} {
		if err := local.Generate(keyring, k); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(dir, "strait.yaml")
	write := func(key string) {
		t.Helper()
		body := fmt.Sprintf(`interceptors:
  - name: encrypt
    config:
      kms: {local: {keyring: %q}}
      rules:
        - {topics: ["reload"], key_id: %s}
`, keyring, key)
		// Write and rename, as a ConfigMap update does: the watcher must
		// never read half a file.
		tmp := cfgPath + ".tmp"
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	write("kek-a")
	c := kfakeCluster(t, []string{"reload"})
	p := startStrait(t, straitConfig{Upstream: c.ListenAddrs(), Args: []string{"--config", cfgPath}, NoDirect: true})
	metric := func(name, label string) float64 {
		t.Helper()
		_, body, err := p.adminGet("/metrics")
		if err != nil {
			t.Fatal(err)
		}
		n, _ := sumCounterWith(body, name, label)
		return n
	}
	waitMetric := func(name, label string, want float64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for metric(name, label) < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s{%s} did not reach %v\n%s", name, label, want, tail(p.Output(), 20))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Bootstrap), kgo.DefaultProduceTopic("reload"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n, phase = 1000, 250
	produce := func(from int) {
		t.Helper()
		for i := from; i < from+phase; i++ {
			r := &kgo.Record{Key: fmt.Appendf(nil, "k%04d", i), Value: fmt.Appendf(nil, "reload-secret-%04d", i)}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
	}
	produce(0)
	conns := metric("strait_connections_total", "")

	write("kek-b") // 1: a file change
	waitMetric("strait_config_reloads_total", `result="applied"`, 1)
	produce(phase)

	write("no-such-kek") // 2: invalid, rejected; the kek-b chain stays
	waitMetric("strait_config_reloads_total", `result="rejected"`, 1)
	produce(2 * phase)

	write("kek-a") // 3: by SIGHUP (the watcher may see it first; either applies it)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitMetric("strait_config_reloads_total", `result="applied"`, 2)
	produce(3 * phase)

	// A rotated keyring (a file the interceptor declared) reloads too.
	if _, err := local.Rotate(keyring, "kek-a"); err != nil {
		t.Fatal(err)
	}
	waitMetric("strait_config_reloads_total", `result="applied"`, 3)

	if got := metric("strait_connections_total", ""); got != conns {
		t.Errorf("the producer opened %v new connections across the reloads", got-conns)
	}
	stored := readDirect(t, c.ListenAddrs(), "reload", n)
	seen := map[string]bool{}
	for _, r := range stored {
		if seen[string(r.Key)] {
			t.Fatalf("record %s stored twice", r.Key)
		}
		seen[string(r.Key)] = true
		if !hasHeader(r, encHeader) || bytes.Contains(r.Value, []byte("reload-secret")) {
			t.Fatalf("record %s stored in clear: %q", r.Key, r.Value)
		}
		// The key reference names the KEK in clear: records of phases 2
		// and 3 were sealed under kek-b (the rejected reload kept it).
		var i int
		fmt.Sscanf(string(r.Key), "k%04d", &i)
		want := "kek-a"
		if i >= phase && i < 3*phase {
			want = "kek-b"
		}
		if !bytes.Contains(r.Value, []byte(want)) {
			t.Fatalf("record %s was not sealed under %s", r.Key, want)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct records stored, %d sent", len(seen), n)
	}
	raw, _, _ := rawLog(t, c.ListenAddrs(), "reload")
	if bytes.Contains(raw, []byte("reload-secret")) {
		t.Fatal("plaintext in the raw log")
	}
}
