package records

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var testCodecs = []struct {
	name string
	cc   kgo.CompressionCodec
	attr int16
}{
	{"none", kgo.NoCompression(), 0},
	{"gzip", kgo.GzipCompression(), 1},
	{"snappy", kgo.SnappyCompression(), 2},
	{"lz4", kgo.Lz4Compression(), 3},
	{"zstd", kgo.ZstdCompression(), 4},
}

var testModes = []string{"plain", "idempotent", "txn"}

const (
	perRound = 10
	rounds   = 2
	total    = perRound * rounds
)

// testValue is record i's value: compressible, so kgo really compresses;
// record 2 and 3 are null (tombstones), record 7 is empty.
func testValue(i int) []byte {
	switch i {
	case 2, 3:
		return nil
	case 7:
		return []byte{}
	}
	return []byte(fmt.Sprintf("value-%02d-%s", i, strings.Repeat("abcdefgh", 16)))
}

func testRecord(topic string, i int) *kgo.Record {
	r := &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k%02d", i)), Value: testValue(i)}
	if i == 5 {
		r.Key = nil
	}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: "idx", Value: []byte(fmt.Sprintf("%02d", i))})
	if i%3 == 0 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "h3", Value: []byte("three")})
	}
	return r
}

func idxOf(t testing.TB, hs []kmsg.Header) int {
	for _, h := range hs {
		if h.Key == "idx" {
			var i int
			fmt.Sscanf(string(h.Value), "%d", &i)
			return i
		}
	}
	t.Fatalf("record without idx header")
	return -1
}

// shouldChange: the even records of the first round; the second round's
// batch stays unchanged.
func shouldChange(i int) bool { return i < perRound && i%2 == 0 }

// testFn appends "!" to the value (null stays null) and adds a header.
func testFn(r *Record) (bool, error) {
	v, ok := r.Header("idx")
	if !ok {
		return false, errors.New("no idx header")
	}
	var i int
	fmt.Sscanf(string(v), "%d", &i)
	if !shouldChange(i) {
		return false, nil
	}
	if r.Value != nil {
		r.Value = append(bytes.Clone(r.Value), '!')
	}
	r.AddHeader("strait", []byte("x"))
	return true, nil
}

func expectedValue(i int) []byte {
	v := testValue(i)
	if shouldChange(i) && v != nil {
		v = append(v, '!')
	}
	return v
}

func newCluster(t *testing.T, topics ...string) (*kfake.Cluster, []string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()
}

func topicID(t *testing.T, cl *kgo.Client, topic string) [16]byte {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("metadata for %s: %+v", topic, resp.Topics)
	}
	return resp.Topics[0].TopicID
}

// fetchRaw fetches partition 0 of topic from offset 0 to the high
// watermark with raw kmsg.FetchRequests (read_uncommitted, so control
// batches come too) and returns the concatenated record batches.
func fetchRaw(t *testing.T, cl *kgo.Client, topic string) []byte {
	t.Helper()
	id := topicID(t, cl, topic)
	var all []byte
	var offset int64
	for range 20 {
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis = 50
		req.MaxBytes = 50 << 20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, id
		p := kmsg.NewFetchRequestTopicPartition()
		p.FetchOffset = offset
		p.PartitionMaxBytes = 50 << 20
		rt.Partitions = append(rt.Partitions, p)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(context.Background(), cl)
		if err != nil {
			t.Fatal(err)
		}
		rp := resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
			t.Fatalf("fetch: %v", err)
		}
		all = append(all, rp.RecordBatches...)
		if err := Walk(rp.RecordBatches, func(b *Batch) error {
			if !b.Partial && b.Magic == 2 {
				offset = b.Header.FirstOffset + int64(b.Header.LastOffsetDelta) + 1
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if offset >= rp.HighWatermark {
			return all
		}
	}
	t.Fatalf("could not fetch to the high watermark")
	return nil
}

func produceRounds(t *testing.T, addrs []string, topic, mode string, cc kgo.CompressionCodec) {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ProducerBatchCompression(cc), kgo.ProducerLinger(0)}
	switch mode {
	case "plain":
		opts = append(opts, kgo.DisableIdempotentWrite(), kgo.RequiredAcks(kgo.AllISRAcks()))
	case "txn":
		opts = append(opts, kgo.TransactionalID("txn-"+topic))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for round := range rounds {
		var recs []*kgo.Record
		for i := round * perRound; i < (round+1)*perRound; i++ {
			recs = append(recs, testRecord(topic, i))
		}
		if mode == "txn" {
			if err := cl.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if mode == "txn" {
			if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestKfake produces with kgo into kfake, with every codec, non-idempotent,
// idempotent and transactional, fetches the raw batches, rewrites them and
// checks the result with kmsg and kgo; then produces the rewritten batches
// back and consumes them with kgo (which verifies CRCs and decompresses).
func TestKfake(t *testing.T) {
	var topics []string
	for _, c := range testCodecs {
		for _, m := range testModes {
			topics = append(topics, c.name+"-"+m, "rt-"+c.name+"-"+m)
		}
	}
	_, addrs := newCluster(t, topics...)
	admin, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()

	for _, c := range testCodecs {
		for _, mode := range testModes {
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				topic := c.name + "-" + mode
				produceRounds(t, addrs, topic, mode, c.cc)
				in := fetchRaw(t, admin, topic)
				inCopy := bytes.Clone(in)
				if os.Getenv("STRAIT_WRITE_CORPUS") == "1" {
					body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
					os.WriteFile(filepath.Join("testdata", "fuzz", "FuzzRewrite", "kfake-"+c.name+"-"+mode), []byte(body), 0o644)
				}

				out, changed, err := Rewrite(nil, in, testFn)
				if err != nil {
					t.Fatal(err)
				}
				if !changed {
					t.Fatal("nothing changed")
				}
				if !bytes.Equal(in, inCopy) {
					t.Fatal("input modified")
				}
				checkRewritten(t, in, out, c.attr, mode)

				// A transactional batch cannot be produced again later: the
				// producer's epoch has moved on (KIP-890 bumps it at every
				// commit). TestProducePath covers transactions on the way in.
				if mode != "txn" {
					roundTrip(t, addrs, admin, "rt-"+topic, out)
				}
			})
		}
	}
}

func checkRewritten(t *testing.T, in, out []byte, codec int16, mode string) {
	t.Helper()
	ib, ob := splitBatches(t, in), splitBatches(t, out)
	if len(ib) != len(ob) {
		t.Fatalf("%d batches in, %d out", len(ib), len(ob))
	}
	var data, controls, unchanged, withCodec int
	seen := map[int]bool{}
	for k := range ib {
		i, o := &ib[k], &ob[k]
		if i.hdr.Attributes&0x20 != 0 {
			controls++
			if !bytes.Equal(i.raw, o.raw) {
				t.Fatal("control batch changed")
			}
			continue
		}
		data++
		switch got := i.hdr.Attributes & 7; {
		case got == codec:
			withCodec++
		case got != 0:
			t.Fatalf("kgo wrote codec %s, want %s", Codec(got), Codec(codec))
		}
		// kgo writes a batch uncompressed when compressing does not make it
		// smaller (a lone small record, when a slow run sends one early);
		// at least one batch must carry the codec (checked below).
		sameHeader(t, &i.hdr, &o.hdr)
		switch mode {
		case "plain":
			if i.hdr.ProducerID != -1 {
				t.Fatalf("plain batch with producer id %d", i.hdr.ProducerID)
			}
		default:
			if i.hdr.ProducerID < 0 || i.hdr.FirstSequence < 0 {
				t.Fatalf("%s batch without producer id/sequence", mode)
			}
			if (mode == "txn") != (i.hdr.Attributes&0x10 != 0) {
				t.Fatalf("transactional bit %v in mode %s", i.hdr.Attributes&0x10 != 0, mode)
			}
		}
		batchChanged := false
		for j := range i.recs {
			ir, or := &i.recs[j], &o.recs[j]
			idx := idxOf(t, ir.Headers)
			seen[idx] = true
			if !bytes.Equal(ir.Value, testValue(idx)) || (ir.Value == nil) != (testValue(idx) == nil) {
				t.Fatalf("precondition: record %d as produced has value %q", idx, ir.Value)
			}
			if !bytes.Equal(or.Value, expectedValue(idx)) || (or.Value == nil) != (expectedValue(idx) == nil) {
				t.Fatalf("record %d: value %q (nil %v), want %q", idx, or.Value, or.Value == nil, expectedValue(idx))
			}
			if !bytes.Equal(or.Key, ir.Key) || (or.Key == nil) != (ir.Key == nil) {
				t.Fatalf("record %d: key %q, was %q", idx, or.Key, ir.Key)
			}
			if or.OffsetDelta != ir.OffsetDelta || or.TimestampDelta64 != ir.TimestampDelta64 || or.Attributes != ir.Attributes {
				t.Fatalf("record %d: deltas/attributes changed", idx)
			}
			wantHeaders := ir.Headers
			if shouldChange(idx) {
				batchChanged = true
				wantHeaders = append(append([]kmsg.Header(nil), ir.Headers...), kmsg.Header{Key: "strait", Value: []byte("x")})
			}
			if len(or.Headers) != len(wantHeaders) {
				t.Fatalf("record %d: headers %v, want %v", idx, or.Headers, wantHeaders)
			}
			for h := range wantHeaders {
				if or.Headers[h].Key != wantHeaders[h].Key || !bytes.Equal(or.Headers[h].Value, wantHeaders[h].Value) {
					t.Fatalf("record %d: headers %v, want %v", idx, or.Headers, wantHeaders)
				}
			}
		}
		if !batchChanged {
			unchanged++
			if !bytes.Equal(i.raw, o.raw) {
				t.Fatal("unchanged batch not byte-identical")
			}
		}
	}
	if len(seen) != total {
		t.Fatalf("saw %d records, want %d", len(seen), total)
	}
	if withCodec == 0 {
		t.Fatalf("none of %d data batches is %s-compressed: the codec went untested", data, Codec(codec))
	}
	if unchanged == 0 || unchanged == data {
		t.Fatalf("%d of %d data batches unchanged: the test wants both kinds", unchanged, data)
	}
	if mode == "txn" && controls != rounds {
		t.Fatalf("%d control batches, want %d", controls, rounds)
	}
	t.Logf("%d data batches (%d unchanged), %d control batches, %d -> %d bytes", data, unchanged, controls, len(in), len(out))
}

// roundTrip produces each rewritten data batch to topic with a raw
// ProduceRequest (base offset reset to 0, as a producer sends it; the
// offset is outside the CRC) and consumes the topic with kgo.
func roundTrip(t *testing.T, addrs []string, cl *kgo.Client, topic string, out []byte) {
	t.Helper()
	id := topicID(t, cl, topic)
	err := Walk(out, func(b *Batch) error {
		if b.Partial || b.Magic != 2 || b.IsControl() {
			return nil
		}
		raw := bytes.Clone(b.Raw)
		clear(raw[:8])
		req := kmsg.NewPtrProduceRequest()
		req.Acks = -1
		req.TimeoutMillis = 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = topic, id
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = raw
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(context.Background(), cl)
		if err != nil {
			return err
		}
		p := resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
			return fmt.Errorf("produce of rewritten batch: %w (%v)", err, p.ErrorMessage)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	cons, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := 0
	for got < total {
		fs := cons.PollFetches(ctx)
		for _, e := range fs.Errors() {
			t.Fatalf("consume: partition %d: %v", e.Partition, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			var idx int = -1
			for _, h := range r.Headers {
				if h.Key == "idx" {
					fmt.Sscanf(string(h.Value), "%d", &idx)
				}
			}
			want := expectedValue(idx)
			if !bytes.Equal(r.Value, want) || (r.Value == nil) != (want == nil) {
				t.Errorf("consumed record %d: value %q, want %q", idx, r.Value, want)
			}
			if r.Offset != int64(got) {
				t.Errorf("consumed offset %d, want %d", r.Offset, got)
			}
			got++
		})
	}
}
