// Package metadata rewrites every broker address a Kafka response hands out
// to the address clients must use to reach Strait, and keeps the topic-id to
// name map that APIs naming topics by id only (Produce v13+, Fetch v13+)
// need.
//
// The addresses live in these responses, one file per API in the kfake style:
//
//	00_produce.go          Produce v10+         NodeEndpoints (KIP-951, kmsg: Brokers, tag 0)
//	01_fetch.go            Fetch v16+           NodeEndpoints (KIP-951, kmsg: Brokers, tag 0)
//	03_metadata.go         Metadata             Brokers[] (ControllerID stays)
//	10_find_coordinator.go FindCoordinator      v0-v3 top level, v4+ Coordinators[]
//	60_describe_cluster.go DescribeCluster      Brokers[]
//	78_share.go            ShareFetch (78),     NodeEndpoints
//	                       ShareAcknowledge (79)
//
// A hook marks the response modified only when it changed an address, so that
// the proxy forwards the original bytes of the (common) Produce and Fetch
// responses that carry no leader hints.
package metadata

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/topicid"
)

// Name is the name the interceptor registers under.
const Name = "metadata"

// Mapper turns an upstream broker into the address clients must use. The
// proxy implements it: it records the upstream host:port for node id (so it
// can dial it later), opens a listener if needed, and returns the advertised
// host/port.
//
// Advertise is called for every address of every hooked response, so it must
// be cheap and safe for concurrent use. c is the client connection the
// response goes to (nil outside a connection): the address a client is given
// depends on how it reached Strait (a mapped port or the SNI listener).
type Mapper interface {
	Advertise(c *interceptor.Conn, nodeID int32, host string, port int32) (advHost string, advPort int32, err error)
}

// New returns the "metadata" interceptor. m must not be nil. topics may be
// nil; when it is not, every Metadata v10+ response that flows through feeds
// it.
func New(m Mapper, topics *topicid.Names) *interceptor.Interceptor {
	r := &rewriter{m: m, topics: topics}
	return &interceptor.Interceptor{
		Name: Name,
		Hooks: []interceptor.Hook{
			{Key: 0, MinVersion: 10, MaxVersion: interceptor.Latest, Response: r.produce},
			{Key: 1, MinVersion: 16, MaxVersion: interceptor.Latest, Response: r.fetch},
			{Key: 3, MaxVersion: interceptor.Latest, Response: r.metadata},
			{Key: 10, MaxVersion: interceptor.Latest, Response: r.findCoordinator},
			{Key: 60, MaxVersion: interceptor.Latest, Response: r.describeCluster},
			{Key: 78, MaxVersion: interceptor.Latest, Response: r.shareFetch},
			{Key: 79, MaxVersion: interceptor.Latest, Response: r.shareAcknowledge},
		},
	}
}

type rewriter struct {
	m      Mapper
	topics *topicid.Names
}

// rewrite replaces one address in place and reports whether it changed.
func (r *rewriter) rewrite(c *interceptor.Conn, api string, nodeID int32, host *string, port *int32) (bool, error) {
	h, p, err := r.m.Advertise(c, nodeID, *host, *port)
	if err != nil {
		return false, fmt.Errorf("rewrite %s broker %d: %w", api, nodeID, err)
	}
	if h == *host && p == *port {
		return false, nil
	}
	*host, *port = h, p
	return true, nil
}

// done marks x modified if changed; it exists so that every hook ends the
// same way.
func done(x *interceptor.Exchange, changed bool) error {
	if changed {
		x.MarkModified()
	}
	return nil
}

// typeError is returned when the proxy hands a hook a response of another
// API: a proxy bug, but forwarding the response unrewritten would leak the
// upstream addresses, so the connection is closed instead.
func typeError(want string, got kmsg.Response) error {
	return fmt.Errorf("rewrite %s: unexpected response type %T", want, got)
}
