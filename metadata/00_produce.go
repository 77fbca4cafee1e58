package metadata

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// produce rewrites the KIP-951 leader hints (NodeEndpoints, tag 0; kmsg calls
// them Brokers) that a Produce v10+ response carries when a partition answers
// NOT_LEADER_OR_FOLLOWER. Most responses have none and stay unmodified.
func (r *rewriter) produce(_ context.Context, x *interceptor.Exchange) error {
	resp, ok := x.Response.(*kmsg.ProduceResponse)
	if !ok {
		return typeError("Produce", x.Response)
	}
	changed := false
	for i := range resp.Brokers {
		b := &resp.Brokers[i]
		c, err := r.rewrite(x.Conn, "Produce", b.NodeID, &b.Host, &b.Port)
		if err != nil {
			return err
		}
		changed = changed || c
	}
	return done(x, changed)
}
