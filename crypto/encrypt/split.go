package encrypt

import (
	"encoding/binary"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/records"
)

// split is one produce partition whose encrypted batch was cut into
// several (records.Rewriter.SplitBytes): batches[0] stays in the client's
// request, batches[i] goes in the i-th extra request (Exchange.Split).
type split struct {
	topic     string
	topicID   [16]byte
	partition int32
	batches   [][]byte
	counts    []int32 // records in each batch
}

// splitOf reports whether p's sealed records are several batches cut from
// the client's one.
func (e *engine) splitOf(t kmsg.ProduceRequestTopic, p kmsg.ProduceRequestTopicPartition) (split, bool) {
	if b := p.Records; len(b) >= 12 && 12+int(int32(binary.BigEndian.Uint32(b[8:]))) == len(b) {
		return split{}, false // one batch: the common case, without a walk
	}
	sp := split{topic: t.Topic, topicID: t.TopicID, partition: p.Partition}
	_ = records.Walk(p.Records, func(b *records.Batch) error {
		sp.batches = append(sp.batches, b.Raw)
		sp.counts = append(sp.counts, b.Header.NumRecords)
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
// and to the extra requests. For a split partition: if every part
// succeeded, the answer is the first part's (its base offset is the
// client's batch's first record's offset: the parts are consecutive); else
// it is the first failing part's error (base offset -1, record errors
// renumbered to the client's batch), whatever later parts answered. The
// client then retries the whole batch or gives up on it, as for any
// failed batch. Throttle time is the longest; broker endpoints the union.
func mergeSplit(splits []split) interceptor.MergeFunc {
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
			first := findPartition(out, sp)
			if first == nil {
				return nil, fmt.Errorf("split produce: the broker did not answer %s[%d]", sp.topic, sp.partition)
			}
			before := sp.counts[0]
			for i := 1; i < len(sp.batches); i++ {
				pp := findPartition(all[i], sp)
				if pp == nil {
					return nil, fmt.Errorf("split produce: the broker did not answer %s[%d], part %d", sp.topic, sp.partition, i+1)
				}
				if first.ErrorCode == 0 && pp.ErrorCode != 0 {
					*first = *pp
					first.BaseOffset = -1
					for j := range first.ErrorRecords {
						first.ErrorRecords[j].RelativeOffset += before
					}
				} else if first.ErrorCode == 0 {
					first.LogStartOffset = max(first.LogStartOffset, pp.LogStartOffset)
				}
				before += sp.counts[i]
			}
		}
		return out, nil
	}
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
