package encrypt_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/kms/local"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
	"github.com/strait-proxy/strait/proxy"
	"github.com/strait-proxy/strait/topicid"
)

// splitRig is a kfake cluster behind an encrypting Strait (topics big*,
// whole values) and a decrypting one.
type splitRig struct {
	cluster          *kfake.Cluster
	producer, reader *straittest.Strait
	metrics          *prometheus.Registry
}

func newSplitRig(t *testing.T, opts ...kfake.Opt) *splitRig {
	t.Helper()
	r := &splitRig{cluster: straittest.Cluster(t, opts...), metrics: prometheus.NewRegistry()}
	path := filepath.Join(t.TempDir(), "keys.json")
	straittest.Must(t, local.Generate(path, "big-kek"), "generate")
	var cfg rules.Config
	straittest.Must(t, json.Unmarshal(fmt.Appendf(nil, `{"kms": {"local": {"keyring": %q}}, "rules": [{"topics": ["big*"], "key_id": "big-kek"}]}`, path), &cfg), "config")
	pTopics, rTopics := topicid.New(), topicid.New()
	enc, err := encrypt.New(cfg, rules.Env{Metrics: r.metrics, Topics: pTopics})
	straittest.Must(t, err, "encrypt")
	dec, err := decrypt.New(cfg, rules.Env{Topics: rTopics})
	straittest.Must(t, err, "decrypt")
	r.producer = straittest.StartOpts(t, r.cluster.ListenAddrs(), proxy.Options{Interceptors: []*interceptor.Interceptor{enc}, Topics: pTopics}, nil)
	r.reader = straittest.StartOpts(t, r.cluster.ListenAddrs(), proxy.Options{Interceptors: []*interceptor.Interceptor{dec}, Topics: rTopics}, nil)
	return r
}

func (r *splitRig) splits(t *testing.T) float64 {
	return straittest.Counter(t, r.metrics, "strait_crypto_batches_split_total")
}

// bigValue is a 1 KiB value, half random bytes and half text, so that a
// compressed clear batch takes about half its records' size (and its
// encrypted form, which does not compress, twice that), with a marker that
// must never be stored in clear.
func bigValue(i int) []byte {
	v := fmt.Appendf(nil, "secret-%06d|", i)
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	for len(v) < 512 {
		v = binary.LittleEndian.AppendUint64(v, rng.Uint64())
	}
	for len(v) < 1024 {
		v = append(v, "the quick brown fox jumps over the lazy dog "...)
	}
	return v[:1024]
}

// checkStored reads topic directly from kfake: exactly n records (the end
// offset is n plus markers), n distinct keys, every value encrypted; and
// through the decrypting Strait, every value back byte for byte.
func (r *splitRig) checkStored(t *testing.T, ctx context.Context, topic string, n int, markers int64) {
	t.Helper()
	direct := client(t, r.cluster.ListenAddrs()[0])
	ends, err := kadm.NewClient(direct).ListEndOffsets(ctx, topic)
	straittest.Must(t, err, "end offsets")
	var end int64
	ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
	if end != int64(n)+markers {
		t.Fatalf("%s holds offsets up to %d, want %d records + %d markers: records lost or stored twice", topic, end, n, markers)
	}
	keys := map[string]bool{}
	for _, g := range consume(t, ctx, r.cluster.ListenAddrs()[0], topic, n, kgo.FetchIsolationLevel(kgo.ReadCommitted())) {
		keys[string(g.Key)] = true
		if _, ok := header(g, envelope.HeaderKey); !ok || bytes.Contains(g.Value, []byte("secret-")) {
			t.Fatalf("%s: record %s stored in clear", topic, g.Key)
		}
	}
	if len(keys) != n {
		t.Fatalf("%s: %d distinct keys stored, want %d", topic, len(keys), n)
	}
	for _, g := range consume(t, ctx, r.reader.Bootstrap, topic, n, kgo.FetchIsolationLevel(kgo.ReadCommitted())) {
		i, err := strconv.Atoi(string(g.Key[1:]))
		straittest.Must(t, err, "key %q", g.Key)
		if !bytes.Equal(g.Value, bigValue(i)) {
			t.Fatalf("%s: record %s decrypts to %.40q", topic, g.Key, g.Value)
		}
	}
}

// produceMany produces n 1 KiB records as fast as the client takes them
// and returns how many failed.
func produceMany(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, n int) (failed int64, first error) {
	t.Helper()
	var nfailed atomic.Int64
	var firstErr atomic.Value
	for i := range n {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%06d", i), Value: bigValue(i)}, func(_ *kgo.Record, err error) {
			if err != nil {
				nfailed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	straittest.Must(t, cl.Flush(ctx), "flush")
	if e, ok := firstErr.Load().(error); ok {
		first = e
	}
	return nfailed.Load(), first
}

// TestSplitFranzGoDefaultBatch: franz-go at its default batch size
// (1,000,012 bytes) filling batches of 1 KiB records through an encrypting
// Strait, idempotent and transactional, every codec: encryption grows the
// batches past the broker's message.max.bytes, Strait splits them, and no
// record fails, none is stored twice, none in clear.
func TestSplitFranzGoDefaultBatch(t *testing.T) {
	codecs := []struct {
		name  string
		codec kgo.CompressionCodec
	}{{"none", kgo.NoCompression()}, {"gzip", kgo.GzipCompression()}, {"snappy", kgo.SnappyCompression()}, {"lz4", kgo.Lz4Compression()}, {"zstd", kgo.ZstdCompression()}}
	for _, c := range codecs {
		for _, txn := range []bool{false, true} {
			name := c.name + "/idempotent"
			if txn {
				name = c.name + "/transactional"
			}
			t.Run(name, func(t *testing.T) {
				r := newSplitRig(t, kfake.SeedTopics(1, "big"))
				ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
				defer cancel()
				opts := []kgo.Opt{kgo.ProducerBatchCompression(c.codec), kgo.ProducerLinger(50 * time.Millisecond)}
				if txn {
					opts = append(opts, kgo.TransactionalID("split-"+c.name))
				}
				cl := client(t, r.producer.Bootstrap, opts...)
				const n = 4000
				var markers int64
				if txn {
					straittest.Must(t, cl.BeginTransaction(), "begin")
				}
				failed, first := produceMany(t, ctx, cl, "big", n)
				if txn {
					straittest.Must(t, cl.EndTransaction(ctx, kgo.TryCommit), "commit")
					markers = 1
				}
				if failed != 0 {
					t.Fatalf("%d of %d records failed; first: %v", failed, n, first)
				}
				if r.splits(t) == 0 {
					t.Fatal("no batch was split: the test did not reach the limit")
				}
				r.checkStored(t, ctx, "big", n, markers)
				t.Logf("%d records, %v batches split", n, r.splits(t))
			})
		}
	}
}

// TestSplitLearnsTopicLimit: a topic whose max.message.bytes is below the
// broker default (500,000) takes batches of 480,000 bytes in clear; Strait
// learns the topic's limit (DescribeConfigs) and splits the encrypted
// batches under it. With the fallback limit it would not split them, and
// the broker would refuse them.
func TestSplitLearnsTopicLimit(t *testing.T) {
	r := newSplitRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	adm := kadm.NewClient(client(t, r.cluster.ListenAddrs()[0]))
	limit := "500000"
	_, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &limit}, "big-small")
	straittest.Must(t, err, "create topic")
	cl := client(t, r.producer.Bootstrap, kgo.ProducerBatchMaxBytes(480000), kgo.ProducerLinger(50*time.Millisecond))
	const n = 2000
	failed, first := produceMany(t, ctx, cl, "big-small", n)
	if failed != 0 {
		t.Fatalf("%d of %d records failed; first: %v", failed, n, first)
	}
	if r.splits(t) == 0 {
		t.Fatal("no batch was split")
	}
	r.checkStored(t, ctx, "big-small", n, 0)
}

// plainBatch builds an idempotent magic 2 batch of n 1 KiB records with kmsg.
func plainBatch(pid int64, epoch int16, n int) []byte { return seqBatch(pid, epoch, 0, n, false) }

// seqBatch builds an idempotent (or transactional) batch of records from..from+n
// with base sequence from.
func seqBatch(pid int64, epoch int16, from, n int, txn bool) []byte {
	var recs []byte
	for i := range n {
		rec := kmsg.Record{OffsetDelta: int32(i), Key: fmt.Appendf(nil, "k%06d", from+i), Value: bigValue(from + i)}
		rec.Length = int32(len(rec.AppendTo(nil)) - 1)
		recs = rec.AppendTo(recs)
	}
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{
		Magic: 2, LastOffsetDelta: int32(n - 1), FirstTimestamp: now, MaxTimestamp: now,
		ProducerID: pid, ProducerEpoch: epoch, FirstSequence: int32(from), NumRecords: int32(n), Records: recs,
		PartitionLeaderEpoch: -1,
	}
	if txn {
		b.Attributes |= 0x10
	}
	b.Length = int32(49 + len(recs))
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// TestSplitRetryStoresOnce: the identical idempotent Produce sent twice (a
// client retry after a lost response) is split the same way both times, so
// the broker recognises each part of the second as a duplicate: the
// records are stored once and both answers carry the same base offset.
func TestSplitRetryStoresOnce(t *testing.T) {
	r := newSplitRig(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "big")) // a raw Produce goes to the leader
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := client(t, r.producer.Bootstrap)
	ipid := kmsg.NewPtrInitProducerIDRequest()
	ipid.TransactionTimeoutMillis = 60000
	iresp, err := ipid.RequestWith(ctx, cl)
	straittest.Must(t, err, "init producer id")
	straittest.Must(t, kerr.ErrorForCode(iresp.ErrorCode), "init producer id")
	// 950 records of 1 KiB: about 990 KB in clear (the broker takes it),
	// about 1.1 MB encrypted (it would not).
	const n = 950
	batch := plainBatch(iresp.ProducerID, iresp.ProducerEpoch, n)
	if len(batch) > 1048588 {
		t.Fatalf("the clear batch (%d bytes) would not fit the broker's limit", len(batch))
	}
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr("big")
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	straittest.Must(t, err, "metadata")
	for attempt := range 2 {
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 10000
		tp := kmsg.NewProduceRequestTopic()
		tp.Topic, tp.TopicID = "big", mresp.Topics[0].TopicID // Produce v13+ names topics by id
		p := kmsg.NewProduceRequestTopicPartition()
		p.Partition, p.Records = 0, batch
		tp.Partitions = append(tp.Partitions, p)
		req.Topics = append(req.Topics, tp)
		resp, err := req.RequestWith(ctx, cl)
		straittest.Must(t, err, "produce attempt %d", attempt)
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			t.Fatalf("attempt %d: response %+v does not answer the one partition once", attempt, resp.Topics)
		}
		rp := resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(rp.ErrorCode); err != nil || rp.BaseOffset != 0 {
			t.Fatalf("attempt %d: error %v, base offset %d; want success at offset 0", attempt, err, rp.BaseOffset)
		}
	}
	if got := r.splits(t); got != 2 {
		t.Fatalf("%v batches split, want both attempts split", got)
	}
	r.checkStored(t, ctx, "big", n, 0)
}

// TestSplitRecordTooLargeAlone: a record that fits the broker's limit in
// clear but not once encrypted, even alone, gets MESSAGE_TOO_LARGE (it
// cannot be split); a large record that fits encrypted goes through.
func TestSplitRecordTooLargeAlone(t *testing.T) {
	r := newSplitRig(t, kfake.SeedTopics(1, "big"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := client(t, r.producer.Bootstrap, kgo.ProducerBatchMaxBytes(2<<20), kgo.RecordRetries(1))
	err := cl.ProduceSync(ctx, &kgo.Record{Topic: "big", Value: bytes.Repeat([]byte{'x'}, 1048500)}).FirstErr()
	if !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("err %v, want MESSAGE_TOO_LARGE for a record that cannot fit encrypted", err)
	}
	straittest.Must(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "big", Value: bytes.Repeat([]byte{'x'}, 1000000)}).FirstErr(), "a 1 MB record")
}

// TestSplitRetryPastDedupWindow: the broker deduplicates against the last 5
// batches of a producer and partition, and each part of a split batch is
// one. Three split batches later, a retry of the first finds its first
// part forgotten (OUT_OF_ORDER_SEQUENCE_NUMBER from the broker); Strait
// asks the broker for the producer's last sequence (DescribeProducers),
// sees the part stored, and answers DUPLICATE_SEQUENCE_NUMBER (success to
// Kafka clients) instead of an error that would make the client resend the
// records under a new epoch. kfake reports only producers in a transaction
// in DescribeProducers, so this runs transactionally.
func TestSplitRetryPastDedupWindow(t *testing.T) {
	r := newSplitRig(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "big"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := client(t, r.producer.Bootstrap)
	txnID := "split-evict"
	ipid := kmsg.NewPtrInitProducerIDRequest()
	ipid.TransactionalID, ipid.TransactionTimeoutMillis = &txnID, 60000
	iresp, err := ipid.RequestWith(ctx, cl)
	straittest.Must(t, err, "init producer id")
	straittest.Must(t, kerr.ErrorForCode(iresp.ErrorCode), "init producer id")
	add := kmsg.NewPtrAddPartitionsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch = txnID, iresp.ProducerID, iresp.ProducerEpoch
	at := kmsg.NewAddPartitionsToTxnRequestTopic()
	at.Topic, at.Partitions = "big", []int32{0}
	add.Topics = append(add.Topics, at)
	_, err = add.RequestWith(ctx, cl)
	straittest.Must(t, err, "add partitions to txn")
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr("big")
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	straittest.Must(t, err, "metadata")
	produce := func(from int) kmsg.ProduceResponseTopicPartition {
		req := kmsg.NewPtrProduceRequest()
		req.TransactionID, req.Acks, req.TimeoutMillis = &txnID, -1, 10000
		tp := kmsg.NewProduceRequestTopic()
		tp.Topic, tp.TopicID = "big", mresp.Topics[0].TopicID
		p := kmsg.NewProduceRequestTopicPartition()
		p.Partition, p.Records = 0, seqBatch(iresp.ProducerID, iresp.ProducerEpoch, from, 950, true)
		tp.Partitions = append(tp.Partitions, p)
		req.Topics = append(req.Topics, tp)
		resp, err := req.RequestWith(ctx, cl)
		straittest.Must(t, err, "produce from %d", from)
		return resp.Topics[0].Partitions[0]
	}
	for _, from := range []int{0, 950, 1900} {
		if rp := produce(from); rp.ErrorCode != 0 {
			t.Fatalf("batch from %d: %v", from, kerr.ErrorForCode(rp.ErrorCode))
		}
	}
	if got := r.splits(t); got != 3 {
		t.Fatalf("%v batches split, want 3", got)
	}
	rp := produce(0) // the retry
	if rp.ErrorCode != kerr.DuplicateSequenceNumber.Code {
		t.Fatalf("retry of the first batch: %v, want DUPLICATE_SEQUENCE_NUMBER (stored before)", kerr.ErrorForCode(rp.ErrorCode))
	}
	end := kmsg.NewPtrEndTxnRequest()
	end.TransactionalID, end.ProducerID, end.ProducerEpoch, end.Commit = txnID, iresp.ProducerID, iresp.ProducerEpoch, true
	eresp, err := end.RequestWith(ctx, cl)
	straittest.Must(t, err, "end txn")
	straittest.Must(t, kerr.ErrorForCode(eresp.ErrorCode), "end txn")
	r.checkStored(t, ctx, "big", 2850, 1)
}
