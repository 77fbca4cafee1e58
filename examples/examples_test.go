// Package examples_test runs every example under examples/ the way its
// README does: the real strait binary, the example's own strait.yaml, a
// keyring made with `strait keys generate`, and flag overrides pointing it at
// a cluster (here an in-process kfake).
package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/internal/straitbin"
	"github.com/strait-proxy/strait/internal/straittest"
)

// The record from the slides (issue 4, item 7).
const customerRecord = `{"name":"Joe Example","address":"123 Main St","ssn_id":"123-45-6789","account":"678900000234","balance":1234.56,"tags":["gold","2fa"]}`

const paymentRecord = `{"card":"4111 1111 1111 1111","expiry":"12/29","amount":"42.00","currency":"EUR"}`

type example struct {
	dir, topic, keyID string
	key, value        []byte
	secrets           []string // must not be stored in clear
	// checkStored inspects the record as the broker holds it.
	checkStored func(t *testing.T, stored *kgo.Record)
}

var examples = []example{
	{
		dir: "encrypt-fields", topic: "customers", keyID: "customers-kek",
		key: []byte("customer-42"), value: []byte(customerRecord),
		secrets: []string{"123-45-6789", "678900000234"},
		checkStored: func(t *testing.T, s *kgo.Record) {
			var doc map[string]json.RawMessage
			if err := json.Unmarshal(s.Value, &doc); err != nil {
				t.Fatalf("stored value is not JSON any more: %v\n%s", err, s.Value)
			}
			for f, want := range map[string]string{"name": `"Joe Example"`, "address": `"123 Main St"`, "balance": `1234.56`, "tags": `["gold","2fa"]`} {
				if string(doc[f]) != want {
					t.Errorf("stored field %s = %s, want it intact: %s", f, doc[f], want)
				}
			}
			for _, f := range []string{"ssn_id", "account"} {
				var ct string
				if err := json.Unmarshal(doc[f], &ct); err != nil || len(ct) < 40 {
					t.Errorf("stored field %s = %s, want a ciphertext string", f, doc[f])
				}
			}
			// Only the two fields changed: the rest of the document is the
			// producer's bytes, in order.
			if !bytes.HasPrefix(s.Value, []byte(`{"name":"Joe Example","address":"123 Main St","ssn_id":"`)) ||
				!bytes.HasSuffix(s.Value, []byte(`","balance":1234.56,"tags":["gold","2fa"]}`)) {
				t.Errorf("unencrypted parts of the document changed: %s", s.Value)
			}
		},
	},
	{
		dir: "encrypt-value", topic: "payments", keyID: "payments-kek",
		key: []byte("order-1001"), value: []byte(paymentRecord),
		secrets: []string{"4111 1111 1111 1111", "42.00", "card"},
		checkStored: func(t *testing.T, s *kgo.Record) {
			if bytes.Equal(s.Value, []byte(paymentRecord)) || len(s.Value) <= len(paymentRecord) {
				t.Errorf("stored value is not a ciphertext: %q", s.Value)
			}
		},
	},
}

// straitBin returns $STRAIT_BIN or ./cmd/strait built once.
func straitBin(t *testing.T) string {
	t.Helper()
	return straitbin.Get(t)
}

func TestMain(m *testing.M) {
	code := m.Run()
	straitbin.Cleanup()
	os.Exit(code)
}

// strait runs a short strait command in dir and returns its output.
func strait(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, straitBin(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestExamples(t *testing.T) {
	for _, ex := range examples {
		t.Run(ex.dir, func(t *testing.T) { runExample(t, ex) })
	}
}

func runExample(t *testing.T, ex example) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The example's files, as a user would copy them; the keyring path in
	// strait.yaml is relative, resolved against strait's working directory.
	work := t.TempDir()
	yaml, err := os.ReadFile(filepath.Join(ex.dir, "strait.yaml"))
	straittest.Must(t, err, "read example")
	straittest.Must(t, os.WriteFile(filepath.Join(work, "strait.yaml"), yaml, 0o644), "copy example")
	if _, err := os.Stat(filepath.Join(ex.dir, "README.md")); err != nil {
		t.Errorf("example has no README.md: %v", err)
	}

	// Before the keyring exists, validate explains what is missing.
	out, err := strait(t, work, "validate", "--config", "strait.yaml")
	if err == nil || !strings.Contains(out, "keys.json") {
		t.Fatalf("validate without a keyring: err %v, output %q; want a failure naming keys.json", err, out)
	}
	out, err = strait(t, work, "keys", "generate", "--keyring", "keys.json", "--key", ex.keyID)
	straittest.Must(t, err, "keys generate: %s", out)
	out, err = strait(t, work, "validate", "--config", "strait.yaml")
	if err != nil || strings.TrimSpace(out) != "configuration ok" {
		t.Fatalf("validate: %v\n%s", err, out)
	}

	cluster := straittest.Cluster(t, kfake.SeedTopics(1, ex.topic))
	seed := startStrait(t, work, cluster.ListenAddrs())

	// Produce through Strait.
	hdr := []kgo.RecordHeader{{Key: "trace-id", Value: []byte("abc-123")}}
	prod := client(t, seed)
	rec := &kgo.Record{Topic: ex.topic, Key: ex.key, Value: ex.value, Headers: hdr}
	straittest.Must(t, prod.ProduceSync(ctx, rec).FirstErr(), "produce through strait")

	// As stored: read directly from the cluster.
	stored := consumeOne(t, ctx, cluster.ListenAddrs()[0], ex.topic)
	t.Logf("stored on the broker: key %q value %q headers %v", stored.Key, stored.Value, headerKeys(stored))
	for _, s := range ex.secrets {
		if bytes.Contains(stored.Value, []byte(s)) {
			t.Errorf("secret %q stored in clear: %s", s, stored.Value)
		}
	}
	if !bytes.Equal(stored.Key, ex.key) {
		t.Errorf("stored key %q, want it intact: %q", stored.Key, ex.key)
	}
	if v, ok := header(stored, "trace-id"); !ok || string(v) != "abc-123" {
		t.Errorf("producer header lost on the broker: %v", stored.Headers)
	}
	if _, ok := header(stored, "strait.enc"); !ok {
		t.Errorf("stored record has no strait.enc header: %v", headerKeys(stored))
	}
	ex.checkStored(t, stored)

	// Through Strait: the producer's bytes.
	got := consumeOne(t, ctx, seed, ex.topic)
	if !bytes.Equal(got.Value, ex.value) || !bytes.Equal(got.Key, ex.key) {
		t.Errorf("read through strait: key %q value %s\nwant key %q value %s", got.Key, got.Value, ex.key, ex.value)
	}
	if len(got.Headers) != 1 || got.Headers[0].Key != "trace-id" || string(got.Headers[0].Value) != "abc-123" {
		t.Errorf("headers read through strait: %v, want only trace-id", got.Headers)
	}
}

// startStrait runs `strait run --config strait.yaml` in dir with flags that
// override the file's addresses (and any extra flags), and waits until it is
// ready.
func startStrait(t *testing.T, dir string, upstream []string, extra ...string) (seed string) {
	t.Helper()
	base := straittest.FreePortBase(t, 12) // brokers on base+n; bootstrap base+10; admin base+11
	listen := "127.0.0.1:" + strconv.Itoa(base+10)
	admin := "127.0.0.1:" + strconv.Itoa(base+11)
	var logs bytes.Buffer
	var logMu sync.Mutex
	cmd := exec.Command(straitBin(t), "run", "--config", "strait.yaml",
		"--upstream", strings.Join(upstream, ","), "--listen", listen, "--broker-port-base", strconv.Itoa(base),
		"--admin-listen", admin, "--log-level", "warn")
	cmd.Args = append(cmd.Args, extra...)
	cmd.Dir = dir
	cmd.Stdout = &lockedWriter{&logMu, &logs}
	cmd.Stderr = cmd.Stdout
	straittest.Must(t, cmd.Start(), "start strait")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			logMu.Lock()
			t.Logf("strait output:\n%s", logs.String())
			logMu.Unlock()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			logMu.Lock()
			defer logMu.Unlock()
			t.Fatalf("strait exited: %v\n%s", err, logs.String())
		default:
		}
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return listen
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("strait did not become ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func client(t *testing.T, seed string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seed)}, opts...)...)
	straittest.Must(t, err, "client")
	t.Cleanup(cl.Close)
	return cl
}

func consumeOne(t *testing.T, ctx context.Context, seed, topic string) *kgo.Record {
	t.Helper()
	cl := client(t, seed, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume %s from %s: %v", topic, seed, err)
		}
		if recs := fs.Records(); len(recs) > 0 {
			if len(recs) != 1 {
				t.Fatalf("consume %s from %s: %d records, want 1", topic, seed, len(recs))
			}
			return recs[0]
		}
	}
}

func header(r *kgo.Record, key string) ([]byte, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

func headerKeys(r *kgo.Record) []string {
	var out []string
	for _, h := range r.Headers {
		out = append(out, h.Key)
	}
	return out
}
