// Package refused is the one way an interceptor answers some partitions of
// a Produce request itself and forwards the rest (encrypt when a partition
// cannot be sealed, policy when a producer may not write it).
package refused

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// Produce is the partitions of one Produce request that an interceptor
// refuses itself (encrypt when a partition cannot be sealed, policy when a
// producer may not write it). The hook takes them out of the request it
// forwards; the client gets their error codes in the broker's response for
// the rest, or in Strait's own answer when no partition is left.
type Produce struct {
	parts []refusal
}

type refusal struct {
	topic     string
	topicID   [16]byte
	partition int32
	code      int16
	msg       string
}

// Add refuses one partition of t with code and an error message.
func (r *Produce) Add(t *kmsg.ProduceRequestTopic, partition int32, code int16, msg string) {
	r.parts = append(r.parts, refusal{t.Topic, t.TopicID, partition, code, msg})
}

// Len is the number of partitions refused.
func (r *Produce) Len() int { return len(r.parts) }

// Finish ends a request hook that refused partitions, once they are out of
// req: with acks=0 no response can carry the error, so it returns an error
// that closes the connection (as a broker closes an acks=0 producer's
// connection when its produce fails); with no partition left it answers the
// request; otherwise it keeps the refusals in x under key for Merge to add
// to the broker's response. what says what failed, for the acks=0 error.
func (r *Produce) Finish(x *interceptor.Exchange, req *kmsg.ProduceRequest, key any, what string) error {
	if len(r.parts) == 0 {
		return nil
	}
	if req.Acks == 0 {
		return fmt.Errorf("%w: acks=0 produce %s: %s", interceptor.ErrClose, what, r.parts[0].msg)
	}
	if len(req.Topics) == 0 {
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		r.addTo(resp)
		x.Respond(resp)
		return nil
	}
	x.SetValue(key, r)
	return nil
}

// Merge is the response hook's part: it adds the partitions refused under
// key, if any, to the broker's Produce response.
func Merge(x *interceptor.Exchange, key any) {
	r, _ := x.Value(key).(*Produce)
	if r == nil || len(r.parts) == 0 {
		return
	}
	r.addTo(x.Response.(*kmsg.ProduceResponse))
	x.MarkModified()
}

func (r *Produce) addTo(resp *kmsg.ProduceResponse) {
	for _, f := range r.parts {
		var t *kmsg.ProduceResponseTopic
		for i := range resp.Topics {
			if resp.Topics[i].Topic == f.topic && resp.Topics[i].TopicID == f.topicID {
				t = &resp.Topics[i]
			}
		}
		if t == nil {
			nt := kmsg.NewProduceResponseTopic()
			nt.Topic, nt.TopicID = f.topic, f.topicID
			resp.Topics = append(resp.Topics, nt)
			t = &resp.Topics[len(resp.Topics)-1]
		}
		p := kmsg.NewProduceResponseTopicPartition()
		p.Partition, p.ErrorCode = f.partition, f.code
		msg := f.msg
		p.ErrorMessage = &msg
		t.Partitions = append(t.Partitions, p)
	}
}
