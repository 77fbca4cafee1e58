package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/dependencies"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/strait-proxy/strait/crypto/fields"
)

// Compiled is a loaded, compiled policy: the prepared decision query, the
// catalog, and what the policy reads of its input. It is immutable; a
// reload builds a new one.
type Compiled struct {
	pq       rego.PreparedEvalQuery
	query    string
	Revision string
	Catalog  *Catalog
	reads    reads
	// files are the files it was built from, for change polling.
	files []string
}

// reads is what the decision query reads of its input, from OPA's
// dependency analysis of the compiled modules (dependencies.Base: every
// input ref reachable from the query, truncated where it turns dynamic).
type reads struct {
	whole                                 bool // input itself, or a dynamic key of it
	principal, attrs                      bool
	clientID, clientAddr, listener, topic bool
	partition, classifications, operation bool
	offset, timestamp                     bool
	key                                   bool
	headers                               bool     // all headers
	headerNames                           []string // input.headers.NAME
	value                                 bool     // the whole value, or a dynamic part of it
	valuePaths                            []string // input.value.a.b, as canonical fields paths ($.a.b)
	parsedPaths                           [][]pathSeg
	valWalker                             fields.Walker // finds valuePaths in a JSON value
	nondeterministic                      bool          // time.now_ns, rand.intn, http.send...
	forced                                bool          // per_record: true
	headRecord                            bool          // a rule head holds record content
	refs                                  []string      // for `strait policy eval` and logs
}

// record reports whether the decision depends on anything per record.
func (r *reads) record() bool {
	return r.whole || r.offset || r.timestamp || r.key || r.headers || len(r.headerNames) > 0 || r.value || len(r.valuePaths) > 0
}

// probeable reports whether, for one connection's context, the policy may
// be probed for a decision that does not depend on the record (see
// probe.go): it reads record content, but not the input as a whole, is
// deterministic, per-record evaluation is not forced, and no rule head
// carries record content (heads are not traced).
func (r *reads) probeable() bool {
	return r.record() && !r.whole && !r.nondeterministic && !r.forced && !r.headRecord
}

// cacheable reports whether decisions may be cached by the inputs read.
func (r *reads) cacheable() bool {
	return !r.whole && !r.offset && !r.timestamp && !r.value && !r.nondeterministic
}

// Load reads and compiles the policies, bundle and catalog of cfg. It is
// what the interceptor does at start and on reload, and what `strait
// validate` and `strait policy eval` call.
func Load(cfg Config) (*Compiled, error) {
	if errs := cfg.validate(); len(errs) > 0 {
		return nil, errs
	}
	query := cfg.Query
	if query == "" {
		query = DefaultQuery
	}
	h := sha256.New()
	modules := map[string]*ast.Module{}
	var data map[string]any
	var files []string
	revision := ""

	if len(cfg.Policies) > 0 {
		res, err := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).Filtered(cfg.Policies, skipTests)
		if err != nil {
			return nil, fmt.Errorf("policies: %v", err)
		}
		names := make([]string, 0, len(res.Modules))
		for n := range res.Modules {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			modules[n] = res.Modules[n].Parsed
			h.Write([]byte(n))
			h.Write(res.Modules[n].Raw)
			files = append(files, n)
		}
		data = res.Documents
	}
	if cfg.Bundle != "" {
		b, err := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).WithSkipBundleVerification(true).AsBundle(cfg.Bundle)
		if err != nil {
			return nil, fmt.Errorf("bundle: %v", err)
		}
		for _, m := range b.Modules {
			if strings.HasSuffix(m.Path, "_test.rego") {
				continue
			}
			modules["bundle:"+m.Path] = m.Parsed
			h.Write([]byte(m.Path))
			h.Write(m.Raw)
		}
		if data == nil {
			data = map[string]any{}
		}
		for k, v := range b.Data {
			data[k] = v
		}
		revision = b.Manifest.Revision
		files = append(files, cfg.Bundle)
	}
	if len(modules) == 0 {
		return nil, errors.New("policies: no .rego module found")
	}
	if data != nil {
		j, _ := json.Marshal(data) // map keys sorted: stable
		h.Write(j)
	}

	var cat *Catalog
	if cfg.Catalog != "" {
		raw, err := os.ReadFile(cfg.Catalog)
		if err != nil {
			return nil, fmt.Errorf("catalog: %v", err)
		}
		if cat, err = ParseCatalog(raw, "catalog"); err != nil {
			return nil, err
		}
		h.Write(raw)
		files = append(files, cfg.Catalog)
		var reg *fields.Registry
		if cfg.SchemaRegistry != nil {
			if reg, err = cfg.SchemaRegistry.registry(); err != nil {
				return nil, fmt.Errorf("schema_registry: %v", err)
			}
		}
		if err := cat.UseRegistry(reg); err != nil {
			return nil, err
		}
		for i := range cat.Topics {
			for _, sc := range cat.Topics[i].Schemas {
				for _, f := range sc.Files {
					if b, err := os.ReadFile(f); err == nil {
						h.Write(b)
					}
					files = append(files, f)
				}
			}
		}
	}

	compiler := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	compiler.Compile(modules)
	if compiler.Failed() {
		return nil, fmt.Errorf("policies: %v", compiler.Errors)
	}
	qref, err := ast.ParseRef(query)
	if err != nil {
		return nil, fmt.Errorf("query: %v", err)
	}
	if len(compiler.GetRules(qref)) == 0 {
		return nil, fmt.Errorf("query: %s names no rule in the policies", query)
	}
	rd, err := analyze(compiler, qref)
	if err != nil {
		return nil, fmt.Errorf("policies: dependency analysis: %v", err)
	}
	if cfg.PerRecord != nil && !*cfg.PerRecord && rd.record() {
		return nil, fmt.Errorf("per_record: false, but the policy reads record content (%s)", strings.Join(rd.refs, ", "))
	}
	if cfg.PerRecord != nil && *cfg.PerRecord {
		rd.value, rd.offset = true, true // evaluate every record, cache nothing
		rd.forced = true
	}

	opts := []func(*rego.Rego){rego.Query(query), rego.Compiler(compiler), rego.SetRegoVersion(ast.RegoV1)}
	if data != nil {
		opts = append(opts, rego.Store(inmem.NewFromObject(data)))
	}
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		return nil, fmt.Errorf("policies: %v", err)
	}
	if revision == "" {
		revision = "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
	}
	return &Compiled{pq: pq, query: query, Revision: revision, Catalog: cat, reads: rd, files: files}, nil
}

// skipTests leaves test modules and non-policy files out of the
// interceptor's policy (data files .json/.yaml stay: they become data.*).
func skipTests(abspath string, info fs.FileInfo, depth int) bool {
	if info.IsDir() {
		return false
	}
	n := info.Name()
	return strings.HasSuffix(n, "_test.rego") || !(strings.HasSuffix(n, ".rego") || n == "data.json" || n == "data.yaml")
}

// analyze finds the input paths the query depends on.
func analyze(c *ast.Compiler, q ast.Ref) (reads, error) {
	var rd reads
	refs, err := dependencies.Base(c, q)
	if err != nil {
		return rd, err
	}
	seenVal := map[string]bool{}
	segsOf := map[string][]pathSeg{}
	for _, r := range refs {
		if !r[0].Equal(ast.InputRootDocument) {
			continue
		}
		rd.refs = append(rd.refs, r.String())
		if len(r) == 1 {
			rd.whole = true
			continue
		}
		head, ok := r[1].Value.(ast.String)
		if !ok {
			rd.whole = true
			continue
		}
		switch string(head) {
		case "principal":
			rd.principal = true
			if len(r) == 2 || r[2].Equal(ast.StringTerm("attrs")) {
				rd.attrs = true
			}
		case "client_id":
			rd.clientID = true
		case "client_address":
			rd.clientAddr = true
		case "listener":
			rd.listener = true
		case "topic":
			rd.topic = true
		case "partition":
			rd.partition = true
		case "classifications":
			rd.classifications = true
		case "operation":
			rd.operation = true
		case "offset":
			rd.offset = true
		case "timestamp":
			rd.timestamp = true
		case "key":
			rd.key = true
		case "headers":
			if len(r) == 2 {
				rd.headers = true
			} else if s, ok := r[2].Value.(ast.String); ok {
				rd.headerNames = append(rd.headerNames, string(s))
			} else {
				rd.headers = true
			}
		case "value":
			if len(r) == 2 {
				rd.value = true
				continue
			}
			p, segs, ok := fieldPath(r[2:])
			if !ok {
				rd.value = true
				continue
			}
			seenVal[p] = true
			segsOf[p] = segs
		}
	}
	rd.valuePaths = minimalPaths(seenVal)
	for i, p := range rd.valuePaths {
		fp, err := fields.ParsePath(p)
		if err != nil {
			return rd, err
		}
		rd.valuePaths[i] = fp.String()
		rd.parsedPaths = append(rd.parsedPaths, segsOf[p])
	}
	if len(rd.valuePaths) > 0 {
		if rd.valWalker, err = fields.NewJSON(rd.valuePaths); err != nil {
			return rd, err
		}
	}
	sort.Strings(rd.refs)
	for _, m := range c.Modules {
		ast.WalkRules(m, func(r *ast.Rule) bool {
			if readsRecord(r.Head) {
				rd.headRecord = true
			}
			return rd.headRecord
		})
	}
	// Non-deterministic built-ins (time, randomness, HTTP) make a decision
	// depend on more than its input: never cache those.
	for _, m := range c.Modules {
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if e.IsCall() {
				if b, ok := ast.BuiltinMap[e.Operator().String()]; ok && b.Nondeterministic {
					rd.nondeterministic = true
				}
			}
			return rd.nondeterministic
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if call, ok := t.Value.(ast.Call); ok && len(call) > 0 {
				if b, ok := ast.BuiltinMap[call[0].String()]; ok && b.Nondeterministic {
					rd.nondeterministic = true
				}
			}
			return rd.nondeterministic
		})
	}
	return rd, nil
}

// fieldPath turns the ref terms after input.value into a fields path.
func fieldPath(ts []*ast.Term) (string, []pathSeg, bool) {
	var b strings.Builder
	var segs []pathSeg
	b.WriteByte('$')
	for _, t := range ts {
		switch v := t.Value.(type) {
		case ast.String:
			q, _ := json.Marshal(string(v))
			b.WriteByte('[')
			b.Write(q)
			b.WriteByte(']')
			segs = append(segs, pathSeg{key: string(v), idx: -1})
		case ast.Number:
			n, ok := v.Int()
			if !ok || n < 0 {
				return "", nil, false
			}
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(n))
			b.WriteByte(']')
			segs = append(segs, pathSeg{idx: n})
		default:
			return "", nil, false
		}
	}
	return b.String(), segs, true
}

// minimalPaths drops paths below another path of the set (the walker
// refuses overlapping paths, and the outer one carries the inner).
func minimalPaths(set map[string]bool) []string {
	var out []string
	for p := range set {
		covered := false
		for q := range set {
			if q != p && strings.HasPrefix(p, q) && len(p) > len(q) && p[len(q)] == '[' {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// Reads lists the input refs the decision depends on, and whether
// decisions are cached.
func (c *Compiled) Reads() (refs []string, perRecord, cached bool) {
	return c.reads.refs, c.reads.record(), c.reads.cacheable()
}
