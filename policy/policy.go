// Package policy is Strait's policy interceptor: on Fetch and ShareFetch
// responses it asks an embedded OPA policy, per record or once per
// (principal, topic, inputs read), whether the consumer gets the record,
// and which fields it sees in clear, redacted, masked, tokenized or still
// encrypted. It fails closed: a record the policy could not decide is
// dropped or has every classified field redacted, never passed as is.
//
// See docs/policy.md.
package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/fields"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/burstlog"
	"github.com/strait-proxy/strait/records"
	"github.com/strait-proxy/strait/topicid"
)

// Env is what the interceptor needs from the process.
type Env struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer
	// Topics resolves topic ids (Fetch v13+, ShareFetch) to names.
	Topics *topicid.Names
}

// Policy is a running policy interceptor's state.
type Policy struct {
	cfg     Config
	log     *slog.Logger
	topics  *topicid.Names
	m       *metrics
	st      atomic.Pointer[runtime]
	tok     *tokenizer
	audit   *auditLog
	timeout time.Duration
	burst   *burstlog.Logger
	rw      records.Rewriter
	workers int // runs of one large partition decided at once (parallel.go)
}

// runtime is one version of the policy with its caches; a reload swaps it
// whole, so one partition is decided by one version.
type runtime struct {
	c       *Compiled
	cache   decisionCache
	probes  probeCache
	walkers walkerCache
	topics  sync.Map // name -> *topicInfo
}

func (rt *runtime) topic(name string) *topicInfo {
	if v, ok := rt.topics.Load(name); ok {
		return v.(*topicInfo)
	}
	ti := newTopicInfo(rt.c.Catalog, name)
	v, _ := rt.topics.LoadOrStore(name, ti)
	return v.(*topicInfo)
}

// New builds the policy interceptor.
func New(cfg Config, env Env) (*interceptor.Interceptor, error) {
	p, err := NewPolicy(cfg, env)
	if err != nil {
		return nil, err
	}
	return p.Interceptor(), nil
}

// NewPolicy loads the policy; Interceptor wraps it.
func NewPolicy(cfg Config, env Env) (*Policy, error) {
	c, err := Load(cfg)
	if err != nil {
		return nil, err
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := env.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	p := &Policy{cfg: cfg, log: log, topics: env.Topics, m: newMetrics(reg)}
	p.burst = burstlog.New(log)
	p.workers = defaultWorkers()
	if p.topics == nil {
		p.topics = topicid.New()
	}
	p.timeout = cfg.EvalTimeout.D()
	if p.timeout == 0 {
		p.timeout = 100 * time.Millisecond
	}
	if cfg.Tokenize != nil {
		key, err := cfg.Tokenize.key()
		if err != nil {
			return nil, err
		}
		if p.tok, err = newTokenizer(key, cfg.Tokenize.FF1 == nil || *cfg.Tokenize.FF1); err != nil {
			return nil, fmt.Errorf("tokenize: %v", err)
		}
	}
	if cfg.Audit != nil {
		if p.audit, err = openAudit(cfg.Audit); err != nil {
			return nil, err
		}
	}
	p.swap(c)
	log.Info("policy loaded", "revision", c.Revision, "query", c.query, "reads", c.reads.refs,
		"per_record", c.reads.record(), "cached", c.reads.cacheable())
	return p, nil
}

func (p *Policy) swap(c *Compiled) {
	size := p.cfg.CacheSize
	if size == 0 {
		size = 65536
	}
	rt := &runtime{c: c}
	rt.cache.max = size
	rt.probes.max = size
	p.st.Store(rt)
}

// Revision is the revision of the policy in force.
func (p *Policy) Revision() string { return p.st.Load().c.Revision }

// Interceptor returns the interceptor.
func (p *Policy) Interceptor() *interceptor.Interceptor {
	hooks := []interceptor.Hook{
		{Key: 1, MaxVersion: interceptor.Latest, Response: p.onFetch},
		{Key: 78, MaxVersion: interceptor.Latest, Request: p.onShareFetchRequest, Response: p.onShareFetch},
		{Key: 79, MaxVersion: interceptor.Latest, Request: p.onShareAcknowledgeRequest, Response: p.onShareAcknowledge},
	}
	// Fetch v4+ (older versions make brokers down-convert to message sets
	// the policy cannot rewrite); Produce v3+ (record batches of magic 2).
	requires := []interceptor.VersionRange{{Key: 1, Min: 4, Max: math.MaxInt16}}
	if p.cfg.Produce {
		hooks = append(hooks, interceptor.Hook{Key: 0, MinVersion: 3, MaxVersion: interceptor.Latest, Request: p.onProduce, Response: p.mergeProduce})
		requires = append(requires, interceptor.VersionRange{Key: 0, Min: 3, Max: math.MaxInt16})
	}
	return &interceptor.Interceptor{
		Name:     Name,
		Hooks:    hooks,
		Requires: requires,
		Files:    p.files(),
		Close:    p.Close,
	}
}

// Close closes the audit log.
func (p *Policy) Close() error {
	if p.audit != nil {
		return p.audit.close()
	}
	return nil
}

// files are what the policy was built from: the binary reloads the
// configuration when one changes.
func (p *Policy) files() []string {
	fs := append([]string(nil), p.st.Load().c.files...)
	if t := p.cfg.Tokenize; t != nil && t.KeyFile != "" {
		fs = append(fs, t.KeyFile)
	}
	return fs
}

func connOf(x *interceptor.Exchange) *Conn {
	c := &Conn{Listener: x.Conn.Listener, ClientID: x.Conn.ClientID(), Principal: x.Conn.Principal()}
	if x.Conn.RemoteAddr != nil {
		c.ClientAddr = x.Conn.RemoteAddr.String()
	}
	return c
}

// arena is the pooled output buffer of one response.
type arena struct {
	ref *[]byte
	b   []byte
}

var arenas = sync.Pool{New: func() any { return new([]byte) }}

func (a *arena) buf(x *interceptor.Exchange) []byte {
	if a.ref == nil {
		a.ref = arenas.Get().(*[]byte)
		a.b = (*a.ref)[:0]
		x.OnDone(func() {
			if cap(a.b) <= 16<<20 {
				*a.ref = a.b[:0]
				arenas.Put(a.ref)
			}
		})
	}
	return a.b
}

func (a *arena) keep(out []byte) []byte {
	start := len(a.b)
	a.b = out
	return out[start:len(out):len(out)]
}

func (p *Policy) onFetch(ctx context.Context, x *interceptor.Exchange) error {
	resp := x.Response.(*kmsg.FetchResponse)
	rt := p.st.Load()
	conn := connOf(x)
	ap := newApplier(p.tok)
	var ar arena
	changed := false
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		name := t.Topic
		var nameErr error
		if x.Version >= 13 {
			name, nameErr = p.topics.Resolve(ctx, t.TopicID)
		}
		for pi := range t.Partitions {
			pt := &t.Partitions[pi]
			if len(pt.RecordBatches) == 0 {
				continue
			}
			if nameErr != nil {
				// Fail closed: without the name there is no policy to
				// apply. The client refreshes metadata and retries.
				pt.ErrorCode, pt.RecordBatches = kerr.UnknownTopicID.Code, nil
				changed = true
				p.m.failures.WithLabelValues("topic").Inc()
				p.burst.Error("fetch partition refused: topic id not resolvable", "partition", pt.Partition, "err", nameErr)
				continue
			}
			out, ch, err := p.partition(ctx, rt, ap, &ar, x, conn, name, pt.Partition, pt.RecordBatches, nil)
			if err != nil {
				pt.ErrorCode, pt.RecordBatches = kerr.CorruptMessage.Code, nil
				changed = true
				p.burst.Error("fetch partition refused: records could not be read", "topic", name, "partition", pt.Partition, "err", err)
				continue
			}
			if ch {
				pt.RecordBatches, changed = out, true
			}
		}
	}
	if changed {
		x.MarkModified()
	}
	return nil
}

func (p *Policy) onShareFetch(ctx context.Context, x *interceptor.Exchange) error {
	resp := x.Response.(*kmsg.ShareFetchResponse)
	rt := p.st.Load()
	conn := connOf(x)
	ap := newApplier(p.tok)
	var ar arena
	changed := false
	var drops map[sharePart][]offRange // dropped offsets, to acknowledge (shareack.go)
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		name, nameErr := p.topics.Resolve(ctx, t.TopicID)
		for pi := range t.Partitions {
			pt := &t.Partitions[pi]
			if len(pt.Records) == 0 {
				continue
			}
			if nameErr != nil || name == "" {
				msg := "strait: topic id not resolvable; policy cannot apply"
				pt.ErrorCode, pt.ErrorMessage, pt.Records, pt.AcquiredRecords = kerr.UnknownTopicID.Code, &msg, nil, nil
				changed = true
				p.m.failures.WithLabelValues("topic").Inc()
				p.burst.Error("share fetch partition refused: topic id not resolvable", "partition", pt.Partition, "err", nameErr)
				continue
			}
			var dropped []offRange
			out, ch, err := p.partition(ctx, rt, ap, &ar, x, conn, name, pt.Partition, pt.Records, &dropped)
			if len(dropped) > 0 {
				if drops == nil {
					drops = map[sharePart][]offRange{}
				}
				drops[sharePart{t.TopicID, pt.Partition}] = dropped
			}
			if err != nil {
				msg := "strait: " + err.Error()
				pt.ErrorCode, pt.ErrorMessage, pt.Records, pt.AcquiredRecords = kerr.CorruptMessage.Code, &msg, nil, nil
				changed = true
				p.burst.Error("share fetch partition refused: records could not be read", "topic", name, "partition", pt.Partition, "err", err)
				continue
			}
			if ch {
				pt.Records, changed = out, true
			}
		}
	}
	if p.shareFetchDone(x, resp, drops) {
		changed = true
	}
	if changed {
		x.MarkModified()
	}
	return nil
}

var errLegacy = errors.New("magic 0/1 message set: the policy cannot read it")

// partition decides on the records of one partition's batches.
func (p *Policy) partition(ctx context.Context, rt *runtime, ap *applier, ar *arena, x *interceptor.Exchange,
	conn *Conn, topic string, part int32, batches []byte, dropped *[]offRange) ([]byte, bool, error) {
	rd := &rt.c.reads
	ti := rt.topic(topic)
	pc := newPartCtx(rd, conn, "fetch", topic, part, ti)
	b := batchAudit{first: -1, last: -1}

	// Message sets of magic 0/1 would pass the rewriter unseen: refuse.
	n := 0
	var bounds []int // batch end positions, for a parallel rewrite
	big := len(batches) >= parallelMinBytes && p.workers > 1
	if err := records.Walk(batches, func(bt *records.Batch) error {
		if !bt.Partial && bt.Magic < 2 {
			return errLegacy
		}
		if !bt.Partial && !bt.IsControl() {
			n += int(bt.Header.NumRecords)
		}
		if big {
			bounds = append(bounds, bt.Pos+len(bt.Raw))
		}
		return nil
	}); err != nil {
		return nil, false, err
	}

	var whole *decision
	if !rd.record() {
		whole = p.decide(ctx, rt, pc, nil, nil, nil)
	} else if rd.probeable() {
		// For this connection the policy may not look at the records.
		whole = p.contextDecision(ctx, rt, pc, n)
	}
	if whole != nil {
		if !whole.drop && len(whole.groups) == 0 {
			// Deliver as is: count for the audit line without decoding.
			_ = records.Walk(batches, func(bt *records.Batch) error {
				if !bt.Partial && bt.Magic == 2 && !bt.IsControl() && bt.Header.NumRecords > 0 {
					b.span(bt.Header.FirstOffset, bt.Header.FirstOffset+int64(bt.Header.LastOffsetDelta))
					b.delivered += int(bt.Header.NumRecords)
				}
				return nil
			})
			p.finish(rt, pc, &b, whole)
			return batches, false, nil
		}
	}
	pc.memo = &memo{}
	defer pc.memo.flush(p)
	run := &filterRun{p: p, ctx: ctx, rt: rt, pc: pc, whole: whole, loc: ti.locator(rd), ap: ap, b: b, key: pc.key, dropped: dropped,
		orig: decrypt.Original(x, topic, part)}
	if run.orig != nil {
		ap.orig = run.origField
		defer func() { ap.orig = nil }()
	}
	var out []byte
	var changed bool
	var err error
	if chunks := p.chunks(batches, bounds); len(chunks) > 1 {
		out, changed, err = p.filterParallel(run, ar, x, batches, chunks)
	} else {
		out, changed, err = p.rw.Filter(ar.buf(x), batches, run.record)
		if changed {
			out = ar.keep(out)
		}
	}
	if err != nil {
		return nil, false, err
	}
	p.finish(rt, pc, &run.b, whole)
	if !changed {
		return batches, false, nil
	}
	return out, true, nil
}

// filterRun is the state of deciding a run of batches on one goroutine.
type filterRun struct {
	p     *Policy
	ctx   context.Context
	rt    *runtime
	pc    *partCtx
	whole *decision // the partition's decision, nil: per record
	loc   *locator  // nil: no single-walk locator for the topic
	ap    *applier
	b     batchAudit
	key   []byte // the cache key buffer
	// Records of a partition tend to share their fate: after a dropped
	// record, the next is decided with a walk for the read fields alone
	// (cheaper than the locator's walker when it is dropped too; the fast
	// top-level scan costs the same either way).
	prevDropped bool
	// dropped collects the offsets of dropped records (ShareFetch), nil:
	// not wanted.
	dropped *[]offRange
	// orig: the partition's batches before decrypt opened them (nil: it
	// did not); origIdx and origW are built from them on first use, cur is
	// the offset of the record being decided (original.go).
	orig    []byte
	origIdx map[int64][]byte
	origW   map[string]fields.Walker
	cur     int64
}

// drop notes a dropped offset when wanted.
func (f *filterRun) drop(off int64) {
	if f.dropped == nil {
		return
	}
	d := *f.dropped
	if n := len(d); n > 0 && d[n-1].last+1 == off {
		d[n-1].last = off
	} else {
		d = append(d, offRange{off, off})
	}
	*f.dropped = d
}

// record is the records.Filter callback.
func (f *filterRun) record(rec *records.Record) (records.Verdict, error) {
	p, ap, loc, b := f.p, f.ap, f.loc, &f.b
	off := rec.Offset()
	b.span(off, off)
	d := f.whole
	located := false
	if d == nil {
		dl := loc
		if f.prevDropped && loc != nil && loc.top == nil {
			dl = nil // the fast scan costs the same for one key or all
		}
		d, f.key, located = p.recordDecision(f.ctx, f.rt, ap, f.pc, rec, f.key, dl)
		f.prevDropped = d.drop
	}
	if d.failed != "" {
		b.failed++
	}
	if d.drop {
		b.dropped++
		f.drop(off)
		return records.Drop, nil
	}
	b.delivered++
	if len(d.groups) == 0 || rec.Value == nil {
		return records.Keep, nil
	}
	_, enc := rec.Header(envelope.HeaderKey)
	f.cur = off
	var (
		v      []byte
		ch, ok bool
		err    error
	)
	if loc != nil {
		// One walk: the one that found the read fields, or one now.
		if !located {
			err = ap.locate(loc, rec.Value)
		}
		if err == nil {
			v, ch, ok, err = ap.applyLocated(d, loc, rec.Value, enc, &b.counts)
		}
	}
	if !ok && err == nil {
		v, ch, err = ap.apply(d, rec.Value, enc, &b.counts)
	}
	if err != nil {
		// The value could not be read in its format: nothing of it can
		// be shown, whatever on_error says (redacting needs reading;
		// a null value would read as a tombstone): drop it.
		p.m.failures.WithLabelValues("value").Inc()
		p.burst.Error("record failed closed: its value could not be rewritten", "topic", f.pc.topic, "partition", f.pc.partition, "offset", off, "err", err)
		b.failed++
		b.delivered--
		b.dropped++
		f.drop(off)
		return records.Drop, nil
	}
	if !ch {
		return records.Keep, nil
	}
	rec.Value = v
	return records.Changed, nil
}

// recordDecision decides one record: it finds the value fields the policy
// reads, then asks the cache or OPA. key is the reusable cache key buffer
// (it starts with the partition's context key); the grown buffer is
// returned for the next record. With a locator (loc not nil) the value is
// walked with it, and located reports that ap holds its spans.
func (p *Policy) recordDecision(ctx context.Context, rt *runtime, ap *applier, pc *partCtx, rec *records.Record, key []byte, loc *locator) (d *decision, _ []byte, located bool) {
	rd := &rt.c.reads
	ti := pc.ti
	var vals [][]byte
	// What the policy reads of the value: the value itself, or for
	// Protobuf its canonical JSON.
	readVal := rec.Value
	var err error
	if ti.isProto() && readVal != nil && (rd.whole || rd.value || len(rd.valuePaths) > 0) {
		readVal, err = protoJSON(ti.tf, readVal)
	}
	if err == nil && len(rd.valuePaths) > 0 && readVal != nil {
		if loc != nil {
			if err = ap.locate(loc, readVal); err == nil {
				vals, located = ap.readVals(loc, readVal), true
			}
		} else {
			var w fields.Walker
			w, err = ti.valueWalker(rd)
			if err == nil {
				vals, err = ap.extract(w, rd.valuePaths, readVal)
			}
		}
	}
	if err != nil {
		p.m.failures.WithLabelValues("value").Inc()
		p.burst.Error("record failed closed: the fields the policy reads could not be found", "topic", pc.topic, "partition", pc.partition, "offset", rec.Offset(), "err", err)
		return failClosed(p.cfg.OnError, ti, &rt.walkers, "value"), key, false
	}
	k := key
	if rd.cacheable() {
		k = recordKey(k, rd, rec, vals)
	}
	d = p.decide(ctx, rt, pc, rec, vals, readVal, k...)
	if rd.cacheable() {
		key = k[:len(pc.key)] // reuse the buffer
	}
	return d, key, located
}

// recordKey appends the record parts the policy reads to the key.
func recordKey(k []byte, rd *reads, rec *records.Record, vals [][]byte) []byte {
	if rd.key {
		if rec.Key == nil {
			k = append(k, 0xff)
		} else {
			k = appendPart(k, rec.Key)
		}
	}
	if rd.headers {
		for i := range rec.Headers {
			k = appendPart(appendPart(k, rec.Headers[i].Key), rec.Headers[i].Value)
		}
		k = append(k, 0xfe)
	}
	for _, n := range rd.headerNames {
		if v, ok := rec.Header(n); ok {
			k = appendPart(k, v)
		} else {
			k = append(k, 0xff)
		}
	}
	for _, v := range vals {
		if v == nil {
			k = append(k, 0xff)
		} else {
			k = appendPart(k, v)
		}
	}
	if len(rd.valuePaths) > 0 && vals == nil { // null value (tombstone)
		k = append(k, 0xfd)
	}
	return k
}

// decide returns the decision for the partition (rec nil) or one record,
// from the cache when the inputs the policy reads were seen before.
func (p *Policy) decide(ctx context.Context, rt *runtime, pc *partCtx, rec *records.Record, vals [][]byte, readVal []byte, key ...byte) *decision {
	rd := &rt.c.reads
	cacheable := rd.cacheable()
	if rec == nil {
		key = pc.key
	}
	if cacheable {
		if m := pc.memo; m != nil && m.d != nil && bytes.Equal(m.key, key) {
			m.hits++
			return m.d
		}
		if d, ok := rt.cache.get(key); ok {
			if m := pc.memo; m != nil {
				m.hits++
				m.key, m.d = append(m.key[:0], key...), d
			} else {
				p.m.cacheHits.Inc()
			}
			return d
		}
	}
	p.m.evals.Inc()
	in, err := inputFor(rd, pc, rec, vals, readVal)
	if err != nil {
		return p.failed(rt, pc, "value", err)
	}
	ectx, cancel := context.WithTimeout(ctx, p.timeout)
	rs, err := rt.c.pq.Eval(ectx, rego.EvalParsedInput(in))
	cancel()
	if err != nil {
		reason := "eval"
		if errors.Is(ectx.Err(), context.DeadlineExceeded) {
			reason = "timeout"
		}
		return p.failed(rt, pc, reason, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return p.failed(rt, pc, "undefined", fmt.Errorf("%s is undefined", rt.c.query))
	}
	d, err := compileDecision(rs[0].Expressions[0].Value, pc.ti, rt.c.Catalog, &rt.walkers)
	if err != nil {
		return p.failed(rt, pc, "decision", err)
	}
	if cacheable {
		rt.cache.put(key, d)
		if m := pc.memo; m != nil {
			m.key, m.d = append(m.key[:0], key...), d
		}
	}
	return d
}

func (p *Policy) failed(rt *runtime, pc *partCtx, reason string, err error) *decision {
	p.m.failures.WithLabelValues(reason).Inc()
	p.burst.Error("policy could not decide: failing closed", "on_error", onErr(p.cfg.OnError), "reason", reason,
		"topic", pc.topic, "partition", pc.partition, "principal", pc.conn.Principal.String(), "revision", rt.c.Revision, "err", err)
	return failClosed(p.cfg.OnError, pc.ti, &rt.walkers, reason)
}

func onErr(s string) string {
	if s == "" {
		return "drop"
	}
	return s
}

// finish counts a decision batch and writes its audit line.
func (p *Policy) finish(rt *runtime, pc *partCtx, b *batchAudit, whole *decision) {
	if b.delivered > 0 {
		p.m.records.WithLabelValues("delivered").Add(float64(b.delivered))
	}
	if b.dropped > 0 {
		p.m.records.WithLabelValues("dropped").Add(float64(b.dropped))
	}
	for _, f := range []struct {
		n   int
		act string
	}{{b.redacted, actRedact}, {b.masked, actMask}, {b.tokenized, actTokenize}, {b.encrypted, actEncrypted}} {
		if f.n > 0 {
			p.m.fields.WithLabelValues(f.act).Add(float64(f.n))
		}
	}
	if p.audit != nil && (b.delivered+b.dropped) > 0 {
		p.audit.write(rt.c.Revision, pc, b)
	}
}

// memo is one run's last cached decision and its key: consecutive records
// of a partition usually read the same values, and the memo answers them
// without the shared cache's lock and hashing. Hits are counted here and
// added to the metric once per run.
type memo struct {
	key  []byte
	d    *decision
	hits int
}

func (m *memo) flush(p *Policy) {
	if m.hits > 0 {
		p.m.cacheHits.Add(float64(m.hits))
		m.hits = 0
	}
}

// decisionCache is a bounded map of decisions: full, it starts over
// (decisions are cheap to recompute; the bound is what matters).
type decisionCache struct {
	mu  sync.RWMutex
	m   map[string]*decision
	max int
}

func (c *decisionCache) get(k []byte) (*decision, bool) {
	c.mu.RLock()
	d, ok := c.m[string(k)]
	c.mu.RUnlock()
	return d, ok
}

func (c *decisionCache) put(k []byte, d *decision) {
	c.mu.Lock()
	if c.m == nil || len(c.m) >= c.max {
		c.m = make(map[string]*decision, min(c.max, 1024))
	}
	c.m[string(k)] = d
	c.mu.Unlock()
}
