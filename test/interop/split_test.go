package interop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Batches that encryption grows past the broker's message.max.bytes, with
// clients we did not write at their default batch sizes, through the real
// binary: librdkafka (confluent-kafka-python, batch.size 1,000,000) and
// kafkajs (one batch per send). Strait splits each such batch; every record
// must be acknowledged, stored exactly once, never in clear, and read back
// byte for byte through the decrypting Strait.

// splitValue is value i of the client scripts (confluent_split.py,
// split.js): a marker, 16 SHA-256 digests, text up to 1 KiB.
func splitValue(i int) []byte {
	v := fmt.Appendf(nil, "secret-%06d|", i)
	for j := range 16 {
		d := sha256.Sum256(fmt.Appendf(nil, "%d/%d", i, j))
		v = append(v, d[:]...)
	}
	for len(v) < 1024 {
		v = append(v, "the quick brown fox jumps over the lazy dog "...)
	}
	return v[:1024]
}

// splits is how many batches the encrypting Strait split so far.
func (s *encSetup) splits(t *testing.T) float64 {
	t.Helper()
	_, body, err := s.enc.adminGet("/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	n, _ := sumCounterWith(body, "strait_crypto_batches_split_total", "")
	return n
}

// assertStoredOnce checks topic directly on kfake (n records with n
// distinct keys, end offsets n plus one commit marker per partition written
// in a transaction, nothing in clear) and through the decrypting Strait
// (every value byte for byte).
func (s *encSetup) assertStoredOnce(t *testing.T, topic string, n int, txn bool) {
	t.Helper()
	brokers := s.cluster.ListenAddrs()
	recs := readDirect(t, brokers, topic, n)
	keys := map[string]bool{}
	parts := map[int32]bool{}
	for _, r := range recs {
		keys[string(r.Key)] = true
		parts[r.Partition] = true
		if !hasHeader(r, encHeader) || bytes.Contains(r.Value, []byte("secret-")) {
			t.Fatalf("%s: record %s stored in clear", topic, r.Key)
		}
	}
	if len(recs) != n || len(keys) != n {
		t.Fatalf("%s: %d records with %d distinct keys stored, want %d", topic, len(recs), len(keys), n)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets: %v", err)
	}
	var end int64
	ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
	want := int64(n)
	if txn {
		want += int64(len(parts)) // a commit marker in each partition written
	}
	if end != want {
		t.Fatalf("%s: end offsets sum to %d, want %d: records stored twice or lost", topic, end, want)
	}
	dec, err := kgo.NewClient(kgo.SeedBrokers(s.dec.Bootstrap), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for got := 0; got < n; {
		fs := dec.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s through the decrypting Strait: %d of %d records", topic, got, n)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("%s through the decrypting Strait: %v", topic, err) })
		fs.EachRecord(func(r *kgo.Record) {
			i, err := strconv.Atoi(strings.TrimPrefix(string(r.Key), "k"))
			if err != nil || !bytes.Equal(r.Value, splitValue(i)) {
				t.Fatalf("%s: record %q does not decrypt to what was sent", topic, r.Key)
			}
			got++
		})
	}
}

// splitRun runs one client script and checks that it lost nothing, that
// Strait split at least one batch, and what was stored.
func (s *encSetup) splitRun(t *testing.T, tool, topic string, n int, txn bool, cmd ...string) {
	t.Helper()
	before := s.splits(t)
	r := mustRun(t, 3*defaultTimeout, "", nil, cmd[0], cmd[1:]...)
	if got := strings.TrimSpace(r.Stdout); got != fmt.Sprintf("produced %d failed 0", n) {
		t.Fatalf("%s: %q\nstderr:\n%s", tool, got, tail(r.Stderr, 4000))
	}
	if s.splits(t) == before {
		t.Fatalf("%s: no batch was split: the run did not reach the broker's limit", tool)
	}
	s.assertStoredOnce(t, topic, n, txn)
}

var splitCodecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

func TestSplitConfluentKafkaPython(t *testing.T) {
	need(t, "confluent_kafka")
	var topics []string
	for _, c := range splitCodecs {
		topics = append(topics, "pay-split-py-"+c+"-idempotent", "pay-split-py-"+c+"-transactional")
	}
	s := startEncryption(t, topics...)
	const n = 6000
	for _, c := range splitCodecs {
		for _, mode := range []string{"idempotent", "transactional"} {
			t.Run(c+"/"+mode, func(t *testing.T) {
				topic := "pay-split-py-" + c + "-" + mode
				s.splitRun(t, "confluent-kafka-python", topic, n, mode == "transactional",
					pythonBin, filepath.Join(interopDir, "py", "confluent_split.py"), s.enc.Bootstrap, topic, strconv.Itoa(n), c, mode)
			})
		}
	}
}

func TestSplitKafkaJS(t *testing.T) {
	need(t, "kafkajs")
	modes := []string{"plain", "idempotent", "transactional"}
	var topics []string
	for _, m := range modes {
		topics = append(topics, "pay-split-js-"+m)
	}
	s := startEncryption(t, topics...)
	const n = 2850 // three sends of 950
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			topic := "pay-split-js-" + mode
			s.splitRun(t, "kafkajs", topic, n, mode == "transactional",
				"node", filepath.Join(interopDir, "js", "split.js"), s.enc.Bootstrap, topic, strconv.Itoa(n), mode)
		})
	}
}
