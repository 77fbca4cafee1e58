package authswap_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/strait-proxy/strait/authswap"
	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/sasltest"
	"github.com/strait-proxy/strait/internal/straittest"
)

const carolUpPw = "carol-upstream-pw-71e2"

// reauthSetup: the ACL cluster (alice-up may use orders, bob-up exists,
// carol-up too) with 2 s sessions that expire as on a real broker
// (sasltest.Sessions), and Strait with SASL PLAIN in front and a
// credentials file read on every lookup (cache_ttl 0s).
func reauthSetup(t *testing.T) (*strait, *sasltest.Sessions, []string, string, map[string]any) {
	t.Helper()
	sessions := sasltest.NewSessions()
	upstream := aclCluster(t, sessions.Opt(), kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": "2000"}),
		kfake.User("PLAIN", "carol-up", carolUpPw))
	dir := t.TempDir()
	principals := map[string]any{
		"alice": map[string]string{"mechanism": "SCRAM-SHA-256", "username": "alice-up", "password": aliceUpPw},
		"bob":   map[string]string{"mechanism": "PLAIN", "username": "bob-up", "password": bobUpPw},
		"carol": map[string]string{"mechanism": "PLAIN", "username": "carol-up", "password": carolUpPw},
	}
	credsFile := writeSecretFile(t, dir, "upstream.yaml", map[string]any{"principals": principals})
	zero := config.Duration(0)
	s := startStrait(t, upstream, authswap.Config{
		SASL:        &authswap.SASLConfig{Mechanisms: []string{"PLAIN"}, UsersFile: usersFile(t, dir), SessionLifetime: config.Duration(time.Hour)},
		Credentials: &authswap.CredentialsConfig{File: credsFile, CacheTTL: &zero},
	}, nil)
	return s, sessions, upstream, credsFile, principals
}

// upConns is the broker's record of the connections that authenticated as
// user.
func upConns(ss *sasltest.Sessions, user string) []sasltest.Conn {
	var out []sasltest.Conn
	for _, c := range ss.Conns() {
		if len(c.Auths) > 0 && c.Auths[0].User == user {
			out = append(out, c)
		}
	}
	return out
}

// reauthsOf counts the re-authentications the broker saw as user.
func reauthsOf(ss *sasltest.Sessions, user string) int {
	n := 0
	for _, c := range upConns(ss, user) {
		n += len(c.Auths) - 1
	}
	return n
}

func checkSessions(t *testing.T, ss *sasltest.Sessions) {
	t.Helper()
	if exp := ss.Expired(); len(exp) > 0 {
		t.Errorf("requests forwarded on expired sessions (the broker closed those connections):\n%s", strings.Join(exp, "\n"))
	}
	for _, c := range ss.Conns() {
		for _, a := range c.Auths {
			if a.User != c.Auths[0].User {
				t.Errorf("upstream connection %s re-authenticated as %q after %q", c.Remote, a.User, c.Auths[0].User)
			}
		}
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestUpstreamReauthEndToEnd: alice authenticates to Strait with PLAIN,
// and produces and consumes continuously for several of the broker's 2 s
// session lifetimes. Each of her upstream connections re-authenticates, as
// alice-up (SCRAM-SHA-256, credentials looked up again each time), before
// the broker would close it: she sees no error and every record, in order.
func TestUpstreamReauthEndToEnd(t *testing.T) {
	s, sessions, _, _, _ := reauthSetup(t)
	alice := plain.Auth{User: "alice", Pass: alicePw}.AsMechanism()
	producer := client(t, s.addr, alice, kgo.DefaultProduceTopic("orders"), kgo.RecordRetries(0), kgo.RequestRetries(0))
	consumer := client(t, s.addr, alice, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(300*time.Millisecond), kgo.RequestRetries(0))
	lookupsBefore := s.counter(t, "strait_authswap_credential_lookups_total", "store", "file", "result", "miss")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var mu sync.Mutex
	var errs []string
	fail := func(format string, args ...any) {
		mu.Lock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	stop := make(chan struct{})
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		pace := time.NewTicker(5 * time.Millisecond)
		defer pace.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-pace.C:
			}
			for j := 0; j < 10; j++ {
				v := fmt.Sprintf("order-%06d", 10*i+j)
				producer.Produce(ctx, kgo.StringRecord(v), func(r *kgo.Record, err error) {
					if err != nil {
						fail("produce %s: %v", r.Value, err)
					}
				})
			}
			if err := producer.Flush(ctx); err != nil {
				fail("flush: %v", err)
				return
			}
			sent.Store(int64(10*i + 10))
		}
	}()
	next := 0
	poll := func() {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		defer pcancel()
		fs := consumer.PollFetches(pctx)
		if pctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, p int32, err error) { fail("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			var n int
			fmt.Sscanf(string(r.Value), "order-%06d", &n)
			if n != next {
				fail("consumed %s, want order-%06d", r.Value, next)
			}
			next = n + 1
		})
	}
	// Until two of alice's upstream connections (produce, fetch) have
	// re-authenticated three times each: three lifetimes at least.
	enough := func() bool {
		n := 0
		for _, c := range upConns(sessions, "alice-up") {
			if len(c.Auths) >= 4 {
				n++
			}
		}
		return n >= 2
	}
	deadline := time.Now().Add(40 * time.Second)
	for !enough() {
		if time.Now().After(deadline) {
			close(stop)
			<-done
			exp := sessions.Expired()
			t.Fatalf("alice's upstream connections did not re-authenticate three times within 40 s: %d connections, %d used after their session ended, e.g. %q",
				len(upConns(sessions, "alice-up")), len(exp), exp[:min(3, len(exp))])
		}
		poll()
	}
	close(stop)
	<-done
	for drain := time.Now().Add(30 * time.Second); int64(next) < sent.Load(); {
		if time.Now().After(drain) {
			t.Fatalf("consumed %d of %d records", next, sent.Load())
		}
		poll()
	}
	mu.Lock()
	for _, e := range errs {
		t.Error(e)
	}
	mu.Unlock()
	checkSessions(t, sessions)

	// Strait's count matches the broker's once the connections are gone.
	producer.Close()
	consumer.Close()
	waitFor(t, "alice's upstream connections to close", 20*time.Second, func() bool {
		for _, c := range upConns(sessions, "alice-up") {
			if !c.Closed {
				return false
			}
		}
		return true
	})
	broker := reauthsOf(sessions, "alice-up")
	counted := s.counter(t, "strait_authswap_upstream_reauthentications_total", "mechanism", "SCRAM-SHA-256", "result", "success")
	if broker == 0 || int(counted) != broker {
		t.Errorf("the broker saw %d re-authentications as alice-up, strait_authswap_upstream_reauthentications_total counted %v", broker, counted)
	}
	if lookups := s.counter(t, "strait_authswap_credential_lookups_total", "store", "file", "result", "miss") - lookupsBefore; int(lookups) < broker {
		t.Errorf("%v credential lookups for %d re-authentications: each must look the credentials up again", lookups, broker)
	}
	n, sum := histogram(t, s, "strait_upstream_reauth_pause_seconds")
	t.Logf("%d upstream connections as alice-up, %d re-authentications; %d records in order; client requests paused %.2f ms on average (%d pauses)",
		len(upConns(sessions, "alice-up")), broker, next, 1000*sum/float64(max(n, 1)), n)
	s.checkNoSecrets(t, alicePw, aliceUpPw, bobUpPw, carolUpPw, sasltest.SuperPass)
}

// TestUpstreamReauthRefused: when a re-authentication fails, that client
// connection is closed (strait_connection_errors_total{reason=
// "upstream_reauth"}, and the reason in
// strait_authswap_upstream_reauthentications_total) before anything more is
// forwarded on it; other clients' connections go on re-authenticating.
// Two ways: the broker no longer knows alice-up (her SCRAM credential is
// deleted: reason sasl), and bob's entry is removed from the credentials
// file (reason no_mapping: the store is asked again at each
// re-authentication).
func TestUpstreamReauthRefused(t *testing.T) {
	s, sessions, upstream, credsFile, principals := reauthSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	loop := func(user, pw string, op func(*kgo.Client) error, errs *atomic.Int64) {
		cl := client(t, s.addr, plain.Auth{User: user, Pass: pw}.AsMechanism(), kgo.DefaultProduceTopic("orders"),
			kgo.MetadataMinAge(100*time.Millisecond), kgo.MetadataMaxAge(300*time.Millisecond))
		wg.Add(1)
		go func() {
			defer wg.Done()
			pace := time.NewTicker(5 * time.Millisecond)
			defer pace.Stop()
			for {
				select {
				case <-stop:
					return
				case <-pace.C:
				}
				if err := op(cl); err != nil {
					errs.Add(1)
				}
			}
		}()
	}
	metadata := func(cl *kgo.Client) error {
		octx, ocancel := context.WithTimeout(ctx, 2*time.Second)
		defer ocancel()
		_, err := cl.Request(octx, kmsg.NewPtrMetadataRequest())
		return err
	}
	produceOne := func(cl *kgo.Client) error {
		octx, ocancel := context.WithTimeout(ctx, 2*time.Second)
		defer ocancel()
		return cl.ProduceSync(octx, kgo.StringRecord("order")).FirstErr()
	}
	var aliceErrs, bobErrs, carolErrs atomic.Int64
	loop("alice", alicePw, produceOne, &aliceErrs)
	loop("bob", bobPw, metadata, &bobErrs)
	loop("carol", carolPw, metadata, &carolErrs)
	stopAll := func() { close(stop); wg.Wait() }
	defer func() {
		select {
		case <-stop:
		default:
			stopAll()
		}
	}()
	reauths := func(result, reason string) float64 {
		return s.counter(t, "strait_authswap_upstream_reauthentications_total", "result", result, "reason", reason)
	}
	waitFor(t, "every client's upstream connections to re-authenticate", 30*time.Second, func() bool {
		return reauthsOf(sessions, "alice-up") > 0 && reauthsOf(sessions, "bob-up") > 0 && reauthsOf(sessions, "carol-up") > 0
	})

	// The broker forgets alice-up.
	admin := client(t, upstream[0], plain.Auth{User: sasltest.SuperUser, Pass: sasltest.SuperPass}.AsMechanism())
	del := kmsg.NewPtrAlterUserSCRAMCredentialsRequest()
	d := kmsg.NewAlterUserSCRAMCredentialsRequestDeletion()
	d.Name, d.Mechanism = "alice-up", 1 // SCRAM-SHA-256
	del.Deletions = append(del.Deletions, d)
	r, err := del.RequestWith(ctx, admin)
	straittest.Must(t, err, "delete alice-up's SCRAM credential")
	if code := r.Results[0].ErrorCode; code != 0 {
		t.Fatalf("delete alice-up's SCRAM credential: %v", kerr.ErrorForCode(code))
	}
	waitFor(t, "a refused re-authentication as alice-up", 30*time.Second, func() bool { return reauths("failure", "sasl") >= 1 })

	// bob's entry leaves the credentials file.
	delete(principals, "bob")
	tmp := writeSecretFile(t, filepath.Dir(credsFile), "upstream.yaml.new", map[string]any{"principals": principals})
	straittest.Must(t, os.Rename(tmp, credsFile), "replace the credentials file")
	waitFor(t, "a re-authentication of bob without a mapping", 30*time.Second, func() bool { return reauths("failure", "no_mapping") >= 1 })

	// carol's connections go on re-authenticating.
	before := reauthsOf(sessions, "carol-up")
	waitFor(t, "more re-authentications as carol-up", 30*time.Second, func() bool { return reauthsOf(sessions, "carol-up") >= before+2 })
	stopAll()

	if n := carolErrs.Load(); n > 0 {
		t.Errorf("carol saw %d errors while alice's and bob's re-authentications failed", n)
	}
	if n := s.counter(t, "strait_connection_errors_total", "reason", "upstream_reauth"); n < 2 {
		t.Errorf("strait_connection_errors_total{reason=upstream_reauth} = %v, want >= 2", n)
	}
	checkSessions(t, sessions)
	logs := s.logs.String()
	for _, want := range []string{`"msg":"upstream re-authentication failed",`, `"reason":"no_mapping"`, `"reason":"rejected"`,
		`"msg":"upstream re-authentication failed: closing the client connection"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line with %s", want)
		}
	}
	t.Logf("re-authentications: %v succeeded, %v refused by the broker, %v without a mapping; connections closed for it: %v; errors seen: alice %d, bob %d, carol %d",
		reauths("success", ""), reauths("failure", "sasl"), reauths("failure", "no_mapping"),
		s.counter(t, "strait_connection_errors_total", "reason", "upstream_reauth"), aliceErrs.Load(), bobErrs.Load(), carolErrs.Load())
	s.checkNoSecrets(t, alicePw, bobPw, carolPw, aliceUpPw, bobUpPw, carolUpPw, sasltest.SuperPass)
}

// histogram returns the sample count and sum of a histogram without labels.
func histogram(t *testing.T, s *strait, name string) (uint64, float64) {
	t.Helper()
	mfs, err := s.reg.Gather()
	straittest.Must(t, err, "gather")
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	return 0, 0
}
