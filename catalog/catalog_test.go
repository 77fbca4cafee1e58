package catalog_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/strait-proxy/strait/catalog"
)

func TestPathsByClassification(t *testing.T) {
	c, err := catalog.Load("testdata/catalog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		topic, subject, class string
		want                  []string
	}{
		{"orders", "", "PII/Personal", []string{"$.address.street", "$.name", "$.ssn_id"}},
		{"orders.eu", "", "PII/Financial", []string{"$.account"}},
		{"orders", "", "Protected", []string{"$.ssn_id"}},
		{"orders", "", "PII/Nope", nil},
		{"other", "", "PII/Personal", nil},
		{"", "payments-value", "PII/Financial", []string{"$.card"}},
		{"payments", "", "PII/Financial", []string{"$.card"}},
		{"unknown", "payments-value", "PII/Financial", []string{"$.card"}},
	} {
		if got := c.Paths(tc.topic, tc.subject, tc.class); !slices.Equal(got, tc.want) {
			t.Errorf("Paths(%q, %q, %q) = %q, want %q", tc.topic, tc.subject, tc.class, got, tc.want)
		}
	}
	tp := c.Topic("orders")
	if tp == nil || !slices.Equal(tp.Classes("$.ssn_id"), []string{"Protected", "PII/Personal"}) || len(tp.Classified()) != 4 || tp.IsAvro() {
		t.Fatalf("orders entry: %+v", tp)
	}
	if cl, ok := c.Action("Protected"); !ok || cl.Action != catalog.Clear {
		t.Fatalf("Protected defaults to clear: %+v %v", cl, ok)
	}
	if cl, ok := c.Action("PII/Financial"); !ok || cl.Action != catalog.Mask || cl.KeepLast != 4 {
		t.Fatalf("PII/Financial: %+v", cl)
	}
	pay := c.Lookup("", "payments-value")
	if !pay.IsAvro() {
		t.Fatal("payments is avro")
	}
	if _, err := pay.AvroSchema(7); err != nil {
		t.Fatalf("local schema 7: %v", err)
	}
	if _, err := pay.AvroSchema(8); err == nil {
		t.Fatal("schema 8 is neither local nor in a registry")
	}
	if !slices.Equal(c.SchemaFiles(), []string{"testdata/payment.avsc"}) {
		t.Fatalf("schema files %q", c.SchemaFiles())
	}
	var nilCat *catalog.Catalog
	if nilCat.Paths("orders", "", "PII/Personal") != nil || nilCat.Topic("orders") != nil {
		t.Fatal("a nil catalog classifies nothing")
	}
}

func TestErrorsNamePlaces(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"topics:\n- topics: [t]\n  colour: red\n", "cat.topics[0].colour: unknown key"},
		{"topics:\n- fields: {$.x: [A]}\nclassifications: {A: {}}\n", "cat.topics[0].topics: required"},
		{"classifications: {A: {action: nuke}}\n", `cat.classifications[A].action: "nuke"`},
		{"topics:\n- topics: [t]\n  fields: {$.x: [B]}\n", `cat.topics[0].fields[$.x]: classification "B" is not defined`},
		{"topics:\n- subjects: [\"[\"]\n  fields: {$.x: [A]}\nclassifications: {A: {}}\n", "cat.topics[0].subjects[0]"},
		{"classifications: {A: {}}\ntopics:\n- topics: [t]\n  format: avro\n  schemas: [{id: 1, files: [testdata/payment.avsc]}]\n  fields: {$.amount: [A]}\n", "cat.topics[0].schemas[0]"},
	} {
		_, err := catalog.Parse([]byte(tc.yaml), "cat")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v does not say %q", tc.yaml, err, tc.want)
		}
	}
	c, err := catalog.Parse([]byte("classifications: {A: {}}\ntopics:\n- topics: [t]\n  format: avro\n  fields: {$.x: [A]}\n"), "cat")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UseRegistry(nil); err == nil || !strings.Contains(err.Error(), "cat.topics[0].schemas: avro values need writer schemas") {
		t.Fatalf("avro without schemas or registry: %v", err)
	}
}
