package metadata

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// shareFetch rewrites the NodeEndpoints (leader hints) of a ShareFetch
// response (KIP-932).
func (r *rewriter) shareFetch(_ context.Context, x *interceptor.Exchange) error {
	resp, ok := x.Response.(*kmsg.ShareFetchResponse)
	if !ok {
		return typeError("ShareFetch", x.Response)
	}
	changed := false
	for i := range resp.NodeEndpoints {
		b := &resp.NodeEndpoints[i]
		c, err := r.rewrite(x.Conn, "ShareFetch", b.NodeID, &b.Host, &b.Port)
		if err != nil {
			return err
		}
		changed = changed || c
	}
	return done(x, changed)
}

// shareAcknowledge rewrites the NodeEndpoints (leader hints) of a
// ShareAcknowledge response (KIP-932).
func (r *rewriter) shareAcknowledge(_ context.Context, x *interceptor.Exchange) error {
	resp, ok := x.Response.(*kmsg.ShareAcknowledgeResponse)
	if !ok {
		return typeError("ShareAcknowledge", x.Response)
	}
	changed := false
	for i := range resp.NodeEndpoints {
		b := &resp.NodeEndpoints[i]
		c, err := r.rewrite(x.Conn, "ShareAcknowledge", b.NodeID, &b.Host, &b.Port)
		if err != nil {
			return err
		}
		changed = changed || c
	}
	return done(x, changed)
}
