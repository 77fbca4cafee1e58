// Package cryptotest is what the tests of the encrypt and decrypt
// interceptors share: keyrings, chains built from a rules.Config, record
// batches, one Produce or Fetch run through a chain, and a kfake cluster
// behind an encrypting and a decrypting Strait. Tests only.
package cryptotest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/kms"
	"github.com/strait-proxy/strait/crypto/kms/local"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/proxy"
	"github.com/strait-proxy/strait/records"
	"github.com/strait-proxy/strait/topicid"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Keys is one keyring holding orders-kek and hr-kek, from which encrypt and
// decrypt chains are built.
type Keys struct {
	Path string
	Prov kms.Provider
}

// NewKeys generates the keyring in a temporary directory.
func NewKeys(t *testing.T) *Keys {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	straittest.Must(t, local.Generate(path, "orders-kek"), "generate")
	straittest.Must(t, local.Generate(path, "hr-kek"), "generate")
	prov, err := local.Load(path)
	straittest.Must(t, err, "keyring")
	return &Keys{path, prov}
}

// Config is a configuration with the keyring as its only key store.
func (k *Keys) Config(rs []rules.Rule, onErr string, lim rules.Limits) rules.Config {
	return rules.Config{KMS: rules.KMS{Local: &rules.LocalKMS{Keyring: k.Path}}, Rules: rs, OnDecryptError: onErr, Limits: lim}
}

// Chain is a chain of the one interceptor mk (encrypt.New, decrypt.New)
// builds from cfg.
func (k *Keys) Chain(t *testing.T, mk func(rules.Config, rules.Env) (*interceptor.Interceptor, error), cfg rules.Config) *interceptor.Chain {
	t.Helper()
	ic, err := mk(cfg, rules.Env{Metrics: prometheus.NewRegistry(), Providers: []kms.Provider{k.Prov}})
	straittest.Must(t, err, "interceptor")
	ch, err := interceptor.NewChain(ic)
	straittest.Must(t, err, "chain")
	return ch
}

// Batch encodes a magic 2 batch of values with codec (kgo's compressors),
// offset deltas 0..n-1.
func Batch(t *testing.T, codec kgo.CompressionCodec, values ...[]byte) []byte {
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
	return FrameBatch(attrs, body, int32(len(values)), int32(len(values)-1))
}

// FrameBatch frames body (n records, already encoded and compressed as
// attrs says) as a batch with a correct length and CRC.
func FrameBatch(attrs int16, body []byte, n, lastDelta int32) []byte {
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1, Magic: 2, Attributes: attrs, LastOffsetDelta: lastDelta,
		FirstTimestamp: 1_795_000_000_000, MaxTimestamp: 1_795_000_000_000,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: n, Records: body,
	}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	FixCRC(raw)
	return raw
}

// FixCRC recomputes the CRC of one batch.
func FixCRC(raw []byte) { binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], castagnoli)) }

// Bomb is issue 12's batch: 400,000 empty records in ~345 bytes of zstd;
// with honest (increasing) offset deltas the same records take ~330 KB.
func Bomb(t *testing.T, honest bool) []byte {
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
	return FrameBatch(4, zw.EncodeAll(body, nil), n, n-1)
}

// ProduceRequest is a Produce v9 request (topics by name) with partition 0
// of topic holding records.
func ProduceRequest(topic string, records []byte) (*kmsg.ProduceRequest, *kmsg.ProduceRequestTopicPartition) {
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

// Seal runs the encrypt chain over a Produce v9 request of one partition
// and returns its records, which must have been encrypted.
func Seal(t *testing.T, enc *interceptor.Chain, topic string, in []byte) []byte {
	t.Helper()
	req, p := ProduceRequest(topic, in)
	x := &interceptor.Exchange{Conn: &interceptor.Conn{}, Key: 0, Version: 9, Request: req}
	if err := enc.Request(context.Background(), x); err != nil || x.Response != nil || !x.RequestModified() {
		t.Fatalf("encrypt: err %v, answered %v, modified %v", err, x.Response != nil, x.RequestModified())
	}
	return bytes.Clone(p.Records)
}

// Fetch runs the decrypt chain over a Fetch v12 response of topic with one
// partition per element of parts (partition i holds parts[i]).
func Fetch(t *testing.T, dec *interceptor.Chain, topic string, parts ...[]byte) *kmsg.FetchResponse {
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

// Values returns the values of every record of every complete batch, and
// whether any carries the strait.enc header.
func Values(t *testing.T, b []byte) (vals []string, encrypted bool) {
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

// FlakyKMS wraps a real provider and can be switched off, as a KMS outage.
type FlakyKMS struct {
	kms.Provider
	Down atomic.Bool
}

// GenerateDataKey fails while Down.
func (f *FlakyKMS) GenerateDataKey(ctx context.Context, id string) (kms.DataKey, error) {
	if f.Down.Load() {
		return kms.DataKey{}, fmt.Errorf("test outage: %w", kms.ErrUnavailable)
	}
	return f.Provider.GenerateDataKey(ctx, id)
}

// Decrypt fails while Down.
func (f *FlakyKMS) Decrypt(ctx context.Context, id string, w []byte) ([]byte, error) {
	if f.Down.Load() {
		return nil, fmt.Errorf("test outage: %w", kms.ErrUnavailable)
	}
	return f.Provider.Decrypt(ctx, id, w)
}

// Rig is a kfake cluster (topics customers, payments, plain; 2 partitions)
// behind an encrypting Strait (Producer) and a decrypting one (Reader),
// each with its own metrics and topic-id map, sharing one FlakyKMS.
type Rig struct {
	Cluster            *kfake.Cluster
	Producer, Reader   *straittest.Strait
	PMetrics, RMetrics *prometheus.Registry
	KMS                *FlakyKMS
}

// Keyring generates a keyring holding customers-kek and payments-kek.
func Keyring(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "keys.json")
	straittest.Must(t, local.Generate(path, "customers-kek"), "generate")
	straittest.Must(t, local.Generate(path, "payments-kek"), "generate")
	return path
}

const rigRules = `{
  "kms": {"local": {"keyring": "%s"}},
  "dek": {"max_uses": %d},
  "on_decrypt_error": %q,
  "rules": [
    {"topics": ["customers"], "key_id": "customers-kek", "format": "json", "fields": ["$.ssn_id", "$.account"]},
    {"topics": ["pay*"], "key_id": "payments-kek", "encrypt_key": true}
  ]
}`

// NewRig starts a Rig: JSON fields of customers and whole values (and
// keys) of pay* are encrypted; maxUses bounds a data key's uses (0: the
// default) and onErr is on_decrypt_error.
func NewRig(t *testing.T, maxUses int, onErr string) *Rig {
	t.Helper()
	r := &Rig{Cluster: straittest.Cluster(t, kfake.SeedTopics(2, "customers", "payments", "plain"))}
	path := Keyring(t)
	var cfg rules.Config
	straittest.Must(t, json.Unmarshal(fmt.Appendf(nil, rigRules, path, maxUses, onErr), &cfg), "config")
	prov, err := local.Load(path)
	straittest.Must(t, err, "keyring")
	r.KMS = &FlakyKMS{Provider: prov}
	// Each Strait has its own topic-id map, fed by the metadata it proxies
	// and by its own lookups: encryption picks rules by topic name.
	pTopics, rTopics := topicid.New(), topicid.New()
	r.PMetrics, r.RMetrics = prometheus.NewRegistry(), prometheus.NewRegistry()
	enc, err := encrypt.New(cfg, rules.Env{Metrics: r.PMetrics, Topics: pTopics, Providers: []kms.Provider{r.KMS}})
	straittest.Must(t, err, "encrypt")
	dec, err := decrypt.New(cfg, rules.Env{Metrics: r.RMetrics, Topics: rTopics, Providers: []kms.Provider{r.KMS}})
	straittest.Must(t, err, "decrypt")
	r.Producer = straittest.StartOpts(t, r.Cluster.ListenAddrs(), proxy.Options{Interceptors: []*interceptor.Interceptor{enc}, Topics: pTopics}, nil)
	r.Reader = straittest.StartOpts(t, r.Cluster.ListenAddrs(), proxy.Options{Interceptors: []*interceptor.Interceptor{dec}, Topics: rTopics}, nil)
	return r
}

// Client is a franz-go client of seed, closed at the end of the test.
func Client(t *testing.T, seed string, opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seed)}, opts...)...)
	straittest.Must(t, err, "client")
	t.Cleanup(cl.Close)
	return cl
}

// Consume reads n records of topic from the start.
func Consume(t *testing.T, ctx context.Context, seed, topic string, n int, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl := Client(t, seed, append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume %s after %d/%d: %v", topic, len(out), n, err)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// Customer is a JSON customer whose ssn_id and account are the secrets.
func Customer(i int) []byte {
	return fmt.Appendf(nil, `{"name":"Joe Example %d","address":"123 Main St","ssn_id":"123-45-%04d","account":"6789%08d","balance":%d.5,"tags":["a","b"]}`, i, i, i, i)
}
