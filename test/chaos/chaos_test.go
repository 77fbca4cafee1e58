package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/internal/kmsdouble"
	"github.com/strait-proxy/strait/internal/straitbin"
	"github.com/strait-proxy/strait/internal/testpki"
)

var digits = regexp.MustCompile(`[0-9]+`)

const (
	idemTopic = "chaos-idem"
	txnTopic  = "chaos-txn"
	encHeader = "strait.enc"
	// secretMark starts every value produced: the brokers must never hold it.
	secretMark = "SECRET-"
	kmsAlias   = "alias/chaos"
)

// plaintext is the value produced for key: deterministic, so a consumer can
// check that what it decrypted is exactly what was sent.
func plaintext(key string) []byte {
	pad := strings.Repeat("p", 40+len(key)%60)
	return []byte(secretMark + key + "-account-" + strconv.Itoa(len(key)*7919) + "-" + pad)
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// ---------------------------------------------------------------- config

func cryptoYAML(name, kmsURL string) string {
	return fmt.Sprintf(`# written by test/chaos
interceptors:
  - name: %s
    config:
      kms:
        aws-kms: {region: us-east-1, endpoint: %q, key_id: %s, timeout: 2s, max_attempts: 2, max_backoff: 50ms}
      rules:
        - {topics: ["chaos-*"], key_id: %s}
      # Short-lived data keys so that the KMS is called all through the run,
      # not only at start: its outages then hit both sides.
      dek: {max_age: 2s, max_uses: 1000, cache_size: 64}
`, name, kmsURL, kmsAlias, kmsAlias)
}

// awsEnv gives the Strait processes credentials for the KMS double and
// nothing else from the SDK's chain.
func awsEnv(dir string) []string {
	return []string{
		"AWS_ACCESS_KEY_ID=AKIDSTRAITCHAOS", "AWS_SECRET_ACCESS_KEY=chaos-secret", "AWS_SESSION_TOKEN=",
		"AWS_PROFILE=", "AWS_REGION=us-east-1", "AWS_DEFAULT_REGION=",
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_WEB_IDENTITY_TOKEN_FILE=", "AWS_ROLE_ARN=",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI=", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=",
	}
}

// ---------------------------------------------------------------- client side bookkeeping

type counterMap struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counterMap) add(k string, n int) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k] += n
	c.mu.Unlock()
}

func (c *counterMap) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func (c *counterMap) String() string {
	s := c.snapshot()
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", k, s[k])
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// errKind shortens a client error to its kind for the figures (numbers
// become N, so that the same kind adds up).
func errKind(err error) string {
	s := digits.ReplaceAllString(err.Error(), "N")
	if len(s) > 90 {
		s = s[:90]
	}
	return strings.TrimSpace(s)
}

// clientHooks counts connection trouble seen by the franz-go clients.
type clientHooks struct {
	connectFailures atomic.Int64
	disconnects     atomic.Int64
}

func (h *clientHooks) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		h.connectFailures.Add(1)
	}
}

func (h *clientHooks) OnBrokerDisconnect(kgo.BrokerMetadata, net.Conn) { h.disconnects.Add(1) }

// idemProducer produces distinct keys to idemTopic, each once.
type idemProducer struct {
	mu       sync.Mutex
	produced int
	acked    map[string]bool
	failed   map[string]error
	errs     counterMap
}

type txnStatus int

const (
	txnCommitted txnStatus = iota // EndTransaction(commit) answered OK
	txnAborted                    // commit never requested: must never be visible
	txnUncertain                  // commit requested, no clean answer: all or nothing
)

type txnProducer struct {
	mu        sync.Mutex
	txns      [][]string // keys by txn number
	status    []txnStatus
	planned   int // aborts chosen by the schedule
	forced    int // aborts after a failed produce or flush
	recreated int
	errs      counterMap
}

// consumerLog is what one consumer group saw.
type consumerLog struct {
	name     string
	mu       sync.Mutex
	seen     map[string]int
	records  int
	bad      int
	badFirst []string
	errs     counterMap
}

func (c *consumerLog) violation(format string, args ...any) {
	c.bad++
	if len(c.badFirst) < 5 {
		c.badFirst = append(c.badFirst, fmt.Sprintf(format, args...))
	}
}

func (c *consumerLog) has(keys []string) (missing []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if c.seen[k] == 0 {
			missing = append(missing, k)
		}
	}
	return missing
}

// ---------------------------------------------------------------- the run

func TestChaos(t *testing.T) {
	straitBin = straitbin.Get(t)
	duration := envDuration(t, "STRAIT_CHAOS_DURATION", 50*time.Second)
	seed := uint64(20261203)
	if v := os.Getenv("STRAIT_CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("STRAIT_CHAOS_SEED=%q: %v", v, err)
		}
		seed = s
	}
	rate := 300 // idempotent records per second
	if v := os.Getenv("STRAIT_CHAOS_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("STRAIT_CHAOS_RATE=%q", v)
		}
		rate = n
	}
	t.Logf("chaos run: duration %v, seed %d (STRAIT_CHAOS_SEED to repeat), %d idempotent records/s", duration, seed, rate)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	started := time.Now()

	dir := t.TempDir()

	// ---- KMS double (AWS KMS JSON 1.1 API), shared by both Straits.
	kms := kmsdouble.NewAWSKMS()
	t.Cleanup(kms.Close)
	kms.CreateKey(kmsAlias)

	// ---- kfake, 3 brokers, fixed ports, state on disk.
	k, err := newCluster(filepath.Join(dir, "kfake"), freePorts(t, 3), []string{idemTopic, txnTopic})
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(k.Close)
	brokers := k.Addrs()

	// ---- Straits: encrypting (plaintext listeners, for producers), and
	// decrypting (TLS listeners, for the decrypted consumer group).
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := awsEnv(dir)
	ca := testpki.New(t)
	certFile, keyFile := ca.Leaf(t, "127.0.0.1", "localhost")
	enc := newStrait(t, "encrypting", brokers, env, "--config", write("enc.yaml", cryptoYAML("encrypt", kms.URL())))
	// The decrypting Strait reaches the KMS through a relay the run can cut:
	// a KMS outage seen by the consumer side only, while producers keep
	// making new data keys it has to unwrap.
	decKMS, err := newForwarder(kms.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(decKMS.Close)
	dec := newStrait(t, "decrypting", brokers, env, "--config", write("dec.yaml", cryptoYAML("decrypt", "http://"+decKMS.addr)),
		"--tls-cert", certFile, "--tls-key", keyFile)
	for _, s := range []*strait{enc, dec} {
		if err := s.start(); err != nil {
			t.Fatalf("start %s strait: %v", s.name, err)
		}
		if err := s.waitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("kfake %v; encrypting strait %s (brokers from port %d, admin %s); decrypting strait (TLS) %s (brokers from %d, admin %s); KMS double %s",
		brokers, enc.Bootstrap, enc.Base, enc.Admin, dec.Bootstrap, dec.Base, dec.Admin, kms.URL())

	hooks := &clientHooks{}
	runCtx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	stopProducing := make(chan struct{})
	// The producers' calls give up 30 s after the stop at the latest, so
	// that a Strait which stopped serving cannot hang the run.
	prodCtx, cancelProd := context.WithCancel(context.Background())
	defer cancelProd()
	go func() {
		select {
		case <-stopProducing:
			time.Sleep(30 * time.Second)
		case <-runCtx.Done():
		}
		cancelProd()
	}()
	var producersWG, consumersWG sync.WaitGroup

	// ---- idempotent producer
	idem := &idemProducer{acked: map[string]bool{}, failed: map[string]error{}}
	idemCl, err := kgo.NewClient(kgo.SeedBrokers(enc.Bootstrap), kgo.ClientID("chaos-idempotent"),
		kgo.DefaultProduceTopic(idemTopic), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordDeliveryTimeout(60*time.Second), kgo.ProducerBatchMaxBytes(128<<10),
		kgo.MaxBufferedRecords(4000), kgo.WithHooks(hooks))
	if err != nil {
		t.Fatal(err)
	}
	defer idemCl.Close()
	producersWG.Add(1)
	go func() {
		defer producersWG.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		perTick := max(1, rate/100)
		for i := 0; ; {
			select {
			case <-stopProducing:
				return
			case <-tick.C:
			}
			for j := 0; j < perTick; j++ {
				key := fmt.Sprintf("idem-%07d", i)
				i++
				idem.mu.Lock()
				idem.produced++
				idem.mu.Unlock()
				idemCl.Produce(prodCtx, &kgo.Record{Key: []byte(key), Value: plaintext(key)}, func(r *kgo.Record, err error) {
					idem.mu.Lock()
					defer idem.mu.Unlock()
					if err == nil {
						idem.acked[key] = true
					} else {
						idem.failed[key] = err
						idem.errs.add(errKind(err), 1)
					}
				})
			}
		}
	}()

	// ---- transactional producer: commit most, abort some.
	txn := &txnProducer{}
	txnRng := rand.New(rand.NewPCG(seed+1, seed+2))
	producersWG.Add(1)
	go func() {
		defer producersWG.Done()
		// NewClient fails only on bad options, which these are not.
		newClient := func() *kgo.Client {
			cl, err := kgo.NewClient(kgo.SeedBrokers(enc.Bootstrap), kgo.ClientID("chaos-transactional"),
				kgo.TransactionalID("chaos-txn"), kgo.TransactionTimeout(30*time.Second),
				kgo.DefaultProduceTopic(txnTopic), kgo.ProducerBatchCompression(kgo.NoCompression()),
				kgo.RecordDeliveryTimeout(30*time.Second), kgo.WithHooks(hooks))
			if err != nil {
				panic(fmt.Sprintf("transactional client options: %v", err))
			}
			return cl
		}
		cl := newClient()
		// A new client has no producer id until it first needs one; the
		// id (with a bumped epoch) is what fences and aborts a transaction
		// an earlier client left open. Get it before leaving, so that no
		// transaction stays open past the run.
		fence := func() {
			ctx, cancel := context.WithTimeout(prodCtx, 60*time.Second)
			defer cancel()
			if _, _, err := cl.ProducerID(ctx); err != nil {
				txn.errs.add("producer id: "+errKind(err), 1)
			}
		}
		defer func() { fence(); cl.Close() }()
		recreate := func() {
			cl.Close()
			cl = newClient()
			txn.mu.Lock()
			txn.recreated++
			txn.mu.Unlock()
		}
		for n := 0; ; n++ {
			select {
			case <-stopProducing:
				return
			case <-time.After(time.Duration(50+txnRng.IntN(150)) * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(prodCtx, 90*time.Second)
			if err := cl.BeginTransaction(); err != nil {
				txn.errs.add("begin: "+errKind(err), 1)
				cancel()
				recreate()
				continue
			}
			size := 5 + txnRng.IntN(16)
			keys := make([]string, size)
			var wg sync.WaitGroup
			var failed atomic.Bool
			for i := range keys {
				keys[i] = fmt.Sprintf("txn-%06d-%02d", n, i)
				wg.Add(1)
				cl.Produce(ctx, &kgo.Record{Key: []byte(keys[i]), Value: plaintext(keys[i])}, func(_ *kgo.Record, err error) {
					if err != nil {
						failed.Store(true)
						txn.errs.add("produce: "+errKind(err), 1)
					}
					wg.Done()
				})
			}
			ferr := cl.Flush(ctx)
			wg.Wait()
			planned := txnRng.IntN(5) == 0
			txn.mu.Lock()
			txn.txns = append(txn.txns, keys)
			txn.status = append(txn.status, txnAborted) // until a commit is asked for
			idx := len(txn.txns) - 1
			txn.mu.Unlock()
			if ferr != nil || failed.Load() || planned {
				txn.mu.Lock()
				if planned && ferr == nil && !failed.Load() {
					txn.planned++
				} else {
					txn.forced++
				}
				txn.mu.Unlock()
				if ferr != nil || failed.Load() {
					cl.AbortBufferedRecords(ctx)
				}
				if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
					txn.errs.add("abort: "+errKind(err), 1)
					cancel()
					recreate()
					continue
				}
				cancel()
				continue
			}
			txn.mu.Lock()
			txn.status[idx] = txnUncertain
			txn.mu.Unlock()
			err := cl.EndTransaction(ctx, kgo.TryCommit)
			cancel()
			if err != nil {
				txn.errs.add("commit: "+errKind(err), 1)
				recreate()
				continue
			}
			txn.mu.Lock()
			txn.status[idx] = txnCommitted
			txn.mu.Unlock()
		}
	}()

	// ---- consumer groups
	consume := func(cl *kgo.Client, log *consumerLog, check func(r *kgo.Record)) {
		defer consumersWG.Done()
		for runCtx.Err() == nil {
			fs := cl.PollFetches(runCtx)
			fs.EachError(func(_ string, _ int32, err error) {
				if !errors.Is(err, context.Canceled) {
					log.errs.add(errKind(err), 1)
				}
			})
			log.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				log.records++
				log.seen[string(r.Key)]++
				check(r)
			})
			log.mu.Unlock()
		}
	}
	groupOpts := func(group string, seeds ...string) []kgo.Opt {
		return []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(idemTopic, txnTopic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.SessionTimeout(10 * time.Second),
			kgo.HeartbeatInterval(time.Second), kgo.RebalanceTimeout(15 * time.Second),
			kgo.FetchMaxWait(500 * time.Millisecond), kgo.WithHooks(hooks)}
	}
	decLog := &consumerLog{name: "decrypted (through the decrypting Strait, TLS, read_committed)", seen: map[string]int{}}
	tlsCfg := ca.ClientTLSConfig()
	decCl, err := kgo.NewClient(append(groupOpts("chaos-decrypted", dec.Bootstrap),
		kgo.DialTLSConfig(tlsCfg), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer decCl.Close()
	consumersWG.Add(1)
	go consume(decCl, decLog, func(r *kgo.Record) {
		if want := plaintext(string(r.Key)); !bytes.Equal(r.Value, want) {
			decLog.violation("%s/%d@%d key %q: value %q, want the plaintext sent", r.Topic, r.Partition, r.Offset, r.Key, tail(string(r.Value), 80))
		}
		for _, h := range r.Headers {
			if h.Key == encHeader {
				decLog.violation("%s/%d@%d key %q: still carries %s", r.Topic, r.Partition, r.Offset, r.Key, encHeader)
			}
		}
	})
	rawLogC := &consumerLog{name: "direct (straight from kfake, no Strait)", seen: map[string]int{}}
	rawCl, err := kgo.NewClient(groupOpts("chaos-direct", brokers...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer rawCl.Close()
	consumersWG.Add(1)
	go consume(rawCl, rawLogC, func(r *kgo.Record) {
		if bytes.Contains(r.Value, []byte(secretMark)) || bytes.Contains(r.Value, plaintext(string(r.Key))) {
			rawLogC.violation("%s/%d@%d key %q: plaintext at rest: %q", r.Topic, r.Partition, r.Offset, r.Key, tail(string(r.Value), 80))
		}
		found := false
		for _, h := range r.Headers {
			found = found || h.Key == encHeader
		}
		if !found {
			rawLogC.violation("%s/%d@%d key %q: stored without the %s header", r.Topic, r.Partition, r.Offset, r.Key, encHeader)
		}
	})

	// ---- warm-up, then baselines.
	warm := time.Now().Add(60 * time.Second)
	for len(decLog.has([]string{"idem-0000100"})) > 0 || len(rawLogC.has([]string{"idem-0000100"})) > 0 {
		if time.Now().After(warm) {
			t.Fatalf("the run did not get going: producers %v / %v, consumers %v / %v",
				idem.errs.String(), txn.errs.String(), decLog.errs.String(), rawLogC.errs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	type resources struct{ goroutines, heap, rss float64 }
	readRes := func(s *strait) (resources, metrics, error) {
		m, err := s.metrics()
		if err != nil {
			return resources{}, nil, err
		}
		return resources{m.Sum("go_goroutines"), m.Sum("go_memstats_heap_inuse_bytes"), m.Sum("process_resident_memory_bytes")}, m, nil
	}
	baseline := map[string]resources{}
	for _, s := range []*strait{enc, dec} {
		r, m, err := readRes(s)
		if err != nil {
			t.Fatalf("%s strait /metrics: %v", s.name, err)
		}
		if !m.Has("go_goroutines") || !m.Has("go_memstats_heap_inuse_bytes") {
			t.Fatalf("%s strait /metrics lacks go_goroutines or go_memstats_heap_inuse_bytes", s.name)
		}
		baseline[s.name] = r
		t.Logf("baseline after warm-up, %s strait: %.0f goroutines, heap in use %.1f MiB, RSS %.1f MiB",
			s.name, r.goroutines, r.heap/(1<<20), r.rss/(1<<20))
	}

	// ---- chaos
	var (
		faults   counterMap
		hostile  = newHostileStats()
		hostWG   sync.WaitGroup
		slowCut  atomic.Int64
		slowRun  atomic.Int64
		tlsDone  atomic.Int64
		unexpect []string
		// enc counters of earlier incarnations, scraped just before each SIGKILL
		encEarlier []metrics
	)
	hostileCtx, stopHostile := context.WithCancel(context.Background())
	defer stopHostile()
	checkAlive := func() {
		for _, s := range []*strait{enc, dec} {
			if s.Running() {
				continue
			}
			unexpect = append(unexpect, fmt.Sprintf("%s strait exited by itself at %v", s.name, time.Since(started).Round(time.Second)))
			if err := s.start(); err != nil {
				t.Errorf("restart %s strait: %v", s.name, err)
			} else if err := s.waitReady(60 * time.Second); err != nil {
				t.Error(err)
			}
		}
	}
	// After each fault: has either Strait panicked, or given frame budget
	// back twice (strait_frame_budget_bytes below zero)? The first sighting
	// is logged with the fault that preceded it; the run fails at the end.
	var sick []string
	sickSeen := map[string]bool{}
	watch := func(after string) {
		for _, s := range []*strait{enc, dec} {
			m, err := s.metrics()
			if err != nil {
				continue // e.g. just restarted
			}
			p, b := m.Sum("strait_panics_total"), m.Sum("strait_frame_budget_bytes")
			if (p > 0 || b < 0) && !sickSeen[s.name+fmt.Sprint(s.starts)] {
				sickSeen[s.name+fmt.Sprint(s.starts)] = true
				msg := fmt.Sprintf("t=%v %s strait (process #%d): strait_panics_total %v, strait_frame_budget_bytes %v, first seen after %s",
					time.Since(started).Round(100*time.Millisecond), s.name, s.starts, p, b, after)
				sick = append(sick, msg)
				t.Log(msg)
			}
		}
	}
	kinds := []string{"broker-kill", "cluster-restart", "kms-fault", "kms-cut-decrypt", "garbage", "slowloris", "tls-reset", "strait-kill"}
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
	chaosEnd := time.Now().Add(duration)
	var schedule []string
	for time.Now().Before(chaosEnd) && !t.Failed() {
		if len(schedule) == 0 {
			schedule = append(schedule, kinds...)
			rng.Shuffle(len(schedule), func(i, j int) { schedule[i], schedule[j] = schedule[j], schedule[i] })
		}
		kind := schedule[0]
		schedule = schedule[1:]
		at := time.Since(started).Round(100 * time.Millisecond)
		var detail string
		switch kind {
		case "broker-kill":
			node := int32(rng.IntN(3))
			down := between(1500*time.Millisecond, 4*time.Second)
			if err := k.killNode(node); err != nil {
				t.Errorf("kill broker %d: %v", node, err)
				break
			}
			time.Sleep(down)
			if err := k.restoreNode(node); err != nil {
				t.Errorf("restore broker %d: %v", node, err)
			}
			detail = fmt.Sprintf("node %d down %v", node, down.Round(time.Millisecond))
		case "cluster-restart":
			down := between(200*time.Millisecond, 1500*time.Millisecond)
			if err := k.restart(down); err != nil {
				t.Fatalf("kfake restart from its data directory: %v", err)
			}
			detail = fmt.Sprintf("all brokers down %v, state reloaded from disk", down.Round(time.Millisecond))
		case "kms-fault":
			f := []kmsdouble.Fault{kmsdouble.Fault5xx, kmsdouble.FaultThrottle, kmsdouble.FaultDown, kmsdouble.FaultHang}[rng.IntN(4)]
			d := between(2*time.Second, 5*time.Second)
			before := kms.Calls("GenerateDataKey") + kms.Calls("Decrypt")
			kms.SetFault(f)
			time.Sleep(d)
			kms.SetFault(kmsdouble.FaultNone)
			kind = "kms-" + f.String()
			detail = fmt.Sprintf("%v, %d KMS calls during it", d.Round(time.Millisecond), kms.Calls("GenerateDataKey")+kms.Calls("Decrypt")-before)
		case "kms-cut-decrypt":
			d := between(2*time.Second, 5*time.Second)
			before := kms.Calls("Decrypt")
			if err := decKMS.cut(true); err != nil {
				t.Errorf("cut the decrypting Strait's KMS path: %v", err)
			}
			time.Sleep(d)
			if err := decKMS.cut(false); err != nil {
				t.Fatalf("restore the decrypting Strait's KMS path: %v", err)
			}
			detail = fmt.Sprintf("the decrypting Strait's path to the KMS down %v (connections refused and reset); %d Decrypt calls reached the KMS meanwhile",
				d.Round(time.Millisecond), kms.Calls("Decrypt")-before)
		case "garbage":
			r := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
			targets := []string{enc.Bootstrap, net.JoinHostPort("127.0.0.1", strconv.Itoa(enc.Base+rng.IntN(3)))}
			for _, a := range targets {
				hostWG.Add(1)
				go func() { defer hostWG.Done(); sendGarbage(hostileCtx, r, a, hostile) }()
				r = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
			}
			detail = fmt.Sprintf("%d kinds to %v", len(garbageKinds), targets)
		case "slowloris":
			n := 4 + rng.IntN(5)
			d := between(4*time.Second, 10*time.Second)
			for i := 0; i < n; i++ {
				a := enc.Bootstrap
				if i%2 == 1 {
					a = net.JoinHostPort("127.0.0.1", strconv.Itoa(dec.Base+rng.IntN(3)))
				}
				hostWG.Add(1)
				go func() {
					defer hostWG.Done()
					cut, err := slowloris(hostileCtx, a, d)
					if err == nil {
						slowRun.Add(1)
						if cut {
							slowCut.Add(1)
						}
					}
				}()
			}
			detail = fmt.Sprintf("%d connections, one byte a second for up to %v", n, d.Round(time.Millisecond))
		case "tls-reset":
			n := 10 + rng.IntN(20)
			r := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
			addrs := []string{dec.Bootstrap}
			for i := 0; i < 3; i++ {
				addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(dec.Base+i)))
			}
			hostWG.Add(1)
			go func() {
				defer hostWG.Done()
				for i := 0; i < n && hostileCtx.Err() == nil; i++ {
					if tlsReset(r, addrs[i%len(addrs)]) == nil {
						tlsDone.Add(1)
					}
				}
			}()
			detail = fmt.Sprintf("%d handshakes reset", n)
		case "strait-kill":
			watch("the faults before this SIGKILL")
			if m, err := enc.metrics(); err == nil {
				encEarlier = append(encEarlier, m)
			}
			enc.kill()
			down := between(0, time.Second)
			time.Sleep(down)
			if err := enc.start(); err != nil {
				t.Fatalf("restart encrypting strait: %v", err)
			}
			if err := enc.waitReady(60 * time.Second); err != nil {
				t.Fatal(err)
			}
			detail = fmt.Sprintf("SIGKILL, restarted on the same ports after %v", down.Round(time.Millisecond))
		}
		faults.add(kind, 1)
		t.Logf("t=%v chaos: %s: %s", at, kind, detail)
		watch(kind)
		time.Sleep(between(500*time.Millisecond, 2500*time.Millisecond))
		checkAlive()
	}
	t.Logf("chaos phase over after %v: faults injected %s", time.Since(started).Round(time.Second), faults.String())
	hostWG.Wait()
	stopHostile()
	kms.SetFault(kmsdouble.FaultNone)
	if err := decKMS.cut(false); err != nil {
		t.Fatal(err)
	}
	checkAlive()

	// ---- stop producing, let everything in flight finish.
	close(stopProducing)
	producersWG.Wait()
	fctx, fcancel := context.WithTimeout(context.Background(), 120*time.Second)
	if err := idemCl.Flush(fctx); err != nil {
		t.Errorf("flushing the idempotent producer: %v", err)
	}
	fcancel()

	idem.mu.Lock()
	ackedKeys := make([]string, 0, len(idem.acked))
	for key := range idem.acked {
		ackedKeys = append(ackedKeys, key)
	}
	produced, nFailed := idem.produced, len(idem.failed)
	idem.mu.Unlock()
	txn.mu.Lock()
	var committedKeys []string
	status := map[string]txnStatus{} // by key
	var nCommitted, nAborted, nUncertain, txnRecords int
	for i, keys := range txn.txns {
		txnRecords += len(keys)
		switch txn.status[i] {
		case txnCommitted:
			nCommitted++
			committedKeys = append(committedKeys, keys...)
		case txnAborted:
			nAborted++
		case txnUncertain:
			nUncertain++
		}
		for _, key := range keys {
			status[key] = txn.status[i]
		}
	}
	txn.mu.Unlock()
	t.Logf("idempotent producer: %d records produced, %d acknowledged, %d failed (%s)", produced, len(ackedKeys), nFailed, idem.errs.String())
	t.Logf("transactional producer: %d transactions (%d records): %d committed (%d records), %d aborted (%d planned, %d after a failed produce or flush), %d commit outcome unknown; client recreated %d times; errors %s",
		len(txn.txns), txnRecords, nCommitted, len(committedKeys), nAborted, txn.planned, txn.forced, nUncertain, txn.recreated, txn.errs.String())
	if len(ackedKeys) == 0 || nCommitted == 0 {
		t.Fatalf("nothing acknowledged (idempotent %d, committed transactions %d): the run proves nothing", len(ackedKeys), nCommitted)
	}

	// ---- the consumer groups catch up: every acknowledged and committed
	// record at least once (bounded wait).
	wantSeen := append(append([]string(nil), ackedKeys...), committedKeys...)
	sort.Strings(wantSeen)
	drainEnd := time.Now().Add(120 * time.Second)
	for time.Now().Before(drainEnd) && (len(decLog.has(wantSeen)) > 0 || len(rawLogC.has(wantSeen)) > 0) {
		time.Sleep(500 * time.Millisecond)
	}

	// ---- Strait's resources back near the baseline (clients still
	// connected, hostile ones gone). Wait a bounded while for the
	// connections Strait closes lazily.
	for _, s := range []*strait{enc, dec} {
		b := baseline[s.name]
		var r resources
		var err error
		ok := false
		for i := 0; i < 60 && !ok; i++ {
			if i > 0 {
				time.Sleep(500 * time.Millisecond)
			}
			r, _, err = readRes(s)
			ok = err == nil && r.goroutines <= b.goroutines+50 && r.heap <= 2*b.heap+32<<20
		}
		if err != nil {
			t.Errorf("%s strait /metrics at the end: %v", s.name, err)
			continue
		}
		t.Logf("resources, %s strait: goroutines %.0f → %.0f, heap in use %.1f → %.1f MiB, RSS %.1f → %.1f MiB (baseline after warm-up → after the run; process started %d times)",
			s.name, b.goroutines, r.goroutines, b.heap/(1<<20), r.heap/(1<<20), b.rss/(1<<20), r.rss/(1<<20), s.starts)
		if !ok {
			t.Errorf("%s strait did not come back near its baseline: goroutines %.0f (baseline %.0f, bound +50), heap in use %.1f MiB (baseline %.1f, bound 2x+32 MiB)",
				s.name, r.goroutines, b.goroutines, r.heap/(1<<20), b.heap/(1<<20))
		}
	}

	stopClients()
	consumersWG.Wait()

	// ---- Strait's own counters.
	encNow, err1 := enc.metrics()
	decNow, err2 := dec.metrics()
	if err1 != nil || err2 != nil {
		t.Fatalf("final /metrics: %v %v", err1, err2)
	}
	encAll := append(encEarlier, encNow)
	encSum := func(name string, with ...string) float64 {
		var total float64
		for _, m := range encAll {
			total += m.Sum(name, with...)
		}
		return total
	}
	if p := encSum("strait_panics_total") + decNow.Sum("strait_panics_total"); p != 0 {
		t.Errorf("strait_panics_total = %v", p)
	}
	// The frame budget held with no request in flight: never below zero
	// (a negative figure is budget given back twice).
	for _, x := range []struct {
		name string
		m    metrics
	}{{"encrypting", encNow}, {"decrypting", decNow}} {
		held := x.m.Sum("strait_frame_budget_bytes")
		t.Logf("%s strait: strait_frame_budget_bytes %v at the end", x.name, held)
		if held < 0 {
			t.Errorf("%s strait: strait_frame_budget_bytes = %v: frame budget released more often than taken", x.name, held)
		}
	}
	t.Logf("encrypting strait (all %d processes, counters scraped before each SIGKILL): records encrypted ok %.0f, errors %.0f; partitions refused (client retries) %.0f; KMS errors %.0f; upstream dial errors %.0f; connection errors %.0f",
		enc.starts, encSum("strait_crypto_records_total", `op="encrypt"`, `result="ok"`), encSum("strait_crypto_records_total", `op="encrypt"`, `result="error"`),
		encSum("strait_crypto_partitions_refused_total"), encSum("strait_kms_errors_total"), encSum("strait_upstream_dial_errors_total"), encSum("strait_connection_errors_total"))
	t.Logf("decrypting strait: records decrypted ok %.0f, errors %.0f; partitions refused (client retries) %.0f; KMS errors %.0f; unwraps throttled %.0f; upstream dial errors %.0f; connection errors %.0f",
		decNow.Sum("strait_crypto_records_total", `op="decrypt"`, `result="ok"`), decNow.Sum("strait_crypto_records_total", `op="decrypt"`, `result="error"`),
		decNow.Sum("strait_crypto_partitions_refused_total"), decNow.Sum("strait_kms_errors_total"), decNow.Sum("strait_kms_unwrap_throttled_total"),
		decNow.Sum("strait_upstream_dial_errors_total"), decNow.Sum("strait_connection_errors_total"))
	t.Logf("KMS double: %d GenerateDataKey and %d Decrypt calls (faulted ones included)", kms.Calls("GenerateDataKey"), kms.Calls("Decrypt"))
	t.Logf("franz-go clients: %d failed connection attempts, %d disconnections", hooks.connectFailures.Load(), hooks.disconnects.Load())
	hostile.mu.Lock()
	t.Logf("hostile clients: garbage sent %v, closed by Strait %v, dial refused %d; slowloris %d run, %d cut by Strait; %d TLS handshakes reset",
		hostile.sent, hostile.closedBy, hostile.dialErrs, slowRun.Load(), slowCut.Load(), tlsDone.Load())
	for _, s := range hostile.stayed {
		t.Errorf("hostile input left open by Strait for 15s: %s", s)
	}
	hostile.mu.Unlock()
	for _, m := range sick {
		t.Errorf("%s", m)
	}
	for _, u := range unexpect {
		t.Errorf("%s", u)
	}
	for _, kind := range []string{"broker-kill", "cluster-restart", "kms-cut-decrypt", "garbage", "slowloris", "tls-reset", "strait-kill"} {
		if faults.snapshot()[kind] == 0 && duration >= 40*time.Second {
			t.Errorf("no %s fault was injected: the run is too short for its schedule", kind)
		}
	}

	// ---- what the brokers hold.
	idemStored, idemRaw, err := scanRetry(brokers, idemTopic)
	if err != nil {
		t.Fatalf("reading %s from kfake: %v", idemTopic, err)
	}
	txnStored, txnRaw, err := scanRetry(brokers, txnTopic)
	if err != nil {
		t.Fatalf("reading %s from kfake: %v", txnTopic, err)
	}
	checkAtRest := func(topic string, recs []storedRecord, raw []byte) {
		if bytes.Contains(raw, []byte(secretMark)) {
			i := bytes.Index(raw, []byte(secretMark))
			t.Errorf("%s: plaintext in the raw fetch bytes: %q", topic, raw[i:min(len(raw), i+60)])
		}
		for _, r := range recs {
			hasHdr := false
			for _, h := range r.Headers {
				hasHdr = hasHdr || h.Key == encHeader
			}
			if !hasHdr || bytes.Contains(r.Value, []byte(secretMark)) {
				t.Errorf("%s/%d@%d key %q stored without encryption (header %v)", topic, r.Partition, r.Offset, r.Key, hasHdr)
				return
			}
		}
		if len(recs) > 0 && !bytes.Contains(raw, recs[len(recs)-1].Key) {
			t.Errorf("%s: key %q not found in the raw bytes: the plaintext search is broken", topic, recs[len(recs)-1].Key)
		}
	}
	checkAtRest(idemTopic, idemStored, idemRaw)
	checkAtRest(txnTopic, txnStored, txnRaw)

	// Idempotent: each acknowledged key exactly once; none more than once.
	idemCount := map[string]int{}
	for _, r := range idemStored {
		idemCount[string(r.Key)]++
	}
	var lost, dup []string
	for _, key := range ackedKeys {
		if idemCount[key] != 1 {
			lost = append(lost, fmt.Sprintf("%s×%d", key, idemCount[key]))
		}
	}
	for key, n := range idemCount {
		if n > 1 {
			dup = append(dup, fmt.Sprintf("%s×%d", key, n))
		}
	}
	sort.Strings(lost)
	sort.Strings(dup)
	t.Logf("%s at rest: %d records, %d raw bytes, %d distinct keys (acknowledged %d, failed %d of which %d stored)",
		idemTopic, len(idemStored), len(idemRaw), len(idemCount), len(ackedKeys), nFailed, len(idemCount)-countAcked(idemCount, idem.acked))
	if len(lost) > 0 {
		t.Errorf("%s: %d acknowledged records not stored exactly once: %v", idemTopic, len(lost), head(lost, 10))
	}
	if len(dup) > 0 {
		t.Errorf("%s: %d keys stored more than once: %v", idemTopic, len(dup), head(dup, 10))
	}

	// Transactional: committed transactions stored once each and committed;
	// aborted ones never committed; unknown outcomes all or nothing.
	txnFates := map[string][]fate{}
	for _, r := range txnStored {
		txnFates[string(r.Key)] = append(txnFates[string(r.Key)], r.Fate)
	}
	committedOnce := func(key string) int {
		n := 0
		for _, f := range txnFates[key] {
			if f == committed {
				n++
			}
		}
		return n
	}
	var bad []string
	var openAtEnd, uncertainVisible int
	for key, st := range status {
		c := committedOnce(key)
		for _, f := range txnFates[key] {
			if f == open || f == notTxn {
				openAtEnd++
			}
		}
		switch st {
		case txnCommitted:
			if c != 1 {
				bad = append(bad, fmt.Sprintf("committed %s: %d committed copies (fates %v)", key, c, txnFates[key]))
			}
		case txnAborted:
			if c != 0 {
				bad = append(bad, fmt.Sprintf("aborted %s: committed at rest (fates %v)", key, txnFates[key]))
			}
		case txnUncertain:
			if c > 1 {
				bad = append(bad, fmt.Sprintf("unknown-outcome %s: %d committed copies", key, c))
			}
		}
	}
	for i, keys := range txn.txns {
		if txn.status[i] != txnUncertain {
			continue
		}
		n := 0
		for _, key := range keys {
			n += min(committedOnce(key), 1)
		}
		if n != 0 && n != len(keys) {
			bad = append(bad, fmt.Sprintf("transaction %d (unknown outcome): %d of its %d records committed", i, n, len(keys)))
		}
		if n > 0 {
			uncertainVisible++
		}
	}
	sort.Strings(bad)
	t.Logf("%s at rest: %d records, %d raw bytes; %d transactions with an unknown outcome turned out committed; %d records of still-open or non-transactional batches",
		txnTopic, len(txnStored), len(txnRaw), uncertainVisible, openAtEnd)
	if len(bad) > 0 {
		t.Errorf("%s: %d transactional records in the wrong state: %v", txnTopic, len(bad), head(bad, 10))
	}
	if openAtEnd > 0 {
		t.Errorf("%s: %d records in transactions never ended (or written without one)", txnTopic, openAtEnd)
	}

	// Consumer groups: everything acknowledged/committed seen; nothing of
	// an aborted transaction through read_committed; no violations.
	for _, c := range []*consumerLog{decLog, rawLogC} {
		miss := c.has(wantSeen)
		c.mu.Lock()
		t.Logf("consumer group %s: %d records received, %d distinct keys, fetch errors %s", c.name, c.records, len(c.seen), c.errs.String())
		if len(miss) > 0 {
			t.Errorf("consumer group %s: %d acknowledged or committed records never received: %v", c.name, len(miss), head(miss, 10))
		}
		if c.bad > 0 {
			t.Errorf("consumer group %s: %d bad records: %v", c.name, c.bad, c.badFirst)
		}
		if c == decLog {
			var abortedSeen []string
			for key := range c.seen {
				st, isTxn := status[key]
				if isTxn && (st == txnAborted || (st == txnUncertain && committedOnce(key) == 0)) {
					abortedSeen = append(abortedSeen, key)
				}
			}
			sort.Strings(abortedSeen)
			if len(abortedSeen) > 0 {
				t.Errorf("read_committed consumer through Strait received %d records of aborted transactions: %v", len(abortedSeen), head(abortedSeen, 10))
			}
		}
		c.mu.Unlock()
	}
	t.Logf("chaos run finished in %v", time.Since(started).Round(time.Second))
}

func countAcked(stored map[string]int, acked map[string]bool) int {
	n := 0
	for k := range stored {
		if acked[k] {
			n++
		}
	}
	return n
}

func head(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "…")
	}
	return s
}
