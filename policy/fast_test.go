package policy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// orders returns n records whose countries cycle through cs, keys k0...
func orders(n int, cs ...string) []kmsg.Record {
	recs := make([]kmsg.Record, n)
	for i := range recs {
		recs[i] = rec(fmt.Sprintf("k%d", i), fmt.Sprintf(`{"name":"Person %d","address":"%d Main St","country":%q,"ssn_id":"123-45-%04d","account":"6789%08d","Order_time":"2024-03-01T10:00:00Z","itemid":"I-%d"}`,
			i, i, cs[i%len(cs)], i%10000, i, i))
	}
	return recs
}

// TestProbe: for a principal the demo policy decides on the principal
// alone, a large partition is decided once (the probe) and delivered
// byte for byte; for one it decides by country, records are decided one
// by one; a rule the indexer would skip for a record-less input is still
// seen (indexing is off in the probe); a policy with record content in a
// rule head is never probed.
func TestProbe(t *testing.T) {
	in := batch(0, -1, false, orders(100, "usa", "brazil")...)

	p, _ := newPolicy(t, demoConfig(t))
	ic := p.Interceptor()
	for i := 0; i < 2; i++ {
		out := fetch(t, ic, interceptor.Principal{Name: "full-pii"}, "orders", in)
		if !bytes.Equal(out.RecordBatches, in) {
			t.Fatal("full-pii: records changed")
		}
	}
	if n := testutil.ToFloat64(p.m.evals); n != 1 {
		t.Fatalf("full-pii: %v evaluations, want 1 (the probe, cached)", n)
	}
	got, _ := decode(t, fetch(t, ic, interceptor.Principal{Name: "us-financial"}, "orders", in).RecordBatches)
	want := `{"name":null,"address":null,"country":null,"ssn_id":null,"account":"678900000000","Order_time":"2024-03-01T10:00:00Z","itemid":"I-0"}`
	if len(got) != 50 || got[0].Value != want || got[1].Offset != 2 {
		t.Fatalf("us-financial: %d records, first %v", len(got), got[0])
	}
	// the probe (record-dependent), then one evaluation per country
	if n := testutil.ToFloat64(p.m.evals); n != 1+1+2 {
		t.Fatalf("%v evaluations, want 4", n)
	}

	dir := t.TempDir()
	indexed := writeFile(t, dir, "indexed.rego", `package strait
default decision := {"default": "clear"}
decision := {"drop": true} if input.value.country == "brazil"
`)
	pi, _ := newPolicy(t, Config{Policies: []string{indexed}, Catalog: "testdata/demo/catalog.yaml"})
	got, _ = decode(t, fetch(t, pi.Interceptor(), interceptor.Principal{Name: "x"}, "orders", in).RecordBatches)
	if len(got) != 50 || strings.Contains(got[1].Value, "brazil") {
		t.Fatalf("indexed rule: %d records delivered, want 50 (brazil dropped)", len(got))
	}

	// Record content in rule heads: a call is moved into the body by the
	// compiler (traced); a plain reference stays in the head (never probed).
	for _, src := range []string{
		`decision := {"drop": input.value.country == "brazil"} if input.principal.name == "x"`,
		`decision := {"drop": input.value.drop} if input.principal.name == "x"`,
	} {
		head := writeFile(t, dir, "head.rego", "package strait\n"+src+"\n")
		ph, _ := newPolicy(t, Config{Policies: []string{head}, Catalog: "testdata/demo/catalog.yaml"})
		recs := orders(100, "usa", "brazil")
		for i := range recs {
			recs[i].Value = bytes.Replace(recs[i].Value, []byte(`"brazil"`), []byte(`"brazil","drop":true`), 1)
			recs[i].Value = bytes.Replace(recs[i].Value, []byte(`"usa"`), []byte(`"usa","drop":false`), 1)
		}
		got, _ = decode(t, fetch(t, ph.Interceptor(), interceptor.Principal{Name: "x"}, "orders", batch(0, -1, false, recs...)).RecordBatches)
		if len(got) != 50 || strings.Contains(got[1].Value, "brazil") {
			t.Fatalf("%s: %d records delivered, want 50", src, len(got))
		}
	}

	fn := writeFile(t, dir, "fn.rego", `package strait
country(v) := v.country
decision := {"drop": true} if country(input.value) == "brazil"
else := {"default": "clear"}
`)
	pf, _ := newPolicy(t, Config{Policies: []string{fn}, Catalog: "testdata/demo/catalog.yaml"})
	got, _ = decode(t, fetch(t, pf.Interceptor(), interceptor.Principal{Name: "x"}, "orders", in).RecordBatches)
	if len(got) != 50 {
		t.Fatalf("function: %d records delivered, want 50", len(got))
	}
}

// TestOneWalk: the locator's single walk gives what the read walk and the
// group walks gave: every occurrence of a duplicated classified key is
// redacted, the last occurrence of a read key decides, escapes and
// nesting are kept, a decision naming a path outside the catalog still
// applies, and a malformed value fails closed.
func TestOneWalk(t *testing.T) {
	p, _ := newPolicy(t, demoConfig(t))
	ic := p.Interceptor()
	for _, tc := range []struct{ in, want string }{
		{`{"name":"a","country":"usa","name":"b","account":"1234"}`, `{"name":null,"country":null,"name":null,"account":"1234"}`},
		{`{"country":"brazil","country":"usa"}`, `{"country":null,"country":null}`},
		{`{"country":"usa","country":"brazil"}`, ``}, // the last one decides: dropped
		{` { "na\u006de" : {"x":[1,"2"]}, "country" : "usa" , "itemid":"\"q\""} `, ` { "na\u006de" : null, "country" : null , "itemid":"\"q\""} `},
		{`{"country":"usa","address":{"street":"x"}}`, `{"country":null,"address":null}`},
		{`{"country":"usa"`, ``},
		{`{"country":"usa"} x`, ``},
	} {
		got, _ := decode(t, fetch(t, ic, interceptor.Principal{Name: "us-financial"}, "orders", batch(0, -1, false, rec("k", tc.in))).RecordBatches)
		switch {
		case tc.want == "" && len(got) != 0:
			t.Errorf("%s: delivered %q, want dropped", tc.in, got[0].Value)
		case tc.want != "" && (len(got) != 1 || got[0].Value != tc.want):
			t.Errorf("%s:\n got %v\nwant %s", tc.in, got, tc.want)
		}
	}

	dir := t.TempDir()
	pol := writeFile(t, dir, "p.rego", `package strait
decision := {"fields": {"$.itemid": {"action": "mask", "keep_last": 1}, "$.name": "redact"}} if input.value.country == "usa"
`)
	pm, _ := newPolicy(t, Config{Policies: []string{pol}, Catalog: "testdata/demo/catalog.yaml"})
	got, _ := decode(t, fetch(t, pm.Interceptor(), interceptor.Principal{Name: "x"}, "orders", batch(0, -1, false, rec("k", usaOrder))).RecordBatches)
	want := `{"name":null,"address":null,"country":null,"ssn_id":null,"account":"********4567","Order_time":"2024-03-01T10:00:00Z","itemid":"***7"}`
	if len(got) != 1 || got[0].Value != want {
		t.Fatalf("path outside the catalog:\n got %v\nwant %s", got, want)
	}
}

// TestParallel: a large partition decided in several runs at once gives
// the bytes, counters and audit line of one run.
func TestParallel(t *testing.T) {
	var in []byte
	for i := 0; len(in) < 3*parallelMinBytes; i++ {
		in = append(in, batch(int64(i*100), -1, false, orders(100, "usa", "brazil", "usa", "x")...)...)
	}
	in = append(in, batch(1<<20, -1, false, orders(3, "usa")...)[:40]...) // a partial trailing batch
	run := func(workers int, principal string) ([]byte, string, float64) {
		dir := t.TempDir()
		cfg := demoConfig(t)
		cfg.Audit = &Audit{Output: filepath.Join(dir, "audit.jsonl")}
		p, _ := newPolicy(t, cfg)
		p.workers = workers
		out := bytes.Clone(fetch(t, p.Interceptor(), interceptor.Principal{Name: principal}, "orders", in).RecordBatches)
		p.Close()
		line, err := os.ReadFile(cfg.Audit.Output)
		if err != nil {
			t.Fatal(err)
		}
		_, rest, _ := strings.Cut(string(line), `"operation"`) // the time differs
		return out, rest, testutil.ToFloat64(p.m.fields.WithLabelValues(actRedact))
	}
	for _, who := range []string{"us-financial", "brazil", "nobody"} {
		seq, seqAudit, seqRedacted := run(1, who)
		par, parAudit, parRedacted := run(4, who)
		if !bytes.Equal(seq, par) {
			t.Fatalf("%s: parallel output differs (%d vs %d bytes)", who, len(par), len(seq))
		}
		if seqAudit != parAudit || seqRedacted != parRedacted {
			t.Fatalf("%s: audit\n%s\nvs\n%s\nredacted %v vs %v", who, seqAudit, parAudit, seqRedacted, parRedacted)
		}
		if who == "us-financial" && (bytes.Equal(seq, in) || !strings.Contains(seqAudit, `"dropped":`)) {
			t.Fatalf("%s: nothing decided", who)
		}
	}
	if c := (&Policy{workers: 4}).chunks(in, nil); c != nil {
		t.Fatal("no batch bounds: one run")
	}
}
