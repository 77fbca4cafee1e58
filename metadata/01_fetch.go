package metadata

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// fetch rewrites the KIP-951 leader hints (NodeEndpoints, tag 0; kmsg calls
// them Brokers) that a Fetch v16+ response carries when a partition answers
// NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH. Most responses have none and
// stay unmodified, so their record batches are forwarded as the original
// bytes.
func (r *rewriter) fetch(_ context.Context, x *interceptor.Exchange) error {
	resp, ok := x.Response.(*kmsg.FetchResponse)
	if !ok {
		return typeError("Fetch", x.Response)
	}
	changed := false
	for i := range resp.Brokers {
		b := &resp.Brokers[i]
		c, err := r.rewrite(x.Conn, "Fetch", b.NodeID, &b.Host, &b.Port)
		if err != nil {
			return err
		}
		changed = changed || c
	}
	return done(x, changed)
}
