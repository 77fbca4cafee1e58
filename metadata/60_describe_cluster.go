package metadata

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// endpointTypeController is DescribeCluster v1+'s EndpointType for a request
// bootstrapped to the KRaft controllers (KIP-919); 1 is brokers.
const endpointTypeController = 2

// describeCluster rewrites every broker of a DescribeCluster response.
//
// A response listing controller endpoints is refused: brokers answer such a
// request with UNSUPPORTED_ENDPOINT_TYPE and no endpoints, so only a
// controller sends them, and feeding controller node ids to the Mapper would
// overwrite the broker of the same id (combined mode) with a controller
// listener. Forwarding them unrewritten would leak upstream addresses.
func (r *rewriter) describeCluster(_ context.Context, x *interceptor.Exchange) error {
	resp, ok := x.Response.(*kmsg.DescribeClusterResponse)
	if !ok {
		return typeError("DescribeCluster", x.Response)
	}
	if resp.Version >= 1 && resp.EndpointType == endpointTypeController && len(resp.Brokers) > 0 {
		return fmt.Errorf("rewrite DescribeCluster: %d controller endpoints: controllers are not proxied", len(resp.Brokers))
	}
	changed := false
	for i := range resp.Brokers {
		b := &resp.Brokers[i]
		c, err := r.rewrite(x.Conn, "DescribeCluster", b.NodeID, &b.Host, &b.Port)
		if err != nil {
			return err
		}
		changed = changed || c
	}
	return done(x, changed)
}
