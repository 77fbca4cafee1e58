package interceptor

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor/errresp"
)

const keyProduce, keyFetch int16 = 0, 1

// recorder collects hook calls in order.
type recorder struct{ calls []string }

func (r *recorder) add(s string) { r.calls = append(r.calls, s) }

func (r *recorder) want(t *testing.T, want ...string) {
	t.Helper()
	if !slices.Equal(r.calls, want) {
		t.Errorf("calls %q, want %q", r.calls, want)
	}
	r.calls = nil
}

// recording returns an interceptor whose hooks on key record "name.req" and
// "name.resp".
func recording(r *recorder, name string, key int16) *Interceptor {
	return &Interceptor{Name: name, Hooks: []Hook{{
		Key:        key,
		MaxVersion: Latest,
		Request:    func(context.Context, *Exchange) error { r.add(name + ".req"); return nil },
		Response:   func(context.Context, *Exchange) error { r.add(name + ".resp"); return nil },
	}}}
}

func mustChain(t *testing.T, ics ...*Interceptor) *Chain {
	t.Helper()
	c, err := NewChain(ics...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func produceExchange(version int16) *Exchange {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(version)
	return &Exchange{Conn: &Conn{ID: 1}, Key: keyProduce, Version: version, Request: req}
}

// forward stands for the proxy getting the broker's answer.
func forward(x *Exchange) {
	resp := x.Request.ResponseKind()
	resp.SetVersion(x.Version)
	x.Response = resp
}

func TestChainOrder(t *testing.T) {
	var r recorder
	c := mustChain(t, recording(&r, "a", keyProduce), recording(&r, "b", keyProduce), recording(&r, "other", keyFetch), recording(&r, "c", keyProduce))
	ctx := context.Background()
	x := produceExchange(9)
	if err := c.Request(ctx, x); err != nil {
		t.Fatal(err)
	}
	r.want(t, "a.req", "b.req", "c.req")
	forward(x)
	if err := c.Response(ctx, x); err != nil {
		t.Fatal(err)
	}
	r.want(t, "c.resp", "b.resp", "a.resp")
	if got := c.Interceptors(); len(got) != 4 || got[3].Name != "c" {
		t.Errorf("Interceptors() = %v", got)
	}
}

func TestChainShortCircuit(t *testing.T) {
	var r recorder
	b := recording(&r, "b", keyProduce)
	b.Hooks[0].Request = func(_ context.Context, x *Exchange) error {
		r.add("b.req")
		x.Respond(kmsg.NewPtrProduceResponse())
		return nil
	}
	c := mustChain(t, recording(&r, "a", keyProduce), b, recording(&r, "c", keyProduce))
	ctx := context.Background()
	x := produceExchange(7)
	if err := c.Request(ctx, x); err != nil {
		t.Fatal(err)
	}
	r.want(t, "a.req", "b.req")
	if x.Response == nil || x.Response.GetVersion() != 7 {
		t.Fatalf("Respond: response %v, want version 7", x.Response)
	}
	if err := c.Response(ctx, x); err != nil {
		t.Fatal(err)
	}
	r.want(t, "a.resp")

	// The first interceptor answering: no response hook runs.
	first := mustChain(t, b, recording(&r, "c", keyProduce))
	x = produceExchange(7)
	if err := first.Request(ctx, x); err != nil {
		t.Fatal(err)
	}
	if err := first.Response(ctx, x); err != nil {
		t.Fatal(err)
	}
	r.want(t, "b.req")
}

// The proxy decodes only the response when no interceptor hooks the
// request, and may then skip Chain.Request: every response hook must run.
func TestChainResponseWithoutRequestPhase(t *testing.T) {
	var r recorder
	a := recording(&r, "a", keyProduce)
	a.Hooks[0].Request = nil
	b := recording(&r, "b", keyProduce)
	b.Hooks[0].Request = nil
	c := mustChain(t, a, b)
	x := &Exchange{Key: keyProduce, Version: 9, Response: kmsg.NewPtrProduceResponse()}
	if err := c.Response(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	r.want(t, "b.resp", "a.resp")
}

func TestHookCovers(t *testing.T) {
	for _, tc := range []struct {
		hook         Hook
		key, version int16
		want         bool
	}{
		{Hook{Key: 1, MaxVersion: Latest}, 1, 0, true},
		{Hook{Key: 1, MaxVersion: Latest}, 1, 17, true},
		{Hook{Key: 1, MaxVersion: Latest}, 2, 0, false},
		{Hook{Key: 1, MinVersion: 4, MaxVersion: Latest}, 1, 3, false},
		{Hook{Key: 1, MinVersion: 4, MaxVersion: Latest}, 1, 4, true},
		{Hook{Key: 1, MinVersion: 4, MaxVersion: Latest}, 1, 100, true},
		{Hook{Key: 1, MinVersion: 4, MaxVersion: 12}, 1, 12, true},
		{Hook{Key: 1, MinVersion: 4, MaxVersion: 12}, 1, 13, false},
		{Hook{Key: 1, MaxVersion: 3}, 1, 0, true},
		{Hook{Key: 1, MaxVersion: 3}, 1, 4, false},
		{Hook{Key: 1}, 1, 0, true}, // the zero range is v0 only
		{Hook{Key: 1}, 1, 1, false},
	} {
		if got := tc.hook.Covers(tc.key, tc.version); got != tc.want {
			t.Errorf("%+v.Covers(%d, %d) = %v, want %v", tc.hook, tc.key, tc.version, got, tc.want)
		}
	}
}

func TestChainVersionRange(t *testing.T) {
	var r recorder
	old := recording(&r, "old", keyFetch)
	old.Hooks[0].MaxVersion = 12
	nu := recording(&r, "new", keyFetch)
	nu.Hooks[0].MinVersion = 13
	c := mustChain(t, old, nu)
	ctx := context.Background()
	for _, tc := range []struct {
		version int16
		want    []string
	}{
		{0, []string{"old.req", "old.resp"}},
		{12, []string{"old.req", "old.resp"}},
		{13, []string{"new.req", "new.resp"}},
	} {
		x := &Exchange{Key: keyFetch, Version: tc.version, Request: kmsg.NewPtrFetchRequest()}
		if err := c.Request(ctx, x); err != nil {
			t.Fatal(err)
		}
		x.Response = kmsg.NewPtrFetchResponse()
		if err := c.Response(ctx, x); err != nil {
			t.Fatal(err)
		}
		r.want(t, tc.want...)
	}
}

func TestChainHooked(t *testing.T) {
	noop := func(context.Context, *Exchange) error { return nil }
	c := mustChain(t,
		&Interceptor{Name: "req", Hooks: []Hook{{Key: keyProduce, MinVersion: 3, MaxVersion: Latest, Request: noop}}},
		&Interceptor{Name: "resp", Hooks: []Hook{{Key: keyProduce, MaxVersion: 8, Response: noop}, {Key: 3, Response: noop}}},
	)
	for _, tc := range []struct {
		key, version      int16
		wantReq, wantResp bool
	}{
		{keyProduce, 2, false, true},
		{keyProduce, 3, true, true},
		{keyProduce, 9, true, false},
		{3, 0, false, true},
		{keyFetch, 4, false, false},
		{-1, 0, false, false},
		{200, 0, false, false},
	} {
		req, resp := c.Hooked(tc.key, tc.version)
		if req != tc.wantReq || resp != tc.wantResp {
			t.Errorf("Hooked(%d, %d) = %v, %v; want %v, %v", tc.key, tc.version, req, resp, tc.wantReq, tc.wantResp)
		}
	}
	// A frame with a key the chain cannot index passes through untouched.
	for _, key := range []int16{-1, 200} {
		x := &Exchange{Key: key}
		if err := c.Request(context.Background(), x); err != nil {
			t.Error(err)
		}
		if err := c.Response(context.Background(), x); err != nil {
			t.Error(err)
		}
	}
}

func TestNewChainErrors(t *testing.T) {
	noop := func(context.Context, *Exchange) error { return nil }
	for name, ics := range map[string][]*Interceptor{
		"key too large": {{Name: "x", Hooks: []Hook{{Key: maxKey, MaxVersion: Latest, Request: noop}}}},
		"negative key":  {{Name: "x", Hooks: []Hook{{Key: -1, MaxVersion: Latest, Request: noop}}}},
		"empty hook":    {{Name: "x", Hooks: []Hook{{Key: 1, MaxVersion: Latest}}}},
		"no version":    {{Name: "x", Hooks: []Hook{{Key: 1, MinVersion: 4, Request: noop}}}},
		"negative min":  {{Name: "x", Hooks: []Hook{{Key: 1, MinVersion: -1, MaxVersion: 3, Request: noop}}}},
		"nil":           {nil},
	} {
		if _, err := NewChain(ics...); err == nil {
			t.Errorf("%s: NewChain succeeded", name)
		}
	}
}

func TestChainHookErrors(t *testing.T) {
	boom := errors.New("boom")
	var r recorder
	b := recording(&r, "b", keyProduce)
	b.Hooks[0].Request = func(context.Context, *Exchange) error { r.add("b.req"); return boom }
	b.Hooks[0].Response = func(context.Context, *Exchange) error { r.add("b.resp"); return ErrClose }
	c := mustChain(t, recording(&r, "a", keyProduce), b, recording(&r, "c", keyProduce))
	ctx := context.Background()
	x := produceExchange(9)
	err := c.Request(ctx, x)
	if !errors.Is(err, boom) || err.Error() != "b: boom" {
		t.Errorf("Request error %v, want b: boom", err)
	}
	r.want(t, "a.req", "b.req")
	forward(x)
	if err := c.Response(ctx, x); !errors.Is(err, ErrClose) {
		t.Errorf("Response error %v, want ErrClose", err)
	}
	r.want(t, "c.resp", "b.resp")
}

func TestMarkModified(t *testing.T) {
	ctx := context.Background()
	mark := func(context.Context, *Exchange) error { return nil }
	modReq := &Interceptor{Name: "req", Hooks: []Hook{{Key: keyProduce, MaxVersion: Latest,
		Request: func(_ context.Context, x *Exchange) error { x.MarkModified(); return nil }}}}
	modResp := &Interceptor{Name: "resp", Hooks: []Hook{{Key: keyProduce, MaxVersion: Latest, Request: mark,
		Response: func(_ context.Context, x *Exchange) error { x.MarkModified(); return nil }}}}

	x := produceExchange(9)
	c := mustChain(t, modReq)
	if err := c.Request(ctx, x); err != nil {
		t.Fatal(err)
	}
	if !x.RequestModified() || x.ResponseModified() {
		t.Errorf("request phase: request %v, response %v; want true, false", x.RequestModified(), x.ResponseModified())
	}

	x = produceExchange(9)
	c = mustChain(t, modResp)
	if err := c.Request(ctx, x); err != nil {
		t.Fatal(err)
	}
	forward(x)
	if err := c.Response(ctx, x); err != nil {
		t.Fatal(err)
	}
	if x.RequestModified() || !x.ResponseModified() {
		t.Errorf("response phase: request %v, response %v; want false, true", x.RequestModified(), x.ResponseModified())
	}
}

func TestExchangeValues(t *testing.T) {
	type key struct{}
	c := mustChain(t, &Interceptor{Name: "v", Hooks: []Hook{{Key: keyProduce, MaxVersion: Latest,
		Request: func(_ context.Context, x *Exchange) error { x.SetValue(key{}, "from request"); return nil },
		Response: func(_ context.Context, x *Exchange) error {
			if got := x.Value(key{}); got != "from request" {
				t.Errorf("Value = %v", got)
			}
			return nil
		}}}})
	x := produceExchange(9)
	if x.Value(key{}) != nil {
		t.Error("fresh exchange has a value")
	}
	if err := c.Request(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	forward(x)
	if err := c.Response(context.Background(), x); err != nil {
		t.Fatal(err)
	}
}

func TestConnValues(t *testing.T) {
	type key struct{}
	conn := &Conn{ID: 7}
	conn.SetPrincipal(Principal{Name: "alice", Mechanism: "PLAIN"})
	conn.SetClientID("app")
	conn.SetValue(key{}, 42)
	if conn.Principal().String() != "User:alice" || conn.ClientID() != "app" || conn.Value(key{}) != 42 || conn.Value("other") != nil {
		t.Errorf("conn state: %v %q %v", conn.Principal(), conn.ClientID(), conn.Value(key{}))
	}
}

type fakeUpstream struct{}

func (fakeUpstream) RoundTrip(context.Context, kmsg.Request) (kmsg.Response, error) {
	return nil, errors.New("not connected")
}
func (fakeUpstream) ServerName() string { return "b1.kafka.internal" }

func TestConnectAndUpstreamHooks(t *testing.T) {
	var r recorder
	boom := errors.New("boom")
	hooks := func(name string, fail bool) *Interceptor {
		ic := &Interceptor{Name: name}
		ic.OnConnect = func(_ context.Context, c *Conn) error {
			r.add(name + ".connect")
			if fail {
				return boom
			}
			return nil
		}
		ic.OnUpstream = func(_ context.Context, c *Conn, up Upstream) error {
			r.add(name + ".upstream:" + up.ServerName())
			if fail {
				return boom
			}
			return nil
		}
		return ic
	}
	ctx := context.Background()
	conn := &Conn{ID: 1}

	c := mustChain(t, hooks("a", false), &Interceptor{Name: "none"}, hooks("b", false))
	if err := c.Connect(ctx, conn); err != nil {
		t.Fatal(err)
	}
	r.want(t, "a.connect", "b.connect")
	if err := c.Upstream(ctx, conn, fakeUpstream{}); err != nil {
		t.Fatal(err)
	}
	r.want(t, "a.upstream:b1.kafka.internal", "b.upstream:b1.kafka.internal")

	c = mustChain(t, hooks("a", false), hooks("b", true), hooks("c", false))
	if err := c.Connect(ctx, conn); !errors.Is(err, boom) || err.Error() != "b: boom" {
		t.Errorf("Connect error %v, want b: boom", err)
	}
	r.want(t, "a.connect", "b.connect")
	if err := c.Upstream(ctx, conn, fakeUpstream{}); !errors.Is(err, boom) || err.Error() != "b: boom" {
		t.Errorf("Upstream error %v, want b: boom", err)
	}
	r.want(t, "a.upstream:b1.kafka.internal", "b.upstream:b1.kafka.internal")
}

func TestChainClose(t *testing.T) {
	var r recorder
	first, second := errors.New("first"), errors.New("second")
	closer := func(name string, err error) *Interceptor {
		return &Interceptor{Name: name, Close: func() error { r.add(name); return err }}
	}
	c := mustChain(t, closer("a", nil), &Interceptor{Name: "none"}, closer("b", first), closer("c", second))
	if err := c.Close(); err != first {
		t.Errorf("Close = %v, want the first error", err)
	}
	r.want(t, "a", "b", "c")
}

type refusedKey struct{}

// topicPrefix is the worked example of docs/interceptors.md, verbatim but
// for the package qualifier: keep the two in step.
func topicPrefix(prefix string) *Interceptor {
	msg := "topic names must start with " + prefix
	return &Interceptor{
		Name: "topic-prefix",
		Hooks: []Hook{{
			Key: kmsg.CreateTopics.Int16(), MaxVersion: Latest,
			Request: func(_ context.Context, x *Exchange) error {
				req := x.Request.(*kmsg.CreateTopicsRequest)
				var keep []kmsg.CreateTopicsRequestTopic
				var refused []string
				for _, t := range req.Topics {
					if strings.HasPrefix(t.Topic, prefix) {
						keep = append(keep, t)
					} else {
						refused = append(refused, t.Topic)
					}
				}
				switch {
				case len(refused) == 0:
					return nil // forwarded as the client's original bytes
				case len(keep) == 0: // nothing left to forward: answer
					resp, err := errresp.For(req, kerr.PolicyViolation.Code)
					if err != nil {
						return err
					}
					x.Respond(resp)
					return nil
				}
				req.Topics = keep
				x.MarkModified() // re-encode the smaller request
				x.SetValue(refusedKey{}, refused)
				return nil
			},
			Response: func(_ context.Context, x *Exchange) error {
				refused, _ := x.Value(refusedKey{}).([]string)
				if len(refused) == 0 {
					return nil
				}
				resp := x.Response.(*kmsg.CreateTopicsResponse)
				for _, name := range refused {
					t := kmsg.NewCreateTopicsResponseTopic()
					t.Topic, t.ErrorCode, t.ErrorMessage = name, kerr.PolicyViolation.Code, &msg
					resp.Topics = append(resp.Topics, t)
				}
				x.MarkModified()
				return nil
			},
		}},
	}
}

func TestWorkedExample(t *testing.T) {
	c := mustChain(t, topicPrefix("team-a."))
	ctx := context.Background()
	newReq := func(topics ...string) *Exchange {
		req := kmsg.NewPtrCreateTopicsRequest()
		req.SetVersion(7)
		for _, name := range topics {
			rt := kmsg.NewCreateTopicsRequestTopic()
			rt.Topic = name
			req.Topics = append(req.Topics, rt)
		}
		return &Exchange{Conn: &Conn{ID: 1}, Key: 19, Version: 7, Request: req}
	}

	// Mixed: the refused topic is removed from the request and added back
	// to the broker's answer.
	x := newReq("team-a.orders", "orders")
	if err := c.Request(ctx, x); err != nil {
		t.Fatal(err)
	}
	req := x.Request.(*kmsg.CreateTopicsRequest)
	if x.Response != nil || !x.RequestModified() || len(req.Topics) != 1 || req.Topics[0].Topic != "team-a.orders" {
		t.Fatalf("request phase: modified %v, topics %+v", x.RequestModified(), req.Topics)
	}
	broker := kmsg.NewPtrCreateTopicsResponse()
	broker.SetVersion(7)
	ok := kmsg.NewCreateTopicsResponseTopic()
	ok.Topic = "team-a.orders"
	broker.Topics = append(broker.Topics, ok)
	x.Response = broker
	if err := c.Response(ctx, x); err != nil {
		t.Fatal(err)
	}
	codes := map[string]int16{}
	for _, rt := range x.Response.(*kmsg.CreateTopicsResponse).Topics {
		codes[rt.Topic] = rt.ErrorCode
	}
	if !x.ResponseModified() || len(codes) != 2 || codes["team-a.orders"] != 0 || codes["orders"] != kerr.PolicyViolation.Code {
		t.Errorf("response phase: modified %v, codes %v", x.ResponseModified(), codes)
	}

	// All refused: answered without forwarding.
	x = newReq("orders", "payments")
	if err := c.Request(ctx, x); err != nil {
		t.Fatal(err)
	}
	resp, ok2 := x.Response.(*kmsg.CreateTopicsResponse)
	if !ok2 || len(resp.Topics) != 2 || resp.Topics[1].Topic != "payments" || resp.Topics[1].ErrorCode != kerr.PolicyViolation.Code {
		t.Fatalf("answer %+v", x.Response)
	}
	if err := c.Response(ctx, x); err != nil { // no earlier interceptor: nothing runs
		t.Fatal(err)
	}

	// All allowed: untouched, forwarded as the original bytes.
	x = newReq("team-a.x")
	if err := c.Request(ctx, x); err != nil || x.Response != nil || x.RequestModified() {
		t.Errorf("allowed: err %v, answered %v, modified %v", err, x.Response != nil, x.RequestModified())
	}
}

// TestSplitBeforeLaterHookFailsClosed: a request hook that splits its
// request (Exchange.Split) must be the last request hook of that API: a
// later one would see only the first part, so the chain refuses instead.
// Split last, the parts and the merge reach the proxy.
func TestSplitBeforeLaterHookFailsClosed(t *testing.T) {
	splitting := &Interceptor{Name: "splitter", Hooks: []Hook{{Key: keyProduce, MaxVersion: Latest, Request: func(_ context.Context, x *Exchange) error {
		x.Split([]kmsg.Request{kmsg.NewPtrProduceRequest()}, func(resps []kmsg.Response) (kmsg.Response, error) { return resps[0], nil })
		return nil
	}}}}
	var later atomic.Bool
	watching := &Interceptor{Name: "watcher", Hooks: []Hook{{Key: keyProduce, MaxVersion: Latest, Request: func(context.Context, *Exchange) error {
		later.Store(true)
		return nil
	}}}}
	c, err := NewChain(splitting, watching)
	if err != nil {
		t.Fatal(err)
	}
	x := &Exchange{Key: keyProduce, Version: 9, Request: kmsg.NewPtrProduceRequest()}
	if err := c.Request(context.Background(), x); err == nil || !strings.Contains(err.Error(), "put splitter after it") || later.Load() {
		t.Fatalf("err %v (later hook ran: %v), want the chain to refuse", err, later.Load())
	}
	c, err = NewChain(watching, splitting)
	if err != nil {
		t.Fatal(err)
	}
	x = &Exchange{Key: keyProduce, Version: 9, Request: kmsg.NewPtrProduceRequest()}
	if err := c.Request(context.Background(), x); err != nil || len(x.Extra()) != 1 {
		t.Fatalf("err %v, %d extra requests; want the split to stand", err, len(x.Extra()))
	}
	resp, err := x.Merge([]kmsg.Response{kmsg.NewPtrProduceResponse(), kmsg.NewPtrProduceResponse()})
	if err != nil || resp.GetVersion() != 9 {
		t.Fatalf("merge: %v, version %d; want the exchange's version", err, resp.GetVersion())
	}
}

func TestReauthHooks(t *testing.T) {
	var r recorder
	boom := errors.New("boom")
	reauth := func(name string, fail bool) *Interceptor {
		return &Interceptor{Name: name, OnReauth: func(_ context.Context, c *Conn, up Upstream) error {
			r.add(name + ".reauth:" + up.ServerName())
			if fail {
				return boom
			}
			return nil
		}}
	}
	ctx := context.Background()
	conn := &Conn{ID: 1}
	c := mustChain(t, reauth("a", false), &Interceptor{Name: "none", OnUpstream: func(context.Context, *Conn, Upstream) error {
		r.add("none.upstream")
		return nil
	}}, reauth("b", false))
	if ran, err := c.Reauth(ctx, conn, fakeUpstream{}); !ran || err != nil {
		t.Fatalf("Reauth: ran %v, err %v", ran, err)
	}
	r.want(t, "a.reauth:b1.kafka.internal", "b.reauth:b1.kafka.internal") // OnUpstream does not run again

	c = mustChain(t, reauth("a", true), reauth("b", false))
	if ran, err := c.Reauth(ctx, conn, fakeUpstream{}); !ran || !errors.Is(err, boom) || err.Error() != "a: boom" {
		t.Errorf("Reauth: ran %v, err %v, want a: boom", ran, err)
	}
	r.want(t, "a.reauth:b1.kafka.internal")

	c = mustChain(t, &Interceptor{Name: "none"})
	if ran, err := c.Reauth(ctx, conn, fakeUpstream{}); ran || err != nil {
		t.Errorf("a chain without OnReauth: ran %v, err %v", ran, err)
	}
}
