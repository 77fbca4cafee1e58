package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/tester"
)

// Explanation is what `strait policy eval` prints for one input document.
type Explanation struct {
	Revision string `json:"policy_revision"`
	// Reads are the input refs the policy depends on; Cached says whether
	// decisions are cached by them, PerRecord whether they include record
	// content.
	Reads     []string `json:"reads"`
	PerRecord bool     `json:"per_record"`
	Cached    bool     `json:"cached"`
	// Decision is the query's value, as the policy returned it.
	Decision any `json:"decision"`
	// Drop: the consumer gets nothing of the record.
	Drop bool `json:"drop"`
	// Fields are the resolved actions (catalog defaults included) of the
	// fields that are not delivered in clear.
	Fields map[string]string `json:"fields,omitempty"`
	// Value is input.value as the consumer would get it.
	Value json.RawMessage `json:"value,omitempty"`
}

// Explain evaluates the policy on a full input document (the shape of
// docs/policy.md; input.topic picks the catalog entry).
func (c *Compiled) Explain(ctx context.Context, cfg Config, input map[string]any) (*Explanation, error) {
	ex := &Explanation{Revision: c.Revision, Reads: c.reads.refs, PerRecord: c.reads.record(), Cached: c.reads.cacheable()}
	topic, _ := input["topic"].(string)
	ti := newTopicInfo(c.Catalog, topic)
	input["classifications"] = ti.input
	rs, err := c.pq.Eval(ctx, rego.EvalInput(input))
	if err != nil {
		return nil, fmt.Errorf("evaluation failed (records would be handled by on_error): %v", err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, fmt.Errorf("%s is undefined for this input (records would be handled by on_error)", c.query)
	}
	ex.Decision = rs[0].Expressions[0].Value
	var wc walkerCache
	d, err := compileDecision(ex.Decision, ti, c.Catalog, &wc)
	if err != nil {
		return nil, fmt.Errorf("malformed decision (records would be handled by on_error): %v", err)
	}
	ex.Drop = d.drop
	if d.drop {
		return ex, nil
	}
	ex.Fields = map[string]string{}
	for _, g := range d.groups {
		for _, p := range g.paths {
			s := g.act.kind.String()
			if g.act.keepLast > 0 {
				s += fmt.Sprintf(" (keep_last %d)", g.act.keepLast)
			}
			if g.act.with != "" {
				s += fmt.Sprintf(" (with %q)", g.act.with)
			}
			ex.Fields[p] = s
		}
	}
	if v, ok := input["value"]; ok {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		ap := newApplier(nil)
		if cfg.Tokenize != nil {
			key, err := cfg.Tokenize.key()
			if err != nil {
				return nil, err
			}
			if ap.tok, err = newTokenizer(key, cfg.Tokenize.FF1 == nil || *cfg.Tokenize.FF1); err != nil {
				return nil, err
			}
		}
		var n counts
		out, _, err := ap.apply(d, raw, false, &n)
		if err != nil {
			return nil, err
		}
		ex.Value = append(json.RawMessage(nil), out...)
	}
	return ex, nil
}

// TestResult is one rego test's outcome.
type TestResult struct {
	Name   string
	Pass   bool
	Detail string
}

// RunTests runs the rego unit tests (test_* rules) under paths with OPA's
// tester, rego v1.
func RunTests(ctx context.Context, paths []string) ([]TestResult, error) {
	rs, err := tester.Run(ctx, paths...)
	if err != nil {
		return nil, err
	}
	var out []TestResult
	for _, r := range rs {
		tr := TestResult{Name: r.Package + "." + r.Name, Pass: r.Pass()}
		switch {
		case r.Error != nil:
			tr.Detail = r.Error.Error()
		case r.Fail:
			tr.Detail = "FAIL"
			if r.FailedAt != nil {
				tr.Detail = fmt.Sprintf("FAIL at %v: %v", r.FailedAt.Location, r.FailedAt)
			}
		case r.Skip:
			tr.Detail = "SKIPPED"
		}
		out = append(out, tr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
