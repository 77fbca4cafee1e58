package encrypt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"hash/crc32"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/crypto/kms/local"
	"github.com/strait-proxy/strait/crypto/kms/vaulttransit"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/records"
	"github.com/strait-proxy/strait/topicid"
)

// Tests of issue 12 points 2, 5 and 6, run through interceptor chains as the
// proxy runs them, with the local keyring.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// keyset is one keyring holding orders-kek and hr-kek, from which encrypt and
// decrypt chains are built.
type keyset struct {
	path string
	prov kms.Provider
}

func newKeys(t *testing.T) *keyset {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	straittest.Must(t, local.Generate(path, "orders-kek"), "generate")
	straittest.Must(t, local.Generate(path, "hr-kek"), "generate")
	prov, err := local.Load(path)
	straittest.Must(t, err, "keyring")
	return &keyset{path, prov}
}

func (k *keyset) config(rules []encrypt.Rule, onErr string, lim encrypt.Limits) encrypt.Config {
	return encrypt.Config{KMS: encrypt.KMS{Local: &encrypt.LocalKMS{Keyring: k.path}}, Rules: rules, OnDecryptError: onErr, Limits: lim}
}

func (k *keyset) chain(t *testing.T, mk func(encrypt.Config, encrypt.Env) (*interceptor.Interceptor, error), cfg encrypt.Config) *interceptor.Chain {
	t.Helper()
	ic, err := mk(cfg, encrypt.Env{Metrics: prometheus.NewRegistry(), Providers: []kms.Provider{k.prov}})
	straittest.Must(t, err, "interceptor")
	ch, err := interceptor.NewChain(ic)
	straittest.Must(t, err, "chain")
	return ch
}

// batch encodes a magic 2 batch of values with codec (kgo's compressors),
// offset deltas 0..n-1.
func batch(t *testing.T, codec kgo.CompressionCodec, values ...[]byte) []byte {
	t.Helper()
	var body []byte
	for i, v := range values {
		r := kmsg.Record{TimestampDelta64: int64(i), OffsetDelta: int32(i), Value: v}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		body = r.AppendTo(body)
	}
	attrs := int16(0)
	if c, err := kgo.DefaultCompressor(codec); err != nil {
		t.Fatal(err)
	} else if c != nil {
		out, used := c.Compress(new(bytes.Buffer), body)
		body, attrs = append([]byte(nil), out...), int16(used)
	}
	return frameBatch(attrs, body, int32(len(values)), int32(len(values)-1))
}

func frameBatch(attrs int16, body []byte, n, lastDelta int32) []byte {
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1, Magic: 2, Attributes: attrs, LastOffsetDelta: lastDelta,
		FirstTimestamp: 1_795_000_000_000, MaxTimestamp: 1_795_000_000_000,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: n, Records: body,
	}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	fixCRC(raw)
	return raw
}

func fixCRC(raw []byte) { binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], castagnoli)) }

// produceRequest is a Produce v9 request (topics by name) with partition 0
// of topic holding records.
func produceRequest(topic string, records []byte) (*kmsg.ProduceRequest, *kmsg.ProduceRequestTopicPartition) {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(9)
	req.Acks, req.TimeoutMillis = -1, 30000
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = topic
	p := kmsg.NewProduceRequestTopicPartition()
	p.Records = records
	pt.Partitions = append(pt.Partitions, p)
	req.Topics = append(req.Topics, pt)
	return req, &req.Topics[0].Partitions[0]
}

// seal runs the encrypt chain over a Produce v9 request of one partition
// and returns its records, which must have been encrypted.
func seal(t *testing.T, enc *interceptor.Chain, topic string, in []byte) []byte {
	t.Helper()
	req, p := produceRequest(topic, in)
	x := &interceptor.Exchange{Conn: &interceptor.Conn{}, Key: 0, Version: 9, Request: req}
	if err := enc.Request(context.Background(), x); err != nil || x.Response != nil || !x.RequestModified() {
		t.Fatalf("encrypt: err %v, answered %v, modified %v", err, x.Response != nil, x.RequestModified())
	}
	return bytes.Clone(p.Records)
}

// fetch runs the decrypt chain over a Fetch v12 response of topic with one
// partition per element of parts (partition i holds parts[i]).
func fetch(t *testing.T, dec *interceptor.Chain, topic string, parts ...[]byte) *kmsg.FetchResponse {
	t.Helper()
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(12)
	ft := kmsg.NewFetchResponseTopic()
	ft.Topic = topic
	for i, b := range parts {
		p := kmsg.NewFetchResponseTopicPartition()
		p.Partition, p.HighWatermark, p.RecordBatches = int32(i), 100, b
		ft.Partitions = append(ft.Partitions, p)
	}
	resp.Topics = append(resp.Topics, ft)
	x := &interceptor.Exchange{Conn: &interceptor.Conn{}, Key: 1, Version: 12, Response: resp}
	if err := dec.Response(context.Background(), x); err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	return resp
}

// values returns the values of every record of every complete batch, and
// whether any carries the strait.enc header.
func values(t *testing.T, b []byte) (vals []string, encrypted bool) {
	t.Helper()
	err := records.Walk(b, func(bt *records.Batch) error {
		return bt.Records(func(r *records.Record) error {
			vals = append(vals, string(r.Value))
			if _, ok := r.Header(envelope.HeaderKey); ok {
				encrypted = true
			}
			return nil
		})
	})
	straittest.Must(t, err, "walk")
	return vals, encrypted
}

// TestDecryptOnlyWhatARuleCovers (point 5): with rules naming only orders,
// an encrypted record of hr-salaries comes back as ciphertext, untouched;
// with a rule for hr-salaries it decrypts (the record is decryptable, so
// only the rule makes the difference).
func TestDecryptOnlyWhatARuleCovers(t *testing.T) {
	hr := []encrypt.Rule{{Topics: []string{"hr-salaries"}, KeyID: "hr-kek"}}
	orders := []encrypt.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	k := newKeys(t)
	enc := k.chain(t, encrypt.NewEncrypt, k.config(hr, "error", encrypt.Limits{}))
	sealed := seal(t, enc, "hr-salaries", batch(t, kgo.NoCompression(), []byte("alice: 120000")))

	dec := k.chain(t, encrypt.NewDecrypt, k.config(orders, "error", encrypt.Limits{}))
	p := fetch(t, dec, "hr-salaries", sealed).Topics[0].Partitions[0]
	if p.ErrorCode != 0 || !bytes.Equal(p.RecordBatches, sealed) {
		t.Fatalf("uncovered topic: error %d, batches changed %v", p.ErrorCode, !bytes.Equal(p.RecordBatches, sealed))
	}
	if vals, isEnc := values(t, p.RecordBatches); !isEnc || vals[0] == "alice: 120000" {
		t.Fatalf("uncovered topic: record %q (strait.enc %v), want ciphertext", vals, isEnc)
	}

	decHR := k.chain(t, encrypt.NewDecrypt, k.config(append(orders, hr...), "error", encrypt.Limits{}))
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
	orders := []encrypt.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	lim := encrypt.Limits{MaxDecompressedBytes: 64 << 10}
	k := newKeys(t)
	enc := k.chain(t, encrypt.NewEncrypt, k.config(orders, "error", lim))
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

	dec := k.chain(t, encrypt.NewDecrypt, k.config(orders, "error", lim))
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

	leave := k.chain(t, encrypt.NewDecrypt, k.config(orders, "leave-encrypted", lim))
	resp = fetch(t, leave, "orders", parts[:3]...)
	for i, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != 0 || !bytes.Equal(p.RecordBatches, parts[i]) {
			t.Errorf("leave-encrypted, partition %d: error %d, batches as sent %v", i, p.ErrorCode, bytes.Equal(p.RecordBatches, parts[i]))
		}
	}
}

// bomb is issue 12's batch: 400,000 empty records in ~345 bytes of zstd;
// with honest (increasing) offset deltas the same records take ~330 KB.
func bomb(t *testing.T, honest bool) []byte {
	const n = 400_000
	body := make([]byte, 0, 8*n)
	for i := range n {
		r := kmsg.Record{Value: []byte{}}
		if honest {
			r.OffsetDelta = int32(i)
		}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		body = r.AppendTo(body)
	}
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	straittest.Must(t, err, "zstd")
	defer zw.Close()
	return frameBatch(4, zw.EncodeAll(body, nil), n, n-1)
}

// TestProduceBombsRefusedCheaply (point 2): a Produce request whose two
// partitions hold the two bombs is answered by Strait with an error for
// each, and refusing them allocates little (the bombs cost 145 MiB and 291
// MiB of heap before); a third partition in another request goes through.
func TestProduceBombsRefusedCheaply(t *testing.T) {
	orders := []encrypt.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	k := newKeys(t)
	enc := k.chain(t, encrypt.NewEncrypt, k.config(orders, "error", encrypt.Limits{}))
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

	orders := []encrypt.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	k := newKeys(t)
	sealed := seal(t, k.chain(t, encrypt.NewEncrypt, k.config(orders, "error", encrypt.Limits{})), "orders", batch(t, kgo.NoCompression(), []byte("secret")))
	ic, err := encrypt.NewDecrypt(k.config(orders, "error", encrypt.Limits{}), encrypt.Env{Metrics: prometheus.NewRegistry(), Topics: names, Providers: []kms.Provider{k.prov}})
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
	orders := []encrypt.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	k := newKeys(t)
	encCfg := k.config(orders, "error", encrypt.Limits{})
	encCfg.DEK.MaxUses = 1
	vals := make([][]byte, 50)
	for i := range vals {
		vals[i] = []byte("salary " + strconv.Itoa(i))
	}
	sealed := seal(t, k.chain(t, encrypt.NewEncrypt, encCfg), "orders", batch(t, kgo.NoCompression(), vals...))

	for _, mode := range []string{"error", "leave-encrypted"} {
		cfg := k.config(orders, mode, encrypt.Limits{})
		cfg.DEK.UnwrapRate = 5
		reg := prometheus.NewRegistry()
		ic, err := encrypt.NewDecrypt(cfg, encrypt.Env{Metrics: reg, Providers: []kms.Provider{k.prov}})
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

// TestStartupWarnings (point 10): a Vault key store with TLS verification
// off and an inline token starts, and says so at start: one warning each.
func TestStartupWarnings(t *testing.T) {
	vaultEnv(t)
	cfg := encrypt.Config{
		KMS: encrypt.KMS{Vault: &vaulttransit.Config{
			Address: "https://127.0.0.1:1", // New does not contact Vault
			Auth:    vaulttransit.AuthConfig{Token: "s.inline"},
			TLS:     vaulttransit.TLSConfig{InsecureSkipVerify: true},
		}},
		Rules: []encrypt.Rule{{Topics: []string{"orders"}, KeyID: "strait"}},
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ic, err := encrypt.NewDecrypt(cfg, encrypt.Env{Logger: log, Metrics: prometheus.NewRegistry()})
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
	orders := []encrypt.Rule{{Topics: []string{"orders"}, KeyID: "orders-kek"}}
	k := newKeys(t)
	vals := make([][]byte, 8)
	for i := range vals {
		vals[i] = bytes.Repeat([]byte{'a' + byte(i)}, 1000)
	}
	in := batch(t, kgo.NoCompression(), vals...)
	sealed := seal(t, k.chain(t, encrypt.NewEncrypt, k.config(orders, "error", encrypt.Limits{})), "orders", in)

	tight := encrypt.Limits{MaxBatchBytes: 1 << 10}
	req, _ := produceRequest("orders", in)
	x := &interceptor.Exchange{Conn: &interceptor.Conn{}, Key: 0, Version: 9, Request: req}
	straittest.Must(t, k.chain(t, encrypt.NewEncrypt, k.config(orders, "error", tight)).Request(context.Background(), x), "encrypt")
	if resp, ok := x.Response.(*kmsg.ProduceResponse); !ok || resp.Topics[0].Partitions[0].ErrorCode != kerr.InvalidRecord.Code {
		t.Fatalf("produce over max_batch_bytes was not refused with INVALID_RECORD")
	}
	p := fetch(t, k.chain(t, encrypt.NewDecrypt, k.config(orders, "error", tight)), "orders", sealed).Topics[0].Partitions[0]
	if got, _ := values(t, p.RecordBatches); p.ErrorCode != 0 || len(got) != 8 || got[7] != string(vals[7]) {
		t.Fatalf("fetch under a tight max_batch_bytes: error %d, %d records", p.ErrorCode, len(got))
	}
}
