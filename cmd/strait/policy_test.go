package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyTest: `strait policy test` runs rego tests with OPA's tester
// and fails when one fails.
func TestPolicyTest(t *testing.T) {
	code, out, errOut := strait(t, "policy", "test", "../../policy/testdata/demo")
	if code != 0 || !strings.Contains(out, "PASS data.strait_test.test_brazil_gets_nothing") || !strings.Contains(out, "4 passed, 0 failed") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package p\nallow := false\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "p_test.rego"), []byte("package p_test\nimport data.p\ntest_allow if p.allow\n"), 0o644)
	code, out, _ = strait(t, "policy", "test", dir)
	if code != 1 || !strings.Contains(out, "FAIL data.p_test.test_allow") || !strings.Contains(out, "0 passed, 1 failed") {
		t.Fatalf("failing test: exit %d\n%s", code, out)
	}
}

// TestPolicyEval: `strait policy eval` shows the decision, the resolved
// field actions and the value as the consumer gets it, from a strait.yaml.
func TestPolicyEval(t *testing.T) {
	dir := t.TempDir()
	abs, _ := filepath.Abs("../../policy/testdata/demo")
	cfg := filepath.Join(dir, "strait.yaml")
	os.WriteFile(cfg, []byte(`upstream: {bootstrap: ["127.0.0.1:9092"]}
interceptors:
  - name: policy
    config: {policies: [`+abs+`/policy.rego], catalog: `+abs+`/catalog.yaml}
`), 0o644)
	in := filepath.Join(dir, "in.json")
	os.WriteFile(in, []byte(`{"principal": {"name": "us-financial"}, "topic": "orders",
 "value": {"name": "Joe", "country": "usa", "account": "6789", "itemid": "A-1"}}`), 0o644)
	code, out, errOut := strait(t, "policy", "eval", "--config", cfg, "--input", in)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var ex struct {
		Drop   bool
		Fields map[string]string
		Value  map[string]any
		Reads  []string
	}
	if err := json.Unmarshal([]byte(out), &ex); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if ex.Drop || ex.Fields["$.name"] != "redact" || ex.Value["name"] != nil || ex.Value["account"] != "6789" || len(ex.Reads) != 2 {
		t.Fatalf("explanation %s", out)
	}
	os.WriteFile(in, []byte(`{"principal": {"name": "brazil"}, "topic": "orders", "value": {"country": "usa"}}`), 0o644)
	if code, out, _ := strait(t, "policy", "eval", "--config", cfg, "--input", in); code != 0 || !strings.Contains(out, `"drop": true`) {
		t.Fatalf("brazil: exit %d %s", code, out)
	}
	if code, _, errOut := strait(t, "policy", "eval", "--input", in); code != 2 || !strings.Contains(errOut, "--config or --policy") {
		t.Fatalf("usage: exit %d %s", code, errOut)
	}
}

// TestValidatePolicy: `strait validate` compiles the policies and checks
// the catalog and the chain order, naming where each problem is.
func TestValidatePolicy(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.rego")
	os.WriteFile(pol, []byte("package strait\ndecision := {\n"), 0o644)
	cat := filepath.Join(dir, "catalog.yaml")
	os.WriteFile(cat, []byte("topics: [{topics: [t], fields: {\"$.x\": [Nope]}}]\n"), 0o644)
	cfg := filepath.Join(dir, "strait.yaml")
	os.WriteFile(cfg, []byte(`upstream: {bootstrap: ["127.0.0.1:9092"]}
interceptors:
  - name: policy
    config: {policies: [`+pol+`]}
  - name: policy
    config: {policies: [../../policy/testdata/demo/policy.rego], catalog: `+cat+`}
`), 0o644)
	code, out, errOut := strait(t, "validate", "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "interceptors[0].config.policies:") || !strings.Contains(errOut, "rego_parse_error") ||
		!strings.Contains(errOut, `interceptors[1].config.catalog.topics[0].fields[$.x]: classification "Nope" is not defined`) {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}
