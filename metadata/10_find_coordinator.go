package metadata

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// findCoordinator rewrites the coordinator address: top level in v0-v3, each
// Coordinators[] entry in v4+ (KIP-699 batches keys). An entry without a
// coordinator (an error, or a negative node id such as COORDINATOR_NOT_AVAILABLE's
// -1 with an empty host) names no broker and is left alone.
func (r *rewriter) findCoordinator(_ context.Context, x *interceptor.Exchange) error {
	resp, ok := x.Response.(*kmsg.FindCoordinatorResponse)
	if !ok {
		return typeError("FindCoordinator", x.Response)
	}
	if resp.Version < 4 {
		if resp.ErrorCode != 0 || resp.NodeID < 0 {
			return nil
		}
		c, err := r.rewrite(x.Conn, "FindCoordinator", resp.NodeID, &resp.Host, &resp.Port)
		if err != nil {
			return err
		}
		return done(x, c)
	}
	changed := false
	for i := range resp.Coordinators {
		co := &resp.Coordinators[i]
		if co.ErrorCode != 0 || co.NodeID < 0 {
			continue
		}
		c, err := r.rewrite(x.Conn, "FindCoordinator", co.NodeID, &co.Host, &co.Port)
		if err != nil {
			return err
		}
		changed = changed || c
	}
	return done(x, changed)
}
