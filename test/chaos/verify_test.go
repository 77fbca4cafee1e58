package chaos

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Reading what the brokers hold, without Strait and without a consumer
// library's record handling: plain Fetch requests (read_uncommitted) from
// each partition's leader, the record batches decoded here, and each
// transactional record given the fate its producer's next control record in
// that partition says (commit, abort, or none yet).

type fate int

const (
	notTxn fate = iota
	committed
	aborted
	open
)

func (f fate) String() string {
	return [...]string{"non-transactional", "committed", "aborted", "open"}[f]
}

type storedRecord struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kmsg.Header
	Fate      fate
}

// scanTopic returns every data record of topic, the raw bytes of every
// Fetch response's record batches concatenated (for the plaintext search),
// and whether all batches were uncompressed.
func scanTopic(ctx context.Context, brokers []string, topic string) ([]storedRecord, []byte, bool, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, nil, false, err
	}
	defer cl.Close()
	mreq := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	mreq.Topics = append(mreq.Topics, mt)
	md, err := mreq.RequestWith(ctx, cl)
	if err != nil {
		return nil, nil, false, fmt.Errorf("metadata for %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].ErrorCode != 0 {
		return nil, nil, false, fmt.Errorf("metadata for %s: %+v", topic, md.Topics)
	}
	var (
		out          []storedRecord
		raw          []byte
		uncompressed = true
	)
	for _, p := range md.Topics[0].Partitions {
		pending := map[int64][]int{} // producer id → indexes into out awaiting a marker
		for offset := int64(0); ; {
			req := kmsg.NewPtrFetchRequest()
			req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes, req.SessionEpoch = -1, 100, 1, 64<<20, -1
			ft := kmsg.NewFetchRequestTopic()
			ft.Topic, ft.TopicID = topic, md.Topics[0].TopicID
			fp := kmsg.NewFetchRequestTopicPartition()
			fp.Partition, fp.FetchOffset, fp.PartitionMaxBytes, fp.CurrentLeaderEpoch, fp.LogStartOffset = p.Partition, offset, 32<<20, -1, -1
			ft.Partitions = append(ft.Partitions, fp)
			req.Topics = append(req.Topics, ft)
			kr, err := cl.Broker(int(p.Leader)).Request(ctx, req)
			if err != nil {
				return nil, nil, false, fmt.Errorf("raw fetch %s/%d: %w", topic, p.Partition, err)
			}
			resp := kr.(*kmsg.FetchResponse)
			if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
				return nil, nil, false, fmt.Errorf("raw fetch %s/%d: unexpected response shape", topic, p.Partition)
			}
			rp := resp.Topics[0].Partitions[0]
			if rp.ErrorCode != 0 {
				return nil, nil, false, fmt.Errorf("raw fetch %s/%d at %d: error code %d", topic, p.Partition, offset, rp.ErrorCode)
			}
			if offset >= rp.HighWatermark {
				break
			}
			b := rp.RecordBatches
			raw = append(raw, b...)
			progressed := false
			for len(b) >= 12 {
				size := 12 + int(int32(binary.BigEndian.Uint32(b[8:12])))
				if size > len(b) {
					break
				}
				var rb kmsg.RecordBatch
				if err := rb.ReadFrom(b[:size]); err != nil {
					return nil, nil, false, fmt.Errorf("raw fetch %s/%d: batch: %w", topic, p.Partition, err)
				}
				b = b[size:]
				next := rb.FirstOffset + int64(rb.LastOffsetDelta) + 1
				if next <= offset {
					continue // a batch before the offset asked for
				}
				offset, progressed = next, true
				if rb.Attributes&0x07 != 0 {
					uncompressed = false
					return nil, nil, false, fmt.Errorf("%s/%d: compressed batch (codec %d): this run produces uncompressed", topic, p.Partition, rb.Attributes&7)
				}
				recs, err := decodeRecords(rb.Records, int(rb.NumRecords))
				if err != nil {
					return nil, nil, false, fmt.Errorf("%s/%d: records of batch at %d: %w", topic, p.Partition, rb.FirstOffset, err)
				}
				txn := rb.Attributes&0x10 != 0
				if rb.Attributes&0x20 != 0 { // control batch: its record's key says commit (1) or abort (0)
					if len(recs) != 1 || len(recs[0].Key) < 4 {
						return nil, nil, false, fmt.Errorf("%s/%d: odd control batch at %d", topic, p.Partition, rb.FirstOffset)
					}
					f := aborted
					if binary.BigEndian.Uint16(recs[0].Key[2:4]) == 1 {
						f = committed
					}
					for _, i := range pending[rb.ProducerID] {
						out[i].Fate = f
					}
					delete(pending, rb.ProducerID)
					continue
				}
				for _, r := range recs {
					sr := storedRecord{Partition: p.Partition, Offset: rb.FirstOffset + int64(r.OffsetDelta),
						Key: r.Key, Value: r.Value, Headers: r.Headers}
					if txn {
						sr.Fate = open
						pending[rb.ProducerID] = append(pending[rb.ProducerID], len(out))
					}
					out = append(out, sr)
				}
			}
			if !progressed {
				return nil, nil, false, fmt.Errorf("raw fetch %s/%d at %d: no complete batch", topic, p.Partition, offset)
			}
		}
	}
	return out, raw, uncompressed, nil
}

// decodeRecords splits the records section of an uncompressed batch.
func decodeRecords(b []byte, n int) ([]kmsg.Record, error) {
	out := make([]kmsg.Record, 0, n)
	for len(b) > 0 {
		l, sz := binary.Varint(b)
		if sz <= 0 || l < 0 || int(l) > len(b)-sz {
			return nil, fmt.Errorf("bad record length")
		}
		var r kmsg.Record
		if err := r.ReadFrom(b[:sz+int(l)]); err != nil {
			return nil, err
		}
		out = append(out, r)
		b = b[sz+int(l):]
	}
	if len(out) != n {
		return nil, fmt.Errorf("%d records, the batch header says %d", len(out), n)
	}
	return out, nil
}

// scanRetry retries scanTopic for a while: right after the chaos phase a
// broker may still be coming back.
func scanRetry(brokers []string, topic string) ([]storedRecord, []byte, error) {
	var err error
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var recs []storedRecord
		var raw []byte
		recs, raw, _, err = scanTopic(ctx, brokers, topic)
		cancel()
		if err == nil {
			return recs, raw, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return nil, nil, err
}
