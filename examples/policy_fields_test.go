package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/internal/testpki"
)

const usaOrder = `{"name":"Joe Example","address":"123 Main St","country":"usa","ssn_id":"123-45-6789","account":"678900000234","Order_time":"2024-03-01T10:00:00Z","itemid":"A-17"}`
const brazilOrder = `{"name":"Ana Souza","address":"Rua das Flores 8","country":"brazil","ssn_id":"987.654.321-00","account":"341100009876","Order_time":"2024-03-01T11:00:00Z","itemid":"B-2"}`

// consumeAll reads topic from the start until it has the record whose
// value contains until (a fresh client each time: no group, no state).
func consumeUntil(t *testing.T, ctx context.Context, seed, topic, until string, opts ...kgo.Opt) []string {
	t.Helper()
	cl := client(t, seed, append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	defer cl.Close()
	var out []string
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume %s from %s after %d records: %v", topic, seed, len(out), err)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, string(r.Value))
			done = done || strings.Contains(string(r.Value), until)
		})
		if done {
			return out
		}
	}
}

// examples/policy-fields: the slides' order as four consumers see it.
func TestPolicyFieldsExample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	work := t.TempDir()
	for _, f := range []string{"strait.yaml", "policy.rego", "policy_test.rego", "catalog.yaml", "order.json", "README.md"} {
		b, err := os.ReadFile(filepath.Join("policy-fields", f))
		straittest.Must(t, err, "read example file")
		straittest.Must(t, os.WriteFile(filepath.Join(work, f), b, 0o644), "copy")
	}
	ca := testpki.New(t)
	cert, key := ca.Leaf(t, "127.0.0.1", "localhost")
	for src, dst := range map[string]string{ca.CertFile: "ca.pem", cert: "strait.pem", key: "strait-key.pem"} {
		b, err := os.ReadFile(src)
		straittest.Must(t, err, "read %s", src)
		straittest.Must(t, os.WriteFile(filepath.Join(work, dst), b, 0o600), "write %s", dst)
	}

	// The README's steps: keys, rego tests, validate.
	out, err := strait(t, work, "validate", "--config", "strait.yaml")
	if err == nil || !strings.Contains(out, "keys.json") {
		t.Fatalf("validate without a keyring: %v %q", err, out)
	}
	out, err = strait(t, work, "keys", "generate", "--keyring", "keys.json", "--key", "orders-kek")
	straittest.Must(t, err, "keys generate: %s", out)
	out, err = strait(t, work, "policy", "test", ".")
	if err != nil || !strings.Contains(out, "4 passed, 0 failed") {
		t.Fatalf("policy test: %v\n%s", err, out)
	}
	out, err = strait(t, work, "validate", "--config", "strait.yaml")
	if err != nil || strings.TrimSpace(out) != "configuration ok" {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	out, err = strait(t, work, "policy", "eval", "--config", "strait.yaml", "--input", writeInput(t, work, "us-financial"))
	if err != nil || !strings.Contains(out, `"$.ssn_id": "redact"`) || !strings.Contains(out, `"account": "678900000234"`) {
		t.Fatalf("policy eval: %v\n%s", err, out)
	}

	cluster := straittest.Cluster(t, kfake.SeedTopics(1, "orders"))
	seed := startStrait(t, work, cluster.ListenAddrs())
	as := func(cn string) kgo.Opt { return kgo.DialTLSConfig(ca.MTLSClientConfig(t, cn)) }

	prod := client(t, seed, as("order-service"))
	straittest.Must(t, prod.ProduceSync(ctx,
		&kgo.Record{Topic: "orders", Key: []byte("o-1"), Value: []byte(usaOrder)},
		&kgo.Record{Topic: "orders", Key: []byte("o-2"), Value: []byte(brazilOrder)},
		&kgo.Record{Topic: "orders", Key: []byte("o-3"), Value: []byte(`{"country":"usa","itemid":"END"}`)},
	).FirstErr(), "produce through strait")

	// full-pii: everything in clear, byte for byte.
	full := consumeUntil(t, ctx, seed, "orders", `"END"`, as("full-pii"))
	if len(full) != 3 || full[0] != usaOrder || full[1] != brazilOrder {
		t.Fatalf("full-pii: %q", full)
	}
	// us-financial: only account, Order_time and itemid of the usa order;
	// nothing of the brazil one.
	us := consumeUntil(t, ctx, seed, "orders", `"END"`, as("us-financial"))
	wantUS := `{"name":null,"address":null,"country":null,"ssn_id":null,"account":"678900000234","Order_time":"2024-03-01T10:00:00Z","itemid":"A-17"}`
	if len(us) != 2 || us[0] != wantUS {
		t.Fatalf("us-financial: %q\nwant first %s", us, wantUS)
	}
	// brazil: nothing of the usa orders, its own with PII redacted.
	br := consumeUntil(t, ctx, seed, "orders", `"B-2"`, as("brazil"))
	if len(br) != 1 || !strings.Contains(br[0], `"account":"341100009876"`) || strings.Contains(br[0], "Ana") {
		t.Fatalf("brazil: %q", br)
	}
	// A consumer without the key (reading the broker directly) sees
	// ciphertext where the secrets were.
	direct := consumeUntil(t, ctx, cluster.ListenAddrs()[0], "orders", `"END"`)
	var stored map[string]any
	straittest.Must(t, json.Unmarshal([]byte(direct[0]), &stored), "stored record is JSON")
	if s, _ := stored["account"].(string); len(s) < 40 || strings.Contains(direct[0], "678900000234") || strings.Contains(direct[0], "123-45-6789") {
		t.Fatalf("stored: %s", direct[0])
	}

	// The audit log counts what was decided and holds no value.
	audit, err := os.ReadFile(filepath.Join(work, "audit.jsonl"))
	straittest.Must(t, err, "audit log")
	if !bytes.Contains(audit, []byte(`"principal":"User:us-financial"`)) || !bytes.Contains(audit, []byte(`"dropped":1`)) {
		t.Fatalf("audit log:\n%s", audit)
	}
	for _, secret := range []string{"Joe Example", "123 Main St", "123-45-6789", "678900000234", "Ana Souza", "341100009876", "A-17"} {
		if bytes.Contains(audit, []byte(secret)) {
			t.Fatalf("audit log holds %q:\n%s", secret, audit)
		}
	}

	// Hot reload: the policy file changes, the running Strait picks it up
	// (the binary watches the files the policy was built from). Brazil
	// is now allowed the usa orders too.
	pol, err := os.ReadFile(filepath.Join(work, "policy.rego"))
	straittest.Must(t, err, "read policy")
	pol = bytes.Replace(pol, []byte(`input.value.country != region[input.principal.name]`),
		[]byte(`not input.value.country in {region[input.principal.name], "usa"}`), 1)
	straittest.Must(t, os.WriteFile(filepath.Join(work, "policy.rego"), pol, 0o644), "write policy")
	for {
		br = consumeUntil(t, ctx, seed, "orders", `"B-2"`, as("brazil"))
		if len(br) >= 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("new policy never took effect: %q", br)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(br[0], `"itemid":"A-17"`) || strings.Contains(br[0], "Joe") {
		t.Fatalf("brazil after reload: %q", br)
	}
}

func writeInput(t *testing.T, dir, principal string) string {
	t.Helper()
	order, err := os.ReadFile(filepath.Join(dir, "order.json"))
	straittest.Must(t, err, "order.json")
	p := filepath.Join(dir, "input-"+principal+".json")
	in := `{"principal": {"name": "` + principal + `"}, "topic": "orders", "value": ` + string(order) + `}`
	straittest.Must(t, os.WriteFile(p, []byte(in), 0o644), "input")
	return p
}
