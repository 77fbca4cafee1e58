package metadata

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// metadata rewrites every broker of a Metadata response (all versions) and
// feeds the topic-id map. ControllerID is a node id, not an address, and
// stays.
func (r *rewriter) metadata(_ context.Context, x *interceptor.Exchange) error {
	resp, ok := x.Response.(*kmsg.MetadataResponse)
	if !ok {
		return typeError("Metadata", x.Response)
	}
	if r.topics != nil && resp.Version >= 10 {
		r.topics.Learn(resp)
	}
	changed := false
	for i := range resp.Brokers {
		b := &resp.Brokers[i]
		c, err := r.rewrite(x.Conn, "Metadata", b.NodeID, &b.Host, &b.Port)
		if err != nil {
			return err
		}
		changed = changed || c
	}
	return done(x, changed)
}
