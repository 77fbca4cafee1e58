package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateEncryptClassifications: `strait validate` resolves an encrypt
// rule's classifications through the catalog it names: one the catalog
// defines is ok, an unknown one is an error with the rule's full path.
func TestValidateEncryptClassifications(t *testing.T) {
	dir := t.TempDir()
	kr := filepath.Join(dir, "keys.json")
	if code, _, errOut := strait(t, "keys", "generate", "--keyring", kr, "--key", "customers-kek"); code != 0 {
		t.Fatal(errOut)
	}
	cat := filepath.Join(dir, "catalog.yaml")
	os.WriteFile(cat, []byte("classifications: {PII/Financial: {}, Protected: {}}\ntopics: [{topics: [customers], fields: {\"$.account\": [PII/Financial], \"$.ssn_id\": [Protected]}}]\n"), 0o644)
	cfg := func(classes string) string {
		p := filepath.Join(dir, "strait.yaml")
		os.WriteFile(p, []byte(`upstream: {bootstrap: ["127.0.0.1:9092"]}
listen: {bootstrap: 127.0.0.1:19092, broker_port_base: 19100}
interceptors:
  - name: encrypt
    config:
      kms: {local: {keyring: `+kr+`}}
      catalog: `+cat+`
      rules:
        - {topics: [customers], key_id: customers-kek, classifications: `+classes+`}
`), 0o644)
		return p
	}
	if code, out, errOut := strait(t, "validate", "--config", cfg("[PII/Financial, Protected]")); code != 0 || strings.TrimSpace(out) != "configuration ok" {
		t.Fatalf("good config: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut := strait(t, "validate", "--config", cfg("[PII/Finacial]"))
	if want := `interceptors[0].config.rules[0].classifications[0]: "PII/Finacial" is not a classification of the catalog`; code != 1 || !strings.Contains(errOut, want) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errOut, want)
	}
}
