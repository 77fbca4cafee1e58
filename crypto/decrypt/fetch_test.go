package decrypt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/topicid"
)

// Tests of issue 12 points 5, 6, 8 and 9 (the Fetch side), run through
// interceptor chains as the proxy runs them, with the local keyring.

// TestDecryptOnlyWhatARuleCovers (point 5): with rules naming only orders,
// an encrypted record of hr-salaries comes back as ciphertext, untouched;
// with a rule for hr-salaries it decrypts (the record is decryptable, so
// only the rule makes the difference).
func TestDecryptOnlyWhatARuleCovers(t *testing.T) {
	hr := []rules.Rule{{Topics: []string{"hr-salaries"}, KeyID: "hr-kek"}}
	orders := []rules.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	k := newKeys(t)
	enc := k.Chain(t, encrypt.New, k.Config(hr, "error", rules.Limits{}))
	sealed := seal(t, enc, "hr-salaries", batch(t, kgo.NoCompression(), []byte("alice: 120000")))

	dec := k.Chain(t, decrypt.New, k.Config(orders, "error", rules.Limits{}))
	p := fetch(t, dec, "hr-salaries", sealed).Topics[0].Partitions[0]
	if p.ErrorCode != 0 || !bytes.Equal(p.RecordBatches, sealed) {
		t.Fatalf("uncovered topic: error %d, batches changed %v", p.ErrorCode, !bytes.Equal(p.RecordBatches, sealed))
	}
	if vals, isEnc := values(t, p.RecordBatches); !isEnc || vals[0] == "alice: 120000" {
		t.Fatalf("uncovered topic: record %q (strait.enc %v), want ciphertext", vals, isEnc)
	}

	decHR := k.Chain(t, decrypt.New, k.Config(append(orders, hr...), "error", rules.Limits{}))
	p = fetch(t, decHR, "hr-salaries", sealed).Topics[0].Partitions[0]
	if vals, isEnc := values(t, p.RecordBatches); p.ErrorCode != 0 || isEnc || vals[0] != "alice: 120000" {
		t.Fatalf("covered topic: error %d, record %q (strait.enc %v), want the plaintext", p.ErrorCode, vals, isEnc)
	}
}

// TestUnreadableBatchFailsThePartition (point 6): with on_decrypt_error:
// error, a partition holding a batch Strait cannot read (CRC mismatch,
// unknown codec, over the decompression cap, issue 12's zero-delta bomb),
// even behind a good encrypted
// batch, gets an error code and no records; the other partitions decrypt.
// With leave-encrypted, those partitions pass as the broker sent them.
func TestUnreadableBatchFailsThePartition(t *testing.T) {
	orders := []rules.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	lim := rules.Limits{MaxDecompressedBytes: 64 << 10}
	k := newKeys(t)
	enc := k.Chain(t, encrypt.New, k.Config(orders, "error", lim))
	good := seal(t, enc, "orders", batch(t, kgo.NoCompression(), []byte("order 1"), []byte("order 2")))

	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-1] ^= 1
	unknownCodec := bytes.Clone(good)
	binary.BigEndian.PutUint16(unknownCodec[21:], 5)
	fixCRC(unknownCodec)
	big := make([][]byte, 100)
	for i := range big {
		big[i] = bytes.Repeat([]byte("x"), 1000) // 100 KB, compresses to little
	}
	overCap := batch(t, kgo.ZstdCompression(), big...)
	parts := [][]byte{
		append(bytes.Clone(good), badCRC...),
		append(bytes.Clone(good), unknownCodec...),
		append(bytes.Clone(good), overCap...),
		good,
		// 400k records: more than the 64 KiB cap can hold at 7 bytes each,
		// refused from the header before decompression.
		append(bytes.Clone(good), bomb(t, false)...),
	}
	want := []int16{kerr.CorruptMessage.Code, kerr.CorruptMessage.Code, kerr.InvalidRecord.Code, 0, kerr.InvalidRecord.Code}

	dec := k.Chain(t, decrypt.New, k.Config(orders, "error", lim))
	resp := fetch(t, dec, "orders", parts...)
	for i, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != want[i] {
			t.Errorf("partition %d: error code %d, want %d", i, p.ErrorCode, want[i])
		}
		if want[i] != 0 && p.RecordBatches != nil {
			t.Errorf("partition %d: error %d with %d bytes of records", i, p.ErrorCode, len(p.RecordBatches))
		}
	}
	if vals, isEnc := values(t, resp.Topics[0].Partitions[3].RecordBatches); isEnc || len(vals) != 2 || vals[0] != "order 1" {
		t.Errorf("good partition: %q (strait.enc %v)", vals, isEnc)
	}

	leave := k.Chain(t, decrypt.New, k.Config(orders, "leave-encrypted", lim))
	resp = fetch(t, leave, "orders", parts[:3]...)
	for i, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != 0 || !bytes.Equal(p.RecordBatches, parts[i]) {
			t.Errorf("leave-encrypted, partition %d: error %d, batches as sent %v", i, p.ErrorCode, bytes.Equal(p.RecordBatches, parts[i]))
		}
	}
}

// TestFetchUnknownTopicIDsOneLookup (point 8): a Fetch v13 response naming
// 100 topic ids no Metadata response named, each partition holding an
// encrypted batch, costs one upstream Metadata request (counted at a kfake
// cluster), and every partition is refused with UNKNOWN_TOPIC_ID; the same
// response again costs none (negative cache).
func TestFetchUnknownTopicIDsOneLookup(t *testing.T) {
	c := straittest.Cluster(t, kfake.SeedTopics(1, "orders"))
	var lookups atomic.Int64
	c.ControlKey(3, func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, tp := range r.(*kmsg.MetadataRequest).Topics {
			if tp.TopicID != [16]byte{} {
				lookups.Add(1)
				break
			}
		}
		return nil, nil, false
	})
	cl := client(t, c.ListenAddrs()[0])
	names := topicid.New()
	names.SetCluster(cl)

	orders := []rules.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	k := newKeys(t)
	sealed := seal(t, k.Chain(t, encrypt.New, k.Config(orders, "error", rules.Limits{})), "orders", batch(t, kgo.NoCompression(), []byte("secret")))
	ic, err := decrypt.New(k.Config(orders, "error", rules.Limits{}), rules.Env{Metrics: prometheus.NewRegistry(), Topics: names, Providers: []kms.Provider{k.Prov}})
	straittest.Must(t, err, "decrypt")
	dec, err := interceptor.NewChain(ic)
	straittest.Must(t, err, "chain")

	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(13)
	for range 100 {
		ft := kmsg.NewFetchResponseTopic()
		rand.Read(ft.TopicID[:])
		p := kmsg.NewFetchResponseTopicPartition()
		p.RecordBatches = sealed
		ft.Partitions = append(ft.Partitions, p)
		resp.Topics = append(resp.Topics, ft)
	}
	for round := range 2 {
		for i := range resp.Topics {
			resp.Topics[i].Partitions[0].ErrorCode, resp.Topics[i].Partitions[0].RecordBatches = 0, sealed
		}
		x := &interceptor.Exchange{Conn: &interceptor.Conn{}, Key: 1, Version: 13, Response: resp}
		straittest.Must(t, dec.Response(context.Background(), x), "decrypt")
		for _, ft := range resp.Topics {
			if p := ft.Partitions[0]; p.ErrorCode != kerr.UnknownTopicID.Code || p.RecordBatches != nil {
				t.Fatalf("round %d: partition of unknown topic: error %d, %d bytes", round, p.ErrorCode, len(p.RecordBatches))
			}
		}
		if n := lookups.Load(); n != 1 {
			t.Fatalf("round %d: %d upstream lookups for 100 unknown ids, want 1", round, n)
		}
	}
}

// TestUnwrapThrottled (point 9): 50 records, each under its own data key
// (max_uses 1), read through a decrypt interceptor allowing 5 unwraps a
// second: the partition gets KAFKA_STORAGE_ERROR (retriable) with no
// records, never plaintext, and strait_kms_unwrap_throttled_total counts the
// refusal; with leave-encrypted the records come back still encrypted. The
// refusal does not wait for the bound to free up, so it cannot stall.
func TestUnwrapThrottled(t *testing.T) {
	orders := []rules.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	k := newKeys(t)
	encCfg := k.Config(orders, "error", rules.Limits{})
	encCfg.DEK.MaxUses = 1
	vals := make([][]byte, 50)
	for i := range vals {
		vals[i] = []byte("salary " + strconv.Itoa(i))
	}
	sealed := seal(t, k.Chain(t, encrypt.New, encCfg), "orders", batch(t, kgo.NoCompression(), vals...))

	for _, mode := range []string{"error", "leave-encrypted"} {
		cfg := k.Config(orders, mode, rules.Limits{})
		cfg.DEK.UnwrapRate = 5
		reg := prometheus.NewRegistry()
		ic, err := decrypt.New(cfg, rules.Env{Metrics: reg, Providers: []kms.Provider{k.Prov}})
		straittest.Must(t, err, "decrypt")
		dec, err := interceptor.NewChain(ic)
		straittest.Must(t, err, "chain")
		p := fetch(t, dec, "orders", sealed).Topics[0].Partitions[0]
		switch mode {
		case "error":
			if p.ErrorCode != kerr.KafkaStorageError.Code || p.RecordBatches != nil {
				t.Errorf("%s: error %d with %d bytes, want KAFKA_STORAGE_ERROR and none", mode, p.ErrorCode, len(p.RecordBatches))
			}
		case "leave-encrypted":
			got, _ := values(t, p.RecordBatches)
			plain := 0
			for i, v := range got {
				if v == string(vals[i]) {
					plain++
				}
			}
			if p.ErrorCode != 0 || len(got) != 50 || plain > 5 {
				t.Errorf("%s: error %d, %d records, %d in clear: want 50, at most the 5 unwrapped in clear", mode, p.ErrorCode, len(got), plain)
			}
		}
		if n := straittest.Counter(t, reg, "strait_kms_unwrap_throttled_total"); n < 1 {
			t.Errorf("%s: strait_kms_unwrap_throttled_total = %v", mode, n)
		}
	}
}
