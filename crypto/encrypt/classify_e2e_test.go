package encrypt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
)

// Encrypt rules that name classifications of the data classification
// catalog (package catalog, the file policy reads) instead of field paths.

// classCatalog is a catalog classifying the JSON values of customers and
// the Avro values of avro-customers (schema id 7, testdata/customer.avsc).
func classCatalog(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "catalog.yaml")
	doc := fmt.Sprintf(`classifications:
  PII/Personal: {action: redact}
  PII/Financial: {action: mask, keep_last: 4}
  Protected: {}
topics:
  - topics: [customers]
    fields:
      $.name: [PII/Personal]
      $.ssn_id: [Protected, PII/Personal]
      $.account: [PII/Financial]
  - topics: [avro-customers]
    format: avro
    schemas: [{id: %d, files: [%q]}]
    fields:
      $.card: [PII/Financial]
      $.ssn_id: [Protected]
      $.address.zip: [PII/Personal]
`, avroLocalID, testdata(t, "customer.avsc"))
	straittest.Must(t, os.WriteFile(p, []byte(doc), 0o600), "write catalog")
	return p
}

func classYAML(keyringPath, catalogPath, rule string) string {
	return fmt.Sprintf(`
interceptors:
  - name: encrypt
    config:
      kms: {local: {keyring: %q}}
      catalog: %q
      rules:
        - %s
`, keyringPath, catalogPath, rule)
}

// TestClassificationRulesEndToEnd: a rule naming [PII/Financial, Protected]
// encrypts exactly the fields the catalog gives those classifications, in
// each topic's format (JSON: ssn_id and account; Avro: card and ssn_id),
// leaves the PII/Personal-only fields (name, address.zip) and everything
// else in clear, and a decrypting Strait built from the same config gives
// every value back byte for byte. A topic the rule covers but the catalog
// does not classify passes untouched. The catalog and its schema files
// are the interceptors' Files, so a change to either reloads them.
func TestClassificationRulesEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cat := classCatalog(t)
	cfg := yamlConfig(t, classYAML(keyring(t), cat,
		`{topics: [customers, "avro-*"], key_id: customers-kek, classifications: [PII/Financial, Protected]}`))

	for _, mk := range []func(rules.Config, rules.Env) (*interceptor.Interceptor, error){encrypt.New, decrypt.New} {
		ic, err := mk(cfg, rules.Env{Metrics: prometheus.NewRegistry()})
		straittest.Must(t, err, "build")
		if !slices.Contains(ic.Files, cat) || !slices.Contains(ic.Files, testdata(t, "customer.avsc")) {
			t.Errorf("%s: Files %v lack the catalog or its schema", ic.Name, ic.Files)
		}
		closeIC(ic)
	}

	cluster := straittest.Cluster(t, kfake.SeedTopics(1, "customers", "avro-customers", "avro-unclassified"))
	pr := startPair(t, cluster, cfg)
	p := client(t, pr.producer.Bootstrap)
	avroSchema, err := avro.Parse(mustRead(t, testdata(t, "customer.avsc")))
	straittest.Must(t, err, "parse avsc")

	const n = 6
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs,
			&kgo.Record{Topic: "customers", Value: customer(i)},
			&kgo.Record{Topic: "avro-customers", Value: avroValue(t, avroSchema, avroLocalID, i)},
			&kgo.Record{Topic: "avro-unclassified", Value: customer(i)})
	}
	straittest.Must(t, p.ProduceSync(ctx, recs...).FirstErr(), "produce")

	for i, g := range consume(t, ctx, cluster.ListenAddrs()[0], "customers", n) {
		checkClassHeaders(t, g, i)
		var got, want map[string]any
		straittest.Must(t, json.Unmarshal(g.Value, &got), "stored JSON %d", i)
		straittest.Must(t, json.Unmarshal(customer(i), &want), "JSON %d", i)
		for _, f := range []string{"ssn_id", "account"} {
			if s, _ := got[f].(string); !isSealedString(s) {
				t.Fatalf("customers[%d].%s = %v, want a sealed field", i, f, got[f])
			}
			delete(got, f)
			delete(want, f)
		}
		if !reflect.DeepEqual(got, want) { // name (PII/Personal only), address, balance, tags
			t.Fatalf("customers[%d]: clear fields changed:\n got %v\nwant %v", i, got, want)
		}
	}
	for i, g := range consume(t, ctx, cluster.ListenAddrs()[0], "avro-customers", n) {
		checkClassHeaders(t, g, i)
		var got, want map[string]any
		straittest.Must(t, avro.Unmarshal(avroSchema, g.Value[5:], &got), "stored Avro %d does not decode with its writer schema", i)
		straittest.Must(t, avro.Unmarshal(avroSchema, avroValue(t, avroSchema, avroLocalID, i)[5:], &want), "Avro %d", i)
		if s, _ := got["ssn_id"].(string); !isSealedString(s) {
			t.Fatalf("avro-customers[%d].ssn_id = %v, want a sealed field", i, got["ssn_id"])
		}
		if b, _ := got["card"].([]byte); !isSealedBytes(b) {
			t.Fatalf("avro-customers[%d].card = %q, want an envelope", i, got["card"])
		}
		for _, f := range []string{"ssn_id", "card"} {
			delete(got, f)
			delete(want, f)
		}
		if !reflect.DeepEqual(got, want) { // address.zip is PII/Personal only: clear
			t.Fatalf("avro-customers[%d]: clear fields changed:\n got %v\nwant %v", i, got, want)
		}
	}
	for i, g := range consume(t, ctx, cluster.ListenAddrs()[0], "avro-unclassified", n) {
		if !bytes.Equal(g.Value, customer(i)) || len(g.Headers) != 0 {
			t.Fatalf("avro-unclassified[%d] (covered by the rule, not classified): stored %q %v, want it untouched", i, g.Value, g.Headers)
		}
	}

	for topic, want := range map[string]func(int) []byte{
		"customers":      customer,
		"avro-customers": func(i int) []byte { return avroValue(t, avroSchema, avroLocalID, i) },
	} {
		for i, g := range consume(t, ctx, pr.reader.Bootstrap, topic, n) {
			if !bytes.Equal(g.Value, want(i)) || len(g.Headers) != 0 {
				t.Fatalf("%s[%d] through the decrypting Strait: %q %v, want the original", topic, i, g.Value, g.Headers)
			}
		}
	}
}

func checkClassHeaders(t *testing.T, g *kgo.Record, i int) {
	t.Helper()
	if v, ok := header(g, envelope.HeaderKey); !ok || string(v) != string(envelope.PartFields.HeaderValue()) {
		t.Fatalf("%s[%d]: %s header %q, %v; want fields", g.Topic, i, envelope.HeaderKey, v, ok)
	}
	if _, ok := header(g, envelope.KeyRefHeader); !ok {
		t.Fatalf("%s[%d]: no %s header", g.Topic, i, envelope.KeyRefHeader)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	straittest.Must(t, err, "read")
	return string(b)
}

// TestClassificationRulesValidated: every mistake in a rule that names
// classifications, or in the catalog it names, is refused when the
// interceptor is built (so by `strait validate`), with the rule's path.
func TestClassificationRulesValidated(t *testing.T) {
	kr, cat := keyring(t), classCatalog(t)
	dir := t.TempDir()
	badCat := filepath.Join(dir, "bad.yaml")
	straittest.Must(t, os.WriteFile(badCat, []byte("topics: [{topics: [customers], fields: {\"$.x\": [Nope]}}]\n"), 0o600), "write")
	noSchemas := filepath.Join(dir, "noschemas.yaml")
	straittest.Must(t, os.WriteFile(noSchemas, []byte("classifications: {Protected: {}}\ntopics: [{topics: [avro-customers], format: avro, fields: {\"$.ssn_id\": [Protected]}}]\n"), 0o600), "write")
	const ok = `{topics: [customers], key_id: customers-kek, classifications: [Protected]}`
	for _, c := range []struct {
		name, catalog, rule, want string
	}{
		{"unknown classification", cat, `{topics: [customers], key_id: customers-kek, classifications: [Protected, PII/Finacial]}`,
			`rules[0].classifications[1]: "PII/Finacial" is not a classification of the catalog ` + cat + ` (it defines: PII/Financial, PII/Personal, Protected)`},
		{"no catalog", "", ok, "rules[0].classifications: need catalog"},
		{"fields and classifications", cat, `{topics: [customers], key_id: customers-kek, format: json, fields: ["$.a"], classifications: [Protected]}`,
			"rules[0].classifications: a rule names fields or classifications, not both"},
		{"format", cat, `{topics: [customers], key_id: customers-kek, format: json, classifications: [Protected]}`,
			"rules[0].classifications: format and schemas come from the catalog entry"},
		{"topics the catalog does not classify", cat, `{topics: [orders, "pay*"], key_id: customers-kek, classifications: [Protected]}`,
			"rules[0].classifications: no field of the catalog's entries for topics [orders pay*] carries Protected"},
		{"a good rule", cat, `{topics: [customers], key_id: customers-kek, classifications: [PII/Financial]}`, ""},
		{"missing catalog", filepath.Join(dir, "missing.yaml"), ok, "catalog: open " + filepath.Join(dir, "missing.yaml")},
		{"bad catalog", badCat, ok, `catalog.topics[0].fields[$.x]: classification "Nope" is not defined`},
		{"avro entry without schemas", noSchemas, `{topics: ["avro-*"], key_id: customers-kek, classifications: [Protected]}`,
			"rules[0].classifications: catalog.topics[0] holds avro values without local schemas: configure schema_registry"},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := classYAML(kr, c.catalog, c.rule)
			if c.catalog == "" {
				doc = strings.Replace(doc, `      catalog: ""`+"\n", "", 1)
			}
			cfg := yamlConfig(t, doc)
			for _, mk := range []func(rules.Config, rules.Env) (*interceptor.Interceptor, error){encrypt.New, decrypt.New} {
				ic, err := mk(cfg, rules.Env{Metrics: prometheus.NewRegistry()})
				if c.want == "" {
					straittest.Must(t, err, "a good rule")
					closeIC(ic)
					continue
				}
				if err == nil {
					closeIC(ic)
					t.Fatalf("built; want an error with %q", c.want)
				}
				if !strings.Contains(err.Error(), c.want) {
					t.Fatalf("error %q\nwant it to contain %q", err, c.want)
				}
			}
		})
	}
}
