package policy

import (
	"context"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// A policy that reads record content often does not read it for every
// connection: the demo policy decides "full-pii" on the principal alone
// and reads input.value.country only for the regional consumers. OPA's
// dependency analysis (reads) is per policy, so without more every record
// of a full-pii fetch would be walked for a country nobody looks at.
//
// The probe evaluates the decision once for a connection's context (the
// partition-level input: no offset, timestamp, key, headers or value),
// with rule indexing off and a tracer that watches every expression and
// query OPA evaluates. If none of them refers to record content, the
// evaluation took the same path as it would for any record (each step's
// outcome depended on the context alone), so its decision holds for every
// record of that context: the partition is decided once, as for a policy
// that reads no record content. If one does, the context depends on the
// record and records are decided one by one as before. Rule heads are not
// traced: a policy with record content in a rule head is never probed
// (reads.headRecord), nor one that reads the input as a whole or calls
// non-deterministic built-ins, nor per_record: true.
//
// A probe costs several evaluations (no indexing, tracing), so it runs
// only for a partition of at least probeMinRecords records; its outcome is
// cached per context key (pc.key) for the policy version.

// probeMinRecords is the smallest partition worth a probe.
const probeMinRecords = 64

// recordDependent marks, in the probe cache, a context whose decision
// depends on the record.
var recordDependent = &decision{}

// probeCache holds probe outcomes by context key; full, it starts over.
type probeCache struct {
	mu  sync.RWMutex
	m   map[string]*decision
	max int
}

func (c *probeCache) get(k []byte) (*decision, bool) {
	c.mu.RLock()
	d, ok := c.m[string(k)]
	c.mu.RUnlock()
	return d, ok
}

func (c *probeCache) put(k []byte, d *decision) {
	c.mu.Lock()
	if c.m == nil || len(c.m) >= c.max {
		c.m = make(map[string]*decision, 64)
	}
	c.m[string(k)] = d
	c.mu.Unlock()
}

// contextDecision returns the decision that holds for every record of the
// partition, or nil when it depends on the record. records is the number
// of records in the partition.
func (p *Policy) contextDecision(ctx context.Context, rt *runtime, pc *partCtx, records int) *decision {
	if d, ok := rt.probes.get(pc.key); ok {
		if d == recordDependent {
			return nil
		}
		return d
	}
	if records < probeMinRecords {
		return nil
	}
	d := p.probe(ctx, rt, pc)
	rt.probes.put(pc.key, d)
	if d == recordDependent {
		return nil
	}
	return d
}

// probe evaluates the partition-level input with a recordTracer. Any
// failure (error, timeout, undefined, invalid decision) reports
// recordDependent: the records are then decided, and fail closed, one by
// one exactly as without the probe.
func (p *Policy) probe(ctx context.Context, rt *runtime, pc *partCtx) *decision {
	rd := &rt.c.reads
	in, err := inputFor(rd, pc, nil, nil, nil)
	if err != nil {
		return recordDependent
	}
	p.m.evals.Inc()
	tr := &recordTracer{}
	ectx, cancel := context.WithTimeout(ctx, p.timeout)
	rs, err := rt.c.pq.Eval(ectx, rego.EvalParsedInput(in), rego.EvalQueryTracer(tr), rego.EvalRuleIndexing(false))
	cancel()
	if err != nil || tr.record || len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return recordDependent
	}
	d, err := compileDecision(rs[0].Expressions[0].Value, pc.ti, rt.c.Catalog, &rt.walkers)
	if err != nil {
		return recordDependent
	}
	return d
}

// recordTracer notes whether an evaluation looked at record content.
type recordTracer struct{ record bool }

func (t *recordTracer) Enabled() bool               { return !t.record }
func (t *recordTracer) Config() topdown.TraceConfig { return topdown.TraceConfig{} }
func (t *recordTracer) TraceEvent(e topdown.Event) {
	if t.record || e.Node == nil {
		return
	}
	switch n := e.Node.(type) {
	case *ast.Rule:
		// Entering a rule: its body's expressions are traced one by one
		// (and its else branches only if they run); heads were checked at
		// load.
		return
	default:
		if readsRecord(n) {
			t.record = true
		}
	}
}

// recordParts are the members of the input document that differ between
// the records of one partition.
var recordParts = map[string]bool{"offset": true, "timestamp": true, "key": true, "headers": true, "value": true}

// readsRecord reports whether x holds a reference to record content, to
// the input as a whole, or to a dynamic member of it.
func readsRecord(x any) bool {
	found := false
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(n any) bool {
		if found {
			return true
		}
		switch n := n.(type) {
		case ast.Ref:
			if !n[0].Equal(ast.InputRootDocument) {
				return false
			}
			if len(n) == 1 {
				found = true
				return true
			}
			if s, ok := n[1].Value.(ast.String); !ok || recordParts[string(s)] {
				found = true
				return true
			}
			for _, t := range n[2:] { // dynamic parts: input.principal[x]
				vis.Walk(t)
			}
			return true
		case ast.Var:
			// a bare input term (not the head of a ref)
			if n.Equal(ast.InputRootDocument.Value) {
				found = true
			}
		}
		return found
	})
	vis.Walk(x)
	return found
}
