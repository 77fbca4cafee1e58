package encrypt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/internal/straittest"
)

// TestRoundTripEveryCodec: JSON fields and whole values (key too) go in
// through the producer-side Strait, are ciphertext on the broker, and come
// back byte for byte through the reader-side Strait, for every codec, with
// headers, null values and unencrypted topics untouched.
func TestRoundTripEveryCodec(t *testing.T) {
	r := newRig(t, 0, "error")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	codecs := map[string]kgo.CompressionCodec{"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(),
		"snappy": kgo.SnappyCompression(), "lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression()}
	var sent []*kgo.Record
	for name, codec := range codecs {
		p := client(t, r.Producer.Bootstrap, kgo.ProducerBatchCompression(codec))
		for i := range 20 {
			recs := []*kgo.Record{
				{Topic: "customers", Key: []byte(name), Value: customer(i), Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte(name)}}},
				{Topic: "payments", Key: fmt.Appendf(nil, "card-%s-%d", name, i), Value: fmt.Appendf(nil, "4111-1111-%s-%d", name, i)},
				{Topic: "plain", Value: fmt.Appendf(nil, "hello %s %d", name, i)},
			}
			if i == 0 {
				recs = append(recs, &kgo.Record{Topic: "payments", Key: []byte("tombstone-" + name)}) // null value
			}
			straittest.Must(t, p.ProduceSync(ctx, recs...).FirstErr(), "produce %s", name)
			sent = append(sent, recs...)
		}
	}
	want := map[string][]*kgo.Record{}
	for _, s := range sent {
		want[s.Topic] = append(want[s.Topic], s)
	}
	for topic, ws := range want {
		got := consume(t, ctx, r.Reader.Bootstrap, topic, len(ws))
		index := map[string]*kgo.Record{}
		for _, g := range got {
			index[string(g.Key)+"|"+string(g.Value)] = g
			if _, ok := header(g, envelope.HeaderKey); ok {
				t.Fatalf("%s: the consumer saw Strait's header", topic)
			}
		}
		for _, w := range ws {
			g, ok := index[string(w.Key)+"|"+string(w.Value)]
			if !ok {
				t.Fatalf("%s: record %q/%q not read back byte for byte", topic, w.Key, w.Value)
			}
			if w.Value == nil && g.Value != nil {
				t.Fatalf("%s: tombstone became %q", topic, g.Value)
			}
			if len(w.Headers) > 0 && (len(g.Headers) != 1 || !bytes.Equal(g.Headers[0].Value, w.Headers[0].Value)) {
				t.Fatalf("%s: headers %v, want %v", topic, g.Headers, w.Headers)
			}
		}
	}

	// Directly from the cluster: encrypted topics hold no secret, the
	// plain topic is untouched.
	for _, topic := range []string{"customers", "payments"} {
		for _, g := range consume(t, ctx, r.Cluster.ListenAddrs()[0], topic, len(want[topic])) {
			if _, ok := header(g, envelope.HeaderKey); !ok && g.Value != nil {
				t.Fatalf("%s: stored record without %s header", topic, envelope.HeaderKey)
			}
			for _, w := range want[topic] {
				for _, secret := range secrets(w) {
					if bytes.Contains(g.Value, secret) || bytes.Contains(g.Key, secret) {
						t.Fatalf("%s: secret %q stored in clear", topic, secret)
					}
				}
			}
			if topic == "customers" && !bytes.Contains(g.Value, []byte(`"address":"123 Main St"`)) {
				t.Fatalf("unencrypted fields changed: %s", g.Value)
			}
		}
	}
	for _, g := range consume(t, ctx, r.Cluster.ListenAddrs()[0], "plain", len(want["plain"])) {
		if len(g.Headers) != 0 || !bytes.HasPrefix(g.Value, []byte("hello ")) {
			t.Fatalf("plain topic changed: %q %v", g.Value, g.Headers)
		}
	}
}

// secrets are the values that must never be stored in clear.
func secrets(r *kgo.Record) [][]byte {
	switch r.Topic {
	case "customers":
		var c struct{ SSN, Account string }
		json.Unmarshal(bytes.NewBufferString(string(r.Value)).Bytes(), &struct {
			SSN     *string `json:"ssn_id"`
			Account *string `json:"account"`
		}{&c.SSN, &c.Account})
		return [][]byte{[]byte(c.SSN), []byte(c.Account)}
	case "payments":
		out := [][]byte{r.Key}
		if r.Value != nil {
			out = append(out, r.Value)
		}
		return out
	}
	return nil
}

func header(r *kgo.Record, key string) ([]byte, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

// TestTransactionsAndIdempotence: idempotent and transactional producers
// keep working through the encrypting Strait; read_committed through the
// decrypting Strait sees exactly the committed records.
func TestTransactionsAndIdempotence(t *testing.T) {
	r := newRig(t, 0, "error")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tx := client(t, r.Producer.Bootstrap, kgo.TransactionalID("enc-tx"), kgo.DefaultProduceTopic("payments"))
	for _, commit := range []bool{true, false, true} {
		straittest.Must(t, tx.BeginTransaction(), "begin")
		for i := range 5 {
			tx.Produce(ctx, &kgo.Record{Key: []byte("k"), Value: fmt.Appendf(nil, "%v-%d", commit, i)}, nil)
		}
		straittest.Must(t, tx.Flush(ctx), "flush")
		straittest.Must(t, tx.EndTransaction(ctx, kgo.TransactionEndTry(commit)), "end")
	}
	got := consume(t, ctx, r.Reader.Bootstrap, "payments", 10, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	for _, g := range got {
		if !bytes.HasPrefix(g.Value, []byte("true-")) {
			t.Fatalf("read_committed saw %q", g.Value)
		}
	}
}

// TestKMSOutageFailsClosed stops the KMS while an idempotent producer runs:
// the producer retries, nothing reaches the broker unencrypted, and once the
// KMS is back every record lands exactly once.
func TestKMSOutageFailsClosed(t *testing.T) {
	r := newRig(t, 5, "error") // a new data key every 5 records: the outage bites quickly
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p := client(t, r.Producer.Bootstrap, kgo.DefaultProduceTopic("payments"), kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }))
	const n = 60
	results := make(chan error, n)
	for i := range n {
		if i == 20 {
			r.KMS.Down.Store(true)
			time.AfterFunc(1500*time.Millisecond, func() { r.KMS.Down.Store(false) })
		}
		p.Produce(ctx, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%3), Value: fmt.Appendf(nil, "secret-%03d", i)}, func(_ *kgo.Record, err error) { results <- err })
		time.Sleep(40 * time.Millisecond)
	}
	for range n {
		straittest.Must(t, <-results, "produce")
	}
	// The outage must have been felt, or this test proved nothing.
	if straittest.Counter(t, r.PMetrics, "strait_kms_errors_total", "op", "encrypt") == 0 {
		t.Fatal("no KMS error was counted: the outage did not hit the produce path")
	}
	if straittest.Counter(t, r.PMetrics, "strait_crypto_partitions_refused_total") == 0 {
		t.Fatal("no partition was refused during the outage")
	}
	stored := consume(t, ctx, r.Cluster.ListenAddrs()[0], "payments", n)
	for _, g := range stored {
		if bytes.Contains(g.Value, []byte("secret-")) {
			t.Fatalf("plaintext reached the broker: %q", g.Value)
		}
	}
	seen := map[string]int{}
	for _, g := range consume(t, ctx, r.Reader.Bootstrap, "payments", n) {
		seen[string(g.Value)]++
	}
	for i := range n {
		if c := seen[fmt.Sprintf("secret-%03d", i)]; c != 1 {
			t.Fatalf("record %d seen %d times", i, c)
		}
	}
}

// TestTamper: a stored ciphertext with one byte flipped fails loudly on
// fetch (the partition gets CORRUPT_MESSAGE), or arrives still encrypted
// with on_decrypt_error: leave-encrypted. Never as garbage plaintext.
func TestTamper(t *testing.T) {
	for _, mode := range []string{"error", "leave-encrypted"} {
		t.Run(mode, func(t *testing.T) {
			r := newRig(t, 0, mode)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			p := client(t, r.Producer.Bootstrap)
			straittest.Must(t, p.ProduceSync(ctx, &kgo.Record{Topic: "payments", Partition: 0, Key: []byte("k"), Value: []byte("top secret")}).FirstErr(), "produce")
			stored := consume(t, ctx, r.Cluster.ListenAddrs()[0], "payments", 1)[0]
			// Write a tampered copy next to it, straight to the broker.
			bad := *stored
			bad.Value = bytes.Clone(stored.Value)
			bad.Value[len(bad.Value)-3] ^= 0x01
			bad.Topic, bad.Partition = "payments", stored.Partition
			direct := client(t, r.Cluster.ListenAddrs()[0], kgo.RecordPartitioner(kgo.ManualPartitioner()))
			straittest.Must(t, direct.ProduceSync(ctx, &bad).FirstErr(), "produce tampered")

			cl := client(t, r.Reader.Bootstrap, kgo.ConsumeTopics("payments"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.KeepRetryableFetchErrors()) // CORRUPT_MESSAGE is retriable: surface it
			switch mode {
			case "error":
				var sawErr error
				for sawErr == nil && ctx.Err() == nil {
					fs := cl.PollFetches(ctx)
					fs.EachError(func(_ string, _ int32, err error) { sawErr = err })
					fs.EachRecord(func(rec *kgo.Record) {
						if string(rec.Value) != "top secret" {
							t.Fatalf("tampered record delivered as %q", rec.Value)
						}
					})
				}
				if !errors.Is(sawErr, kerr.CorruptMessage) {
					t.Fatalf("fetch error %v, want CORRUPT_MESSAGE", sawErr)
				}
			case "leave-encrypted":
				var got []*kgo.Record
				for len(got) < 2 {
					fs := cl.PollFetches(ctx)
					straittest.Must(t, fs.Err0(), "poll")
					got = append(got, fs.Records()...)
				}
				if string(got[0].Value) != "top secret" {
					t.Fatalf("good record: %q", got[0].Value)
				}
				if !bytes.Equal(got[1].Value, bad.Value) {
					t.Fatalf("tampered record not left encrypted: %q", got[1].Value)
				}
			}
		})
	}
}
