package proxy_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
)

const (
	reauthUser = "app-up"
	reauthPass = "app-up-pw-9c41"
	reauthMs   = "2000" // connections.max.reauth.ms
)

// reauthCluster is a SASL-only kfake whose sessions last 2 s, with a broker
// side (sasltest.Sessions) that closes a connection used after its session
// ended, as Kafka does.
func reauthCluster(t *testing.T) (*sasltest.Sessions, []string) {
	t.Helper()
	ss := sasltest.NewSessions()
	_, addrs := sasltest.Cluster(t, ss.Opt(), kfake.SeedTopics(1, "r"),
		kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": reauthMs}),
		kfake.User("PLAIN", reauthUser, reauthPass))
	return ss, addrs
}

// plainUpstream is upstream SASL PLAIN through RoundTrip, as authswap's
// upsasl does it (kept here so the proxy's tests depend on no interceptor).
func plainUpstream(ctx context.Context, up interceptor.Upstream, user, pass string) error {
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.SetVersion(1)
	hs.Mechanism = "PLAIN"
	r, err := up.RoundTrip(ctx, hs)
	if err != nil {
		return err
	}
	if code := r.(*kmsg.SASLHandshakeResponse).ErrorCode; code != 0 {
		return kerr.ErrorForCode(code)
	}
	a := kmsg.NewPtrSASLAuthenticateRequest()
	a.SetVersion(1)
	a.SASLAuthBytes = []byte("\x00" + user + "\x00" + pass)
	r, err = up.RoundTrip(ctx, a)
	if err != nil {
		return err // kfake closes the connection on bad credentials
	}
	if code := r.(*kmsg.SASLAuthenticateResponse).ErrorCode; code != 0 {
		return kerr.ErrorForCode(code)
	}
	return nil
}

// reauthInterceptor authenticates every upstream connection as app-up, and
// re-authenticates it with the password pass returns for the connection.
type reauthInterceptor struct {
	reauths  atomic.Int64
	strayed  atomic.Value // string: a principal OnReauth was called for that it should not have been
	renamed  atomic.Int64 // connections closed while their principal was not the one they started with
	password func(c *interceptor.Conn) string
}

func (ri *reauthInterceptor) interceptor(withReauth bool) *interceptor.Interceptor {
	ic := &interceptor.Interceptor{
		Name: "test-reauth",
		OnConnect: func(_ context.Context, c *interceptor.Conn) error {
			c.SetPrincipal(interceptor.Principal{Name: "app", Mechanism: "test"})
			c.OnClose(func() {
				if c.Principal().Name != "app" {
					ri.renamed.Add(1)
				}
			})
			return nil
		},
		OnUpstream: func(ctx context.Context, c *interceptor.Conn, up interceptor.Upstream) error {
			return plainUpstream(ctx, up, reauthUser, reauthPass)
		},
	}
	if withReauth {
		ic.OnReauth = func(ctx context.Context, c *interceptor.Conn, up interceptor.Upstream) error {
			if p := c.Principal().Name; p != "app" {
				ri.strayed.Store(p)
			}
			pass := reauthPass
			if ri.password != nil {
				pass = ri.password(c)
			}
			if err := plainUpstream(ctx, up, reauthUser, pass); err != nil {
				return err
			}
			ri.reauths.Add(1)
			return nil
		}
	}
	return ic
}

func startReauthStrait(t *testing.T, addrs []string, ics ...*interceptor.Interceptor) *straittest.Strait {
	t.Helper()
	return straittest.Start(t, addrs, ics, func(c *config.Config) { c.Upstream.SASL = sasltest.UpstreamSASL(t) })
}

// histogram returns the sample count and sum of a histogram without labels.
func histogram(t *testing.T, g prometheus.Gatherer, name string) (uint64, float64) {
	t.Helper()
	mfs, err := g.Gather()
	straittest.Must(t, err, "gather")
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	return 0, 0
}

// await polls cond (an event another goroutine causes) until it holds.
func await(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// appConns returns the broker's record of the connections that
// authenticated as app-up (the client sessions' upstream connections).
func appConns(ss *sasltest.Sessions) []sasltest.Conn {
	var out []sasltest.Conn
	for _, c := range ss.Conns() {
		if len(c.Auths) > 0 && c.Auths[0].User == reauthUser {
			out = append(out, c)
		}
	}
	return out
}

// checkSameUser fails if any connection authenticated as two users.
func checkSameUser(t *testing.T, ss *sasltest.Sessions) {
	t.Helper()
	for _, c := range ss.Conns() {
		for _, a := range c.Auths {
			if a.User != c.Auths[0].User {
				t.Errorf("connection %s re-authenticated as %q after %q", c.Remote, a.User, c.Auths[0].User)
			}
		}
	}
}

// TestUpstreamReauth: a producer (pipelined, acks=all, some records large
// enough to be spliced), an acks=0 producer and a consumer run through
// Strait for several session lifetimes of a broker that closes expired
// sessions. Strait re-authenticates every upstream connection in use, as
// the same user, between requests: no request is ever forwarded on an
// expired session, the clients see no error, and every record arrives, in
// order.
func TestUpstreamReauth(t *testing.T) {
	ss, addrs := reauthCluster(t)
	ri := &reauthInterceptor{}
	s := startReauthStrait(t, addrs, ri.interceptor(true))
	ctx := ctxT(t, 90*time.Second)

	newClient := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("r"),
			kgo.RequestRetries(0), kgo.RecordRetries(1)}, opts...)...)
		straittest.Must(t, err, "client")
		t.Cleanup(cl.Close)
		return cl
	}
	acked := newClient(kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(5), kgo.ProducerLinger(0))
	noAck := newClient(kgo.DisableIdempotentWrite(), kgo.RequiredAcks(kgo.NoAck()), kgo.ProducerLinger(0))
	consumer := newClient(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"r": {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(300*time.Millisecond))

	var mu sync.Mutex
	var clientErrs []string
	var errCount int
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if errCount++; len(clientErrs) < 10 {
			clientErrs = append(clientErrs, fmt.Sprintf(format, args...))
		}
	}
	big := strings.Repeat("x", 130<<10) // its produce and fetch frames pass spliceMin: forwarded socket to socket

	// Run until at least two of the clients' upstream connections have
	// re-authenticated three times each (over three session lifetimes).
	enough := func() bool {
		n := 0
		for _, c := range appConns(ss) {
			if len(c.Auths) >= 4 {
				n++
			}
		}
		return n >= 2
	}
	stop := make(chan struct{})
	var sentAcked, sentNoAck atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // pipelined acks=all: 20 records in flight, then a flush
		defer wg.Done()
		pace := time.NewTicker(5 * time.Millisecond)
		defer pace.Stop()
		for i := 0; ; {
			select {
			case <-stop:
				return
			case <-pace.C:
			}
			for j := 0; j < 20; j, i = j+1, i+1 {
				v := fmt.Sprintf("p-%06d", i)
				if i%50 == 0 {
					v += "-" + big
				}
				acked.Produce(ctx, kgo.StringRecord(v), func(r *kgo.Record, err error) {
					if err != nil {
						fail("acks=all produce %.8s: %v", r.Value, err)
					}
				})
			}
			if err := acked.Flush(ctx); err != nil {
				fail("flush: %v", err)
				return
			}
			sentAcked.Store(int64(i))
		}
	}()
	go func() { // acks=0: no response ever comes
		defer wg.Done()
		pace := time.NewTicker(2 * time.Millisecond) // a steady stream, not a flood
		defer pace.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-pace.C:
			}
			noAck.Produce(ctx, kgo.StringRecord(fmt.Sprintf("z-%06d", i)), func(r *kgo.Record, err error) {
				if err != nil {
					fail("acks=0 produce %s: %v", r.Value, err)
				}
			})
			if i%10 == 9 {
				if err := noAck.Flush(ctx); err != nil {
					fail("flush: %v", err)
					return
				}
				sentNoAck.Store(int64(i + 1))
			}
		}
	}()

	nextP, nextZ := 0, 0
	// check follows each producer's sequence: a gap or a step back is
	// reported once, and the sequence resumes from what was consumed.
	check := func(v string) {
		var n int
		switch {
		case strings.HasPrefix(v, "p-"):
			fmt.Sscanf(v, "p-%06d", &n)
			if n != nextP {
				fail("consumed %.8s, want p-%06d (out of order or lost)", v, nextP)
			}
			nextP = n + 1
		case strings.HasPrefix(v, "z-"):
			fmt.Sscanf(v, "z-%06d", &n)
			if n != nextZ {
				fail("consumed %s, want z-%06d (out of order or lost)", v, nextZ)
			}
			nextZ = n + 1
		}
	}
	poll := func() {
		pctx, cancel := context.WithTimeout(ctx, time.Second) // keep the loops below responsive
		defer cancel()
		fs := consumer.PollFetches(pctx)
		if pctx.Err() != nil {
			return // nothing within the second (or the test's time is up)
		}
		fs.EachError(func(topic string, p int32, err error) { fail("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { check(string(r.Value)) })
	}
	deadline := time.Now().Add(40 * time.Second)
	for !enough() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			close(stop)
			wg.Wait()
			exp := ss.Expired()
			t.Fatalf("no two upstream connections re-authenticated three times within 40 s; the broker saw %d connections as %s, %d used after their session ended, e.g. %q",
				len(appConns(ss)), reauthUser, len(exp), exp[:min(3, len(exp))])
		}
		poll()
	}
	close(stop)
	wg.Wait()
	drain := time.Now().Add(30 * time.Second)
	for int64(nextP) < sentAcked.Load() || int64(nextZ) < sentNoAck.Load() {
		if ctx.Err() != nil || time.Now().After(drain) {
			t.Fatalf("consumed %d of %d acks=all and %d of %d acks=0 records", nextP, sentAcked.Load(), nextZ, sentNoAck.Load())
		}
		poll()
	}
	mu.Lock()
	for _, e := range clientErrs {
		t.Error(e)
	}
	if errCount > len(clientErrs) {
		t.Errorf("... %d client errors in all", errCount)
	}
	mu.Unlock()
	if exp := ss.Expired(); len(exp) > 0 {
		t.Errorf("requests forwarded on expired sessions (the broker closed those connections):\n%s", strings.Join(exp, "\n"))
	}
	checkSameUser(t, ss)
	if v := ri.strayed.Load(); v != nil {
		t.Errorf("OnReauth ran for principal %q", v)
	}

	// Each re-authentication Strait counted is one the broker saw.
	acked.Close()
	noAck.Close()
	consumer.Close()
	await(t, "the clients' upstream connections to close", 20*time.Second, func() bool {
		for _, c := range appConns(ss) {
			if !c.Closed {
				return false
			}
		}
		return true
	})
	reauths, maxPer := 0, 0
	for _, c := range appConns(ss) {
		reauths += len(c.Auths) - 1
		maxPer = max(maxPer, len(c.Auths)-1)
	}
	n, sum := histogram(t, s.Registry, "strait_upstream_reauth_pause_seconds")
	if int(n) != reauths || ri.reauths.Load() != int64(reauths) {
		t.Errorf("the broker saw %d re-authentications, Strait's pause histogram counted %d, OnReauth succeeded %d times", reauths, n, ri.reauths.Load())
	}
	if reauths == 0 {
		t.Fatal("no re-authentication")
	}
	t.Logf("%d upstream connections as %s; %d re-authentications (at most %d on one connection); %d acks=all and %d acks=0 records in order; mean pause %.2f ms",
		len(appConns(ss)), reauthUser, reauths, maxPer, nextP, nextZ, 1000*sum/float64(n))
}

// TestUpstreamReauthRefused: a re-authentication the broker refuses closes
// that client connection (counted as upstream_reauth), before anything is
// forwarded on the expired session; the client reconnects, and other
// connections go on. A connection whose principal changed is never
// re-authenticated; nor is one whose chain has no OnReauth hook, which is
// closed before its session ends.
func TestUpstreamReauthRefused(t *testing.T) {
	ss, addrs := reauthCluster(t)
	ri := &reauthInterceptor{password: func(c *interceptor.Conn) string {
		if c.ClientID() == "doomed" {
			return "rotated-away"
		}
		return reauthPass
	}}
	ic := ri.interceptor(true)
	// The renamed client's connections change principal once their
	// upstream connection exists (from their second Metadata on).
	type metadataSeen struct{}
	ic.Hooks = []interceptor.Hook{{Key: int16(kmsg.Metadata), MaxVersion: interceptor.Latest, Request: func(_ context.Context, x *interceptor.Exchange) error {
		n, _ := x.Conn.Value(metadataSeen{}).(int)
		x.Conn.SetValue(metadataSeen{}, n+1)
		if n > 0 && x.Conn.ClientID() == "renamed" {
			x.Conn.SetPrincipal(interceptor.Principal{Name: "mallory", Mechanism: "test"})
		}
		return nil
	}}}
	s := startReauthStrait(t, addrs, ic)
	ctx := ctxT(t, 90*time.Second)

	produceLoop := func(s *straittest.Strait, id string, stop <-chan struct{}, errs *atomic.Int64, done *sync.WaitGroup) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("r"), kgo.ClientID(id),
			kgo.MetadataMinAge(100*time.Millisecond), kgo.MetadataMaxAge(300*time.Millisecond))
		straittest.Must(t, err, "client")
		done.Add(1)
		go func() {
			defer done.Done()
			defer cl.Close()
			pace := time.NewTicker(2 * time.Millisecond)
			defer pace.Stop()
			for {
				select {
				case <-stop:
					return
				case <-pace.C:
				}
				if err := cl.ProduceSync(ctx, kgo.StringRecord(id)).FirstErr(); err != nil {
					errs.Add(1)
					t.Logf("%s: %v", id, err)
				}
			}
		}()
	}
	reason := func(s *straittest.Strait) float64 {
		return straittest.Counter(t, s.Registry, "strait_connection_errors_total", "reason", "upstream_reauth")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var healthyErrs, doomedErrs, renamedErrs atomic.Int64
	produceLoop(s, "healthy", stop, &healthyErrs, &wg)
	produceLoop(s, "doomed", stop, &doomedErrs, &wg)
	produceLoop(s, "renamed", stop, &renamedErrs, &wg)

	// Without OnReauth, a session that is ending is closed, not used.
	plain := startReauthStrait(t, addrs, ri.interceptor(false))
	var plainErrs atomic.Int64
	produceLoop(plain, "no-reauth-hook", stop, &plainErrs, &wg)

	await(t, "refused re-authentications", 60*time.Second, func() bool {
		return reason(s) >= 3 && reason(plain) >= 1 && ri.renamed.Load() >= 1
	})
	// The healthy client's connections keep re-authenticating meanwhile.
	before := ri.reauths.Load()
	await(t, "more successful re-authentications", 30*time.Second, func() bool { return ri.reauths.Load() >= before+2 })
	close(stop)
	wg.Wait()

	if n := healthyErrs.Load(); n > 0 {
		t.Errorf("the healthy client saw %d errors while others' re-authentications failed", n)
	}
	if v := ri.strayed.Load(); v != nil {
		t.Errorf("OnReauth ran for principal %q: the proxy must refuse a connection whose principal changed", v)
	}
	if exp := ss.Expired(); len(exp) > 0 {
		t.Errorf("requests forwarded on expired sessions:\n%s", strings.Join(exp, "\n"))
	}
	checkSameUser(t, ss)
	refusedByBroker := 0
	for _, c := range appConns(ss) {
		if c.Handshakes > len(c.Auths) {
			refusedByBroker++ // a handshake whose authentication failed: the doomed client's
		}
	}
	if refusedByBroker == 0 {
		t.Error("the broker refused no re-authentication: the doomed client's wrong password never reached it")
	}
	// The clients whose connections were closed reconnected and went on.
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Bootstrap), kgo.DefaultProduceTopic("r"), kgo.ClientID("doomed"))
	straittest.Must(t, err, "client")
	defer cl.Close()
	straittest.Must(t, cl.ProduceSync(ctx, kgo.StringRecord("after")).FirstErr(), "a new connection of the doomed client")
	t.Logf("closed: %v by refused or impossible re-authentication (%d of them renamed), %v without OnReauth; broker refused %d; errors seen by clients: healthy %d, doomed %d, renamed %d, no-reauth-hook %d",
		reason(s), ri.renamed.Load(), reason(plain), refusedByBroker, healthyErrs.Load(), doomedErrs.Load(), renamedErrs.Load(), plainErrs.Load())
}
