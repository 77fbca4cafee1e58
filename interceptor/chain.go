package interceptor

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// maxKey bounds the API keys the chain indexes; kmsg knows fewer.
const maxKey = 128

// Chain is the interceptors of one listener, built once at start into
// per-key tables so the proxy can tell in O(1) whether a frame needs decoding.
type Chain struct {
	ics []*Interceptor
	// byKey[key] lists, in chain order, the interceptor index and hook.
	byKey [maxKey][]boundHook
}

type boundHook struct {
	ic   int
	hook Hook
}

// NewChain builds a chain. Requests run through ics in order, responses in
// reverse order.
func NewChain(ics ...*Interceptor) (*Chain, error) {
	c := &Chain{ics: ics}
	for i, ic := range ics {
		if ic == nil {
			return nil, fmt.Errorf("interceptor %d of the chain is nil", i)
		}
		for _, h := range ic.Hooks {
			if h.Key < 0 || h.Key >= maxKey {
				return nil, fmt.Errorf("interceptor %s: api key %d out of range", ic.Name, h.Key)
			}
			if h.MinVersion < 0 || h.MaxVersion < h.MinVersion {
				return nil, fmt.Errorf("interceptor %s: hook for key %d covers no version (%d..%d; MaxVersion interceptor.Latest covers every version)", ic.Name, h.Key, h.MinVersion, h.MaxVersion)
			}
			if h.Request == nil && h.Response == nil {
				return nil, fmt.Errorf("interceptor %s: hook for key %d has neither request nor response", ic.Name, h.Key)
			}
			c.byKey[h.Key] = append(c.byKey[h.Key], boundHook{i, h})
		}
	}
	return c, nil
}

// Interceptors returns the chain's interceptors in order.
func (c *Chain) Interceptors() []*Interceptor { return c.ics }

// Hooked reports whether some interceptor hooks the request or the response
// of key at version, i.e. whether the proxy must decode it.
func (c *Chain) Hooked(key, version int16) (req, resp bool) {
	if key < 0 || key >= maxKey {
		return false, false
	}
	for _, b := range c.byKey[key] {
		if b.hook.Covers(key, version) {
			req = req || b.hook.Request != nil
			resp = resp || b.hook.Response != nil
		}
	}
	return req, resp
}

// Request runs the request hooks for x in chain order. It stops at the first
// hook that answers (sets x.Response); the response then flows back through
// the response hooks of the interceptors before that one.
func (c *Chain) Request(ctx context.Context, x *Exchange) error {
	x.answeredBy = 0
	if x.Key < 0 || x.Key >= maxKey {
		return nil
	}
	splitBy := -1
	for _, b := range c.byKey[x.Key] {
		if b.hook.Request == nil || !b.hook.Covers(x.Key, x.Version) {
			continue
		}
		if splitBy >= 0 {
			// A later request hook would see only the first part of
			// the split request and let the others pass unseen: fail
			// closed rather than bypass it.
			return fmt.Errorf("%s split the %s request before the request hook of %s ran: put %s after it in the chain",
				c.ics[splitBy].Name, kmsg.NameForKey(x.Key), c.ics[b.ic].Name, c.ics[splitBy].Name)
		}
		if err := b.hook.Request(ctx, x); err != nil {
			return fmt.Errorf("%s: %w", c.ics[b.ic].Name, err)
		}
		if x.Response != nil {
			x.answeredBy = b.ic + 1
			return nil
		}
		if x.merge != nil {
			splitBy = b.ic
		}
	}
	return nil
}

// Response runs the response hooks for x in reverse chain order. If a request
// hook answered x, only the hooks of the interceptors before it run.
func (c *Chain) Response(ctx context.Context, x *Exchange) error {
	if x.Key < 0 || x.Key >= maxKey {
		return nil
	}
	hooks := c.byKey[x.Key]
	for i := len(hooks) - 1; i >= 0; i-- {
		b := hooks[i]
		if b.hook.Response == nil || (x.answeredBy > 0 && b.ic >= x.answeredBy-1) || !b.hook.Covers(x.Key, x.Version) {
			continue
		}
		if err := b.hook.Response(ctx, x); err != nil {
			return fmt.Errorf("%s: %w", c.ics[b.ic].Name, err)
		}
	}
	return nil
}

// Connect runs every ConnectHook in chain order.
func (c *Chain) Connect(ctx context.Context, conn *Conn) error {
	for _, ic := range c.ics {
		if ic.OnConnect == nil {
			continue
		}
		if err := ic.OnConnect(ctx, conn); err != nil {
			return fmt.Errorf("%s: %w", ic.Name, err)
		}
	}
	return nil
}

// Upstream runs every UpstreamHook in chain order on a fresh upstream
// connection.
func (c *Chain) Upstream(ctx context.Context, conn *Conn, up Upstream) error {
	for _, ic := range c.ics {
		if ic.OnUpstream == nil {
			continue
		}
		if err := ic.OnUpstream(ctx, conn, up); err != nil {
			return fmt.Errorf("%s: %w", ic.Name, err)
		}
	}
	return nil
}

// Reauth runs every OnReauth hook in chain order on an upstream connection
// in use whose KIP-368 session lifetime is ending. ran reports whether the
// chain has any OnReauth hook.
func (c *Chain) Reauth(ctx context.Context, conn *Conn, up Upstream) (ran bool, err error) {
	for _, ic := range c.ics {
		if ic.OnReauth == nil {
			continue
		}
		ran = true
		if err := ic.OnReauth(ctx, conn, up); err != nil {
			return true, fmt.Errorf("%s: %w", ic.Name, err)
		}
	}
	return ran, nil
}

// Close releases every interceptor's resources.
func (c *Chain) Close() error {
	var first error
	for _, ic := range c.ics {
		if ic.Close != nil {
			if err := ic.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}
