package policy

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/records"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// batch builds an uncompressed magic 2 batch with kmsg (independently of
// the records package).
func batch(base int64, pid int64, txn bool, recs ...kmsg.Record) []byte {
	var body []byte
	for i := range recs {
		r := recs[i]
		r.OffsetDelta = int32(i)
		r.TimestampDelta64 = int64(i)
		r.TimestampDelta = int32(i)
		r.Length = 0
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		body = r.AppendTo(body)
	}
	b := kmsg.RecordBatch{
		FirstOffset: base, Magic: 2, LastOffsetDelta: int32(len(recs) - 1),
		FirstTimestamp: 1700000000000, MaxTimestamp: 1700000000000 + int64(len(recs)),
		ProducerID: pid, ProducerEpoch: 3, FirstSequence: 11, NumRecords: int32(len(recs)), Records: body,
	}
	if txn {
		b.Attributes |= 0x10
	}
	b.Length = int32(49 + len(body))
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], castagnoli))
	return raw
}

func rec(key, value string) kmsg.Record {
	return kmsg.Record{Key: []byte(key), Value: []byte(value)}
}

type gotRecord struct {
	Offset int64
	Key    string
	Value  string // "<nil>" for a null value
}

// decode reads every record of the batches, checking CRCs.
func decode(t testing.TB, b []byte) (recs []gotRecord, hdrs []kmsg.RecordBatch) {
	t.Helper()
	err := records.Walk(b, func(bt *records.Batch) error {
		if bt.Partial {
			return nil
		}
		if !bt.CRCValid() {
			t.Fatalf("bad CRC in batch at %d", bt.Header.FirstOffset)
		}
		hdrs = append(hdrs, bt.Header)
		return bt.Records(func(r *records.Record) error {
			v := "<nil>"
			if r.Value != nil {
				v = string(r.Value)
			}
			recs = append(recs, gotRecord{r.Offset(), string(r.Key), v})
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs, hdrs
}

// fetch runs the interceptor's Fetch response hook on one partition of
// topic as principal name and returns the partition.
func fetch(t testing.TB, ic *interceptor.Interceptor, principal interceptor.Principal, topic string, batches []byte) *kmsg.FetchResponseTopicPartition {
	t.Helper()
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 12
	tp := kmsg.NewFetchResponseTopic()
	tp.Topic = topic
	pt := kmsg.NewFetchResponseTopicPartition()
	pt.RecordBatches = batches
	pt.HighWatermark = 1000
	tp.Partitions = append(tp.Partitions, pt)
	resp.Topics = append(resp.Topics, tp)
	conn := &interceptor.Conn{ID: 1, Listener: "bootstrap", NodeID: -1, RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
	conn.SetClientID("test-client")
	if !principal.Anonymous() {
		conn.SetPrincipal(principal)
	}
	x := &interceptor.Exchange{Conn: conn, Key: 1, Version: 12, Response: resp}
	if err := ic.Hooks[0].Response(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Done)
	return &resp.Topics[0].Partitions[0]
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func newPolicy(t testing.TB, cfg Config) (*Policy, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := NewPolicy(cfg, Env{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, reg
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
