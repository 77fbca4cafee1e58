package interop

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/crypto/kms/local"
)

// The Grafana dashboard shipped in docs/grafana/strait.json may only query
// metrics Strait really exports: a renamed metric leaves a panel silently
// empty, and nothing else would notice.

// dashboardMetricRE finds metric names in PromQL expressions: Strait's own
// and the Go and process collectors' (go_goroutines,
// process_resident_memory_bytes, ...), which the binary registers too.
var dashboardMetricRE = regexp.MustCompile(`\b(?:strait|go|process)_[a-zA-Z0-9_]+`)

// dashboardExprs returns every PromQL expression of the dashboard: panel
// targets (also inside collapsed rows) and the query template variables.
func dashboardExprs(t testing.TB, raw []byte) []string {
	t.Helper()
	var dash struct {
		SchemaVersion int               `json:"schemaVersion"`
		Panels        []json.RawMessage `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if dash.SchemaVersion != 39 {
		t.Errorf("dashboard schemaVersion %d, want 39", dash.SchemaVersion)
	}
	var exprs []string
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil || q.Query == "" {
			t.Errorf("template variable %s: no query (%s)", v.Name, v.Query)
			continue
		}
		exprs = append(exprs, q.Query)
	}
	for _, want := range []string{"DS_PROMETHEUS", "job", "instance"} {
		if !vars[want] {
			t.Errorf("dashboard has no template variable %q", want)
		}
	}
	type panel struct {
		Title      string `json:"title"`
		Type       string `json:"type"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, r := range ps {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("dashboard panel: %v", err)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: datasource is not ${DS_PROMETHEUS}", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q: a target without expr", p.Title)
				}
				if !strings.Contains(tg.Expr, `job=~"$job"`) || !strings.Contains(tg.Expr, `instance=~"$instance"`) {
					t.Errorf("panel %q: %q does not filter on $job and $instance", p.Title, tg.Expr)
				}
				exprs = append(exprs, tg.Expr)
			}
		}
	}
	walk(dash.Panels)
	return exprs
}

// metricNames returns the distinct metric names the expressions use.
func metricNames(exprs []string) []string {
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, m := range dashboardMetricRE.FindAllString(e, -1) {
			seen[m] = true
		}
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// scrapedNames are the sample names of a Prometheus text exposition
// (histograms appear as name_bucket, name_sum and name_count).
func scrapedNames(body string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			out[line[:i]] = true
		}
	}
	return out
}

// sourceMetricNames are the strait_ metric names declared (`Name: "..."`) in
// the repository's non-test Go files.
func sourceMetricNames(t testing.TB, root string) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`Name:\s*"(strait_[a-z0-9_]+)"`)
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "testdata", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			out[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

// histogramBase strips the suffixes of a histogram's series.
func histogramBase(m string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(m, s); ok {
			return b
		}
	}
	return m
}

// notScraped are dashboard metrics the test's Strait cannot be expected to
// export: those of interceptors it does not run (policy, authswap) and
// vectors whose first series appears with their first event (a key-store
// failure, a failed upstream dial). They are checked against the source
// instead: a `Name: "..."` declaration in a non-test Go file.
var notScraped = map[string]string{
	"strait_policy_records_total":                      "policy interceptor not configured",
	"strait_policy_fields_total":                       "policy interceptor not configured",
	"strait_policy_evaluations_total":                  "policy interceptor not configured",
	"strait_policy_cache_hits_total":                   "policy interceptor not configured",
	"strait_policy_fail_closed_total":                  "policy interceptor not configured",
	"strait_policy_reloads_total":                      "policy interceptor not configured",
	"strait_policy_share_acknowledged_total":           "policy interceptor not configured",
	"strait_policy_share_ack_errors_total":             "policy interceptor not configured",
	"strait_authswap_authentications_total":            "authswap interceptor not configured",
	"strait_authswap_credential_lookups_total":         "authswap interceptor not configured",
	"strait_authswap_upstream_authentications_total":   "authswap interceptor not configured",
	"strait_authswap_upstream_reauthentications_total": "authswap interceptor not configured",
	"strait_authswap_oauth_token_requests_total":       "authswap interceptor not configured",
	"strait_kms_errors_total":                          "first series at the first key-store failure",
	"strait_upstream_dial_errors_total":                "first series at the first failed upstream dial",
}

// dashboardProblems is the check itself: each dashboard metric must be in
// the scrape, or (for the notScraped ones) declared in the source; and each
// strait_ metric the source declares must have a panel.
func dashboardProblems(used []string, scraped, source map[string]bool) []string {
	var problems []string
	inDash := map[string]bool{}
	for _, m := range used {
		inDash[histogramBase(m)] = true
		_, sourceOnly := notScraped[histogramBase(m)]
		switch {
		case scraped[m]:
		case sourceOnly && source[histogramBase(m)]:
		case sourceOnly:
			problems = append(problems, fmt.Sprintf("%s: not declared in any Go file (Name: %q)", m, histogramBase(m)))
		default:
			problems = append(problems, fmt.Sprintf("%s: used by the dashboard, not exported by strait /metrics", m))
		}
	}
	var src []string
	for m := range source {
		src = append(src, m)
	}
	sort.Strings(src)
	for _, m := range src {
		if !inDash[m] {
			problems = append(problems, fmt.Sprintf("%s: exported by Strait, no panel in the dashboard", m))
		}
	}
	return problems
}

// TestDashboardCheckFails makes sure the check can fail: a misspelt metric,
// one that is declared nowhere, and a declared metric without a panel.
func TestDashboardCheckFails(t *testing.T) {
	scraped := map[string]bool{"strait_requests_total": true, "go_goroutines": true}
	source := map[string]bool{"strait_requests_total": true, "strait_policy_records_total": true, "strait_new_total": true}
	got := dashboardProblems([]string{"strait_requests_total", "strait_request_total", "go_goroutines",
		"strait_policy_records_total", "strait_authswap_authentications_total"}, scraped, source)
	want := []string{
		"strait_request_total: used by the dashboard, not exported by strait /metrics",
		`strait_authswap_authentications_total: not declared in any Go file (Name: "strait_authswap_authentications_total")`,
		"strait_new_total: exported by Strait, no panel in the dashboard",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := metricNames([]string{`sum by (le) (rate(strait_request_duration_seconds_bucket{job=~"$job"}[$__rate_interval])) / go_goroutines`}); strings.Join(n, ",") != "go_goroutines,strait_request_duration_seconds_bucket" {
		t.Errorf("metricNames: %v", n)
	}
}

// TestDashboardMetrics runs the real binary with the encrypt interceptor
// (so that the crypto metrics are registered), sends produce and fetch
// traffic and one oversized frame through it, scrapes /metrics and checks
// every metric the dashboard queries.
func TestDashboardMetrics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docs", "grafana", "strait.json"))
	if err != nil {
		t.Fatal(err)
	}
	used := metricNames(dashboardExprs(t, raw))
	if len(used) < 30 {
		t.Fatalf("only %d metrics found in the dashboard's expressions: %v", len(used), used)
	}
	if directMode {
		t.Skip("STRAIT_INTEROP_DIRECT=1: this test scrapes Strait itself")
	}
	need(t, "strait")

	dir := t.TempDir()
	keyring := filepath.Join(dir, "keys.json")
	for _, k := range []string{"customers-kek", "payments-kek"} {
		if err := local.Generate(keyring, k); err != nil {
			t.Fatalf("keyring: %v", err)
		}
	}
	cfg := filepath.Join(dir, "strait.yaml")
	if err := os.WriteFile(cfg, []byte(encryptionYAML("encrypt", keyring)), 0o600); err != nil {
		t.Fatal(err)
	}
	const topic = "payments-dashboard"
	c := kfakeCluster(t, []string{topic})
	p := startStrait(t, straitConfig{Upstream: c.ListenAddrs(), Args: []string{"--config", cfg}, NoDirect: true})

	// Traffic: produce (encrypted) and fetch them back, so the per-listener
	// connection series and the crypto counters have samples.
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Bootstrap), kgo.DefaultProduceTopic(topic),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "dashboard-%d", i)}).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	for got := 0; got < 10; {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("fetched %d of 10 records: %v", got, err)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Errorf("fetch: %v", err) })
		got += fs.NumRecords()
	}

	// One connection that announces a frame over max_frame_bytes: a
	// strait_connection_errors_total{reason="frame_too_large"} series.
	bad, err := net.DialTimeout("tcp", p.Bootstrap, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 1<<30)
	bad.Write(hdr[:])
	bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	bad.Read(make([]byte, 1))
	bad.Close()

	var body string
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, b, err := p.adminGet("/metrics")
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /metrics: %d %v", code, err)
		}
		body = b
		if n, _ := sumCounter(body, "strait_connection_errors_total"); n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	scraped := scrapedNames(body)
	source := sourceMetricNames(t, repoRoot)
	if !source["strait_requests_total"] || !source["strait_policy_records_total"] {
		t.Fatalf("source scan found too little (%d names): %v", len(source), source)
	}
	for _, m := range []string{"strait_crypto_records_total", "strait_connection_errors_total", "strait_connections_active"} {
		if !scraped[m] {
			t.Errorf("%s not in the scrape: the traffic above should have produced it", m)
		}
	}
	for _, problem := range dashboardProblems(used, scraped, source) {
		t.Error(problem)
	}
	t.Logf("%d metrics in the dashboard checked (%d scraped series names, %d declared in the source)", len(used), len(scraped), len(source))
}
