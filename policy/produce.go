package policy

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/interceptor/refused"
	"github.com/strait-proxy/strait/records"
)

// The Produce side (config produce: true): every record of a partition is
// decided with input.operation "produce"; if the decision for any of them
// is to drop it (or no decision can be made), the whole partition is
// refused with POLICY_VIOLATION and the other partitions go on. A
// partition is refused whole because its batches carry the producer's
// sequence numbers: removing one record would break idempotence. Field
// actions in a produce decision are ignored (records are written as sent;
// encryption is the encrypt interceptor's job).

// refusedKey keeps a request's refused partitions for the response hook.
type refusedKey struct{}

func (p *Policy) onProduce(ctx context.Context, x *interceptor.Exchange) error {
	req := x.Request.(*kmsg.ProduceRequest)
	rt := p.st.Load()
	conn := connOf(x)
	ap := newApplier(p.tok)
	var fails refused.Produce
	keptTopics := req.Topics[:0]
	for _, t := range req.Topics {
		name := t.Topic
		if x.Version >= 13 {
			n, err := p.topics.Resolve(ctx, t.TopicID)
			if err != nil {
				for _, pt := range t.Partitions {
					fails.Add(&t, pt.Partition, kerr.UnknownTopicID.Code, "strait: topic id not resolvable; policy cannot apply")
				}
				p.m.failures.WithLabelValues("topic").Inc()
				continue
			}
			name = n
		}
		kept := t.Partitions[:0]
		for _, pt := range t.Partitions {
			if why := p.refuseProduce(ctx, rt, ap, conn, name, pt.Partition, pt.Records); why != "" {
				p.m.records.WithLabelValues("refused").Inc()
				fails.Add(&t, pt.Partition, kerr.PolicyViolation.Code, "strait: "+why)
				continue
			}
			kept = append(kept, pt)
		}
		if t.Partitions = kept; len(kept) > 0 {
			keptTopics = append(keptTopics, t)
		}
	}
	req.Topics = keptTopics
	if fails.Len() == 0 {
		return nil
	}
	x.MarkModified()
	return fails.Finish(x, req, refusedKey{}, "refused by policy")
}

// mergeProduce adds the refused partitions to the broker's response.
func (p *Policy) mergeProduce(_ context.Context, x *interceptor.Exchange) error {
	refused.Merge(x, refusedKey{})
	return nil
}

// refuseProduce says why a partition's records may not be written ("":
// they may).
func (p *Policy) refuseProduce(ctx context.Context, rt *runtime, ap *applier, conn *Conn, topic string, part int32, batches []byte) string {
	rd := &rt.c.reads
	ti := rt.topic(topic)
	pc := newPartCtx(rd, conn, "produce", topic, part, ti)
	b := batchAudit{first: -1, last: -1}
	why := ""
	if !rd.record() {
		d := p.decide(ctx, rt, pc, nil, nil, nil)
		switch {
		case d.failed != "":
			why = "policy could not decide (" + d.failed + ")"
			b.failed++
		case d.drop:
			why = "policy refuses this producer's records for " + topic
		}
		_ = records.Walk(batches, func(bt *records.Batch) error {
			if !bt.Partial && bt.Magic == 2 && !bt.IsControl() {
				b.delivered += int(bt.Header.NumRecords)
			}
			return nil
		})
	} else {
		key := pc.key
		err := records.Walk(batches, func(bt *records.Batch) error {
			if bt.Partial || bt.Magic < 2 {
				why = "records the policy cannot read"
				return errStop
			}
			if !bt.CRCValid() {
				why = "corrupt batch"
				return errStop
			}
			return p.rw.Records(bt, func(rec *records.Record) error {
				var d *decision
				d, key, _ = p.recordDecision(ctx, rt, ap, pc, rec, key, nil)
				switch {
				case d.failed != "":
					b.failed++
					why = fmt.Sprintf("policy could not decide record %d (%s)", rec.Offset(), d.failed)
				case d.drop:
					why = fmt.Sprintf("policy refuses record %d", rec.Offset())
				default:
					b.delivered++
					return nil
				}
				return errStop
			})
		})
		if err != nil && why == "" {
			why = "records could not be read: " + err.Error()
		}
	}
	if why != "" {
		b.refused = true
	}
	if p.audit != nil {
		// Produce offsets are not assigned yet: offset_first/last are -1.
		p.audit.write(rt.c.Revision, pc, &b)
	}
	return why
}

var errStop = fmt.Errorf("stop")
