package examples_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/internal/straittest"
)

// examples/sidecar: an encrypting Strait beside the producer and a
// decrypting Strait beside the consumer, two processes of the real binary,
// each the application's bootstrap on 127.0.0.1, in front of one cluster.
func TestSidecarExample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := os.Stat(filepath.Join("sidecar", "README.md")); err != nil {
		t.Errorf("example has no README.md: %v", err)
	}
	fields := examples[0] // encrypt-fields: the same topic, record and rule
	if fields.dir != "encrypt-fields" {
		t.Fatalf("examples[0] is %q, want encrypt-fields", fields.dir)
	}

	// README step 1: one keyring, generated once, mounted in both pods.
	pod := map[string]string{}
	for _, side := range []string{"producer", "consumer"} {
		pod[side] = t.TempDir()
		yml, err := os.ReadFile(filepath.Join("sidecar", side, "strait.yaml"))
		straittest.Must(t, err, "read %s sidecar config", side)
		straittest.Must(t, os.WriteFile(filepath.Join(pod[side], "strait.yaml"), yml, 0o644), "copy")
	}
	out, err := strait(t, pod["producer"], "keys", "generate", "--keyring", "keys.json", "--key", fields.keyID)
	straittest.Must(t, err, "keys generate: %s", out)
	ring, err := os.ReadFile(filepath.Join(pod["producer"], "keys.json"))
	straittest.Must(t, err, "read keyring")
	straittest.Must(t, os.WriteFile(filepath.Join(pod["consumer"], "keys.json"), ring, 0o600), "copy keyring")
	for side, dir := range pod {
		out, err := strait(t, dir, "validate", "--config", "strait.yaml")
		if err != nil || strings.TrimSpace(out) != "configuration ok" {
			t.Fatalf("validate %s sidecar: %v\n%s", side, err, out)
		}
	}

	cluster := straittest.Cluster(t, kfake.SeedTopics(1, fields.topic))
	producerSidecar := startStrait(t, pod["producer"], cluster.ListenAddrs())
	consumerSidecar := startStrait(t, pod["consumer"], cluster.ListenAddrs())
	for name, addr := range map[string]string{"producer": producerSidecar, "consumer": consumerSidecar} {
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Fatalf("%s sidecar listens on %s, want the pod's 127.0.0.1", name, addr)
		}
	}

	// The producing application: franz-go, bootstrap = its sidecar.
	hdr := []kgo.RecordHeader{{Key: "trace-id", Value: []byte("abc-123")}}
	rec := &kgo.Record{Topic: fields.topic, Key: fields.key, Value: fields.value, Headers: hdr}
	straittest.Must(t, client(t, producerSidecar).ProduceSync(ctx, rec).FirstErr(), "produce through the producer sidecar")

	// The consuming application: franz-go, bootstrap = its sidecar, gets the
	// producer's bytes.
	got := consumeOne(t, ctx, consumerSidecar, fields.topic)
	if !bytes.Equal(got.Value, fields.value) || !bytes.Equal(got.Key, fields.key) {
		t.Errorf("read through the consumer sidecar: key %q value %s\nwant key %q value %s", got.Key, got.Value, fields.key, fields.value)
	}
	if v, ok := header(got, "trace-id"); !ok || string(v) != "abc-123" || len(got.Headers) != 1 {
		t.Errorf("headers through the consumer sidecar: %v, want only trace-id", headerKeys(got))
	}

	// The broker, read directly, holds ciphertext in the two fields.
	stored := consumeOne(t, ctx, cluster.ListenAddrs()[0], fields.topic)
	t.Logf("stored on the broker: %s", stored.Value)
	for _, s := range fields.secrets {
		if bytes.Contains(stored.Value, []byte(s)) {
			t.Errorf("secret %q stored in clear: %s", s, stored.Value)
		}
	}
	if _, ok := header(stored, "strait.enc"); !ok {
		t.Errorf("stored record has no strait.enc header: %v", headerKeys(stored))
	}
	fields.checkStored(t, stored)

	// The producer sidecar has no decrypt step: reading through it is
	// reading the broker, so a pod with only the producer sidecar cannot
	// see the clear fields.
	via := consumeOne(t, ctx, producerSidecar, fields.topic)
	if !bytes.Equal(via.Value, stored.Value) {
		t.Errorf("read through the producer sidecar: %s, want the stored ciphertext %s", via.Value, stored.Value)
	}
}
