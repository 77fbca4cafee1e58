package encrypt_test

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/kms/vaulttransit"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
)

// Tests of issue 12 points 2 and 10 (the Produce side and start-up), run
// through interceptor chains as the proxy runs them, with the local keyring.

// TestProduceBombsRefusedCheaply (point 2): a Produce request whose two
// partitions hold the two bombs is answered by Strait with an error for
// each, and refusing them allocates little (the bombs cost 145 MiB and 291
// MiB of heap before); a third partition in another request goes through.
func TestProduceBombsRefusedCheaply(t *testing.T) {
	orders := []rules.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	k := newKeys(t)
	enc := k.Chain(t, encrypt.New, k.Config(orders, "error", rules.Limits{}))
	zeroDelta, honest := bomb(t, false), bomb(t, true)
	t.Logf("bombs: %d and %d bytes", len(zeroDelta), len(honest))
	run := func() *kmsg.ProduceResponse {
		req, _ := produceRequest("orders", zeroDelta)
		p := kmsg.NewProduceRequestTopicPartition()
		p.Partition, p.Records = 1, honest
		req.Topics[0].Partitions = append(req.Topics[0].Partitions, p)
		x := &interceptor.Exchange{Conn: &interceptor.Conn{}, Key: 0, Version: 9, Request: req}
		if err := enc.Request(context.Background(), x); err != nil {
			t.Fatalf("encrypt: %v", err)
		}
		defer x.Done()
		resp, ok := x.Response.(*kmsg.ProduceResponse)
		if !ok {
			t.Fatal("Strait forwarded a bomb")
		}
		return resp
	}
	run() // warm the pools: the first decompression grows them
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	resp := run()
	runtime.ReadMemStats(&m1)
	heap := m1.TotalAlloc - m0.TotalAlloc
	for _, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != kerr.CorruptMessage.Code && p.ErrorCode != kerr.InvalidRecord.Code {
			t.Errorf("partition %d: error code %d, want CORRUPT_MESSAGE or INVALID_RECORD", p.Partition, p.ErrorCode)
		}
		t.Logf("partition %d: %d %s", p.Partition, p.ErrorCode, *p.ErrorMessage)
	}
	if len(resp.Topics[0].Partitions) != 2 {
		t.Errorf("%d partitions answered, want 2", len(resp.Topics[0].Partitions))
	}
	t.Logf("refusing both allocated %d KiB", heap>>10)
	if heap > 8<<20 {
		t.Errorf("refusing the bombs allocated %d MiB, want < 8 MiB", heap>>20)
	}
	if out := seal(t, enc, "orders", batch(t, kgo.ZstdCompression(), []byte("fine"))); len(out) == 0 {
		t.Fatal("a normal batch was not encrypted")
	}
}

// TestStartupWarnings (point 10): a Vault key store with TLS verification
// off and an inline token starts, and says so at start: one warning each.
func TestStartupWarnings(t *testing.T) {
	vaultEnv(t)
	cfg := rules.Config{
		KMS: rules.KMS{Vault: &vaulttransit.Config{
			Address: "https://127.0.0.1:1", // New does not contact Vault
			Auth:    vaulttransit.AuthConfig{Token: "s.inline"},
			TLS:     vaulttransit.TLSConfig{InsecureSkipVerify: true},
		}},
		Rules: []rules.Rule{{Topics: []string{"orders"}, KeyID: "strait"}},
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ic, err := decrypt.New(cfg, rules.Env{Logger: log, Metrics: prometheus.NewRegistry()})
	straittest.Must(t, err, "decrypt")
	defer ic.Close()
	out := logs.String()
	for _, want := range []string{"kms.vault-transit: tls.insecure_skip_verify", "kms.vault-transit: auth.token is inline"} {
		if !strings.Contains(out, want) {
			t.Errorf("no warning %q in the start-up log:\n%s", want, out)
		}
	}
	if n := strings.Count(out, `"level":"WARN"`); n != 2 {
		t.Errorf("%d warnings, want 2:\n%s", n, out)
	}
}

// TestMaxBatchBytesBoundsProduceOnly: max_batch_bytes bounds what
// encryption adds; a decrypted batch is smaller than the one the broker
// sent, so the bound does not refuse it (a 1 KiB bound, 8 KiB of records).
func TestMaxBatchBytesBoundsProduceOnly(t *testing.T) {
	orders := []rules.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	k := newKeys(t)
	vals := make([][]byte, 8)
	for i := range vals {
		vals[i] = bytes.Repeat([]byte{'a' + byte(i)}, 1000)
	}
	in := batch(t, kgo.NoCompression(), vals...)
	sealed := seal(t, k.Chain(t, encrypt.New, k.Config(orders, "error", rules.Limits{})), "orders", in)

	tight := rules.Limits{MaxBatchBytes: 1 << 10}
	req, _ := produceRequest("orders", in)
	x := &interceptor.Exchange{Conn: &interceptor.Conn{}, Key: 0, Version: 9, Request: req}
	straittest.Must(t, k.Chain(t, encrypt.New, k.Config(orders, "error", tight)).Request(context.Background(), x), "encrypt")
	if resp, ok := x.Response.(*kmsg.ProduceResponse); !ok || resp.Topics[0].Partitions[0].ErrorCode != kerr.InvalidRecord.Code {
		t.Fatalf("produce over max_batch_bytes was not refused with INVALID_RECORD")
	}
	p := fetch(t, k.Chain(t, decrypt.New, k.Config(orders, "error", tight)), "orders", sealed).Topics[0].Partitions[0]
	if got, _ := values(t, p.RecordBatches); p.ErrorCode != 0 || len(got) != 8 || got[7] != string(vals[7]) {
		t.Fatalf("fetch under a tight max_batch_bytes: error %d, %d records", p.ErrorCode, len(got))
	}
}
