package encrypt

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/records"
)

// split is one produce partition whose encrypted batch was cut into
// several (records.Rewriter.SplitBytes): batches[0] stays in the client's
// request, batches[i] goes in the i-th extra request (Exchange.Split).
type split struct {
	topic     string // as in the request (empty in Produce v13+)
	name      string // the topic's name
	topicID   [16]byte
	partition int32
	batches   [][]byte
	counts    []int32 // records in each batch
	seqs      []int32 // base sequence of each batch (-1: not idempotent)
	pid       int64
	epoch     int16
}

// splitOf reports whether p's sealed records are several batches cut from
// the client's one.
func (e *encrypter) splitOf(t kmsg.ProduceRequestTopic, name string, p kmsg.ProduceRequestTopicPartition) (split, bool) {
	if b := p.Records; len(b) >= 12 && 12+int(int32(binary.BigEndian.Uint32(b[8:]))) == len(b) {
		return split{}, false // one batch: the common case, without a walk
	}
	sp := split{topic: t.Topic, name: name, topicID: t.TopicID, partition: p.Partition, pid: -1}
	_ = records.Walk(p.Records, func(b *records.Batch) error {
		sp.batches = append(sp.batches, b.Raw)
		sp.counts = append(sp.counts, b.Header.NumRecords)
		sp.seqs = append(sp.seqs, b.Header.FirstSequence)
		sp.pid, sp.epoch = b.Header.ProducerID, b.Header.ProducerEpoch
		return nil
	})
	return sp, len(sp.batches) > 1
}

// splitRequests builds the extra Produce requests: the i-th carries the
// (i+1)-th batch of every split partition, with the client's transactional
// id, acks and timeout. Sent in order on the client's upstream connection,
// the batches of a partition reach the broker in sequence order.
func splitRequests(req *kmsg.ProduceRequest, splits []split) []kmsg.Request {
	parts := 0
	for _, sp := range splits {
		parts = max(parts, len(sp.batches))
	}
	more := make([]kmsg.Request, 0, parts-1)
	for i := 1; i < parts; i++ {
		r := kmsg.NewPtrProduceRequest()
		r.TransactionID, r.Acks, r.TimeoutMillis = req.TransactionID, req.Acks, req.TimeoutMillis
		for _, sp := range splits {
			if i >= len(sp.batches) {
				continue
			}
			if n := len(r.Topics); n == 0 || r.Topics[n-1].Topic != sp.topic || r.Topics[n-1].TopicID != sp.topicID {
				t := kmsg.NewProduceRequestTopic()
				t.Topic, t.TopicID = sp.topic, sp.topicID
				r.Topics = append(r.Topics, t)
			}
			p := kmsg.NewProduceRequestTopicPartition()
			p.Partition, p.Records = sp.partition, sp.batches[i]
			t := &r.Topics[len(r.Topics)-1]
			t.Partitions = append(t.Partitions, p)
		}
		more = append(more, r)
	}
	return more
}

// mergeSplit builds the client's one response from the broker's responses
// to the client's request (which holds the first batch of every partition)
// and to the extra requests. For a split partition, each part is either
// stored (answered without error, or as a duplicate in the broker's
// window), stored long ago (see below), or failed. If no part failed, the
// answer is the first part's (its base offset is the client's batch's first
// record's offset: the parts are consecutive). Else it is the first failing
// part's error (base offset -1, record errors renumbered to the client's
// batch), whatever later parts answered; the client retries the whole
// batch or gives up on it, as for any failed batch. Throttle time is the
// longest; broker endpoints the union.
//
// A retried batch whose parts the broker wrote but no longer remembers (it
// deduplicates against the last 5 batches of a producer and partition, and
// a split batch takes one per part) is answered OUT_OF_ORDER_SEQUENCE_NUMBER.
// For such a part, lastSeq (when not nil) asks the broker for the producer's
// last sequence in the partition (DescribeProducers): at or past the part's
// last record, the part is stored. If the first part is such a part and no
// part failed, the answer is DUPLICATE_SEQUENCE_NUMBER with base offset -1,
// which Kafka clients take as success with an unknown offset.
func mergeSplit(splits []split, lastSeq func(sp split) (epoch int16, last int32, ok bool)) interceptor.MergeFunc {
	return func(resps []kmsg.Response) (kmsg.Response, error) {
		all := make([]*kmsg.ProduceResponse, len(resps))
		for i, r := range resps {
			pr, ok := r.(*kmsg.ProduceResponse)
			if !ok {
				return nil, fmt.Errorf("split produce: response %d is %T", i, r)
			}
			all[i] = pr
		}
		out := all[0]
		for _, pr := range all[1:] {
			out.ThrottleMillis = max(out.ThrottleMillis, pr.ThrottleMillis)
			for _, b := range pr.Brokers {
				known := false
				for _, o := range out.Brokers {
					known = known || o.NodeID == b.NodeID
				}
				if !known {
					out.Brokers = append(out.Brokers, b)
				}
			}
		}
		for _, sp := range splits {
			answers := make([]*kmsg.ProduceResponseTopicPartition, len(sp.batches))
			for i := range answers {
				if i >= len(all) {
					return nil, fmt.Errorf("split produce: no response for part %d of %s[%d]", i+1, sp.name, sp.partition)
				}
				if answers[i] = findPartition(all[i], sp); answers[i] == nil {
					return nil, fmt.Errorf("split produce: the broker did not answer %s[%d], part %d", sp.name, sp.partition, i+1)
				}
			}
			asked, stored := false, func(int) bool { return false }
			evicted := make([]bool, len(answers))
			failed := -1
			for i, a := range answers {
				if a.ErrorCode == 0 {
					continue
				}
				if a.ErrorCode == kerr.OutOfOrderSequenceNumber.Code && lastSeq != nil && sp.pid >= 0 && i < len(sp.seqs) && sp.seqs[i] >= 0 {
					if !asked {
						asked = true
						if epoch, last, ok := lastSeq(sp); ok && epoch == sp.epoch {
							stored = func(i int) bool { return seqAtOrAfter(last, seqAdd(sp.seqs[i], sp.counts[i]-1)) }
						}
					}
					if stored(i) {
						evicted[i] = true
						continue
					}
				}
				failed = i
				break
			}
			first := answers[0]
			switch {
			case failed > 0:
				before := int32(0)
				for _, c := range sp.counts[:failed] {
					before += c
				}
				*first = *answers[failed]
				first.BaseOffset = -1
				for j := range first.ErrorRecords {
					first.ErrorRecords[j].RelativeOffset += before
				}
			case failed == 0:
				// The first part's own error stands.
			case evicted[0]:
				msg := "strait: the batch was stored before; the broker no longer has its offset"
				first.ErrorCode, first.BaseOffset, first.ErrorMessage = kerr.DuplicateSequenceNumber.Code, -1, &msg
			default:
				for _, a := range answers[1:] {
					first.LogStartOffset = max(first.LogStartOffset, a.LogStartOffset)
				}
			}
		}
		return out, nil
	}
}

// seqAdd adds n to a Kafka sequence number, which wraps from MaxInt32 to 0.
func seqAdd(seq, n int32) int32 { return int32((int64(seq) + int64(n)) % (1 << 31)) }

// seqAtOrAfter reports whether sequence a is b or later, on the wrapping
// sequence circle (within half of it).
func seqAtOrAfter(a, b int32) bool {
	d := (int64(a) - int64(b) + 1<<31) % (1 << 31)
	return d < 1<<30
}

// lastSequence asks the partition's leader (DescribeProducers) for the
// epoch and last sequence of sp's producer; ok is false if it does not know
// the producer or cannot be asked.
func (e *encrypter) lastSequence(sp split) (int16, int32, bool) {
	cl := e.Topics.Cluster()
	if cl == nil || sp.name == "" {
		return 0, 0, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), limitLookupTimeout)
	defer cancel()
	req := kmsg.NewPtrDescribeProducersRequest()
	t := kmsg.NewDescribeProducersRequestTopic()
	t.Topic, t.Partitions = sp.name, []int32{sp.partition}
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, 0, false
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rt.Topic != sp.name || rp.Partition != sp.partition || rp.ErrorCode != 0 {
				continue
			}
			for _, ap := range rp.ActiveProducers {
				if ap.ProducerID == sp.pid && ap.LastSequence >= 0 {
					return int16(ap.ProducerEpoch), ap.LastSequence, true
				}
			}
		}
	}
	return 0, 0, false
}

func findPartition(resp *kmsg.ProduceResponse, sp split) *kmsg.ProduceResponseTopicPartition {
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		if t.Topic != sp.topic || t.TopicID != sp.topicID {
			continue
		}
		for pi := range t.Partitions {
			if t.Partitions[pi].Partition == sp.partition {
				return &t.Partitions[pi]
			}
		}
	}
	return nil
}
