package policy

import (
	"encoding/json"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/strait-proxy/strait/interceptor"
)

// FuzzRecord drives the input builder, the decision and the rewriter with
// arbitrary keys, header values and record values, through two policies:
// one reading chosen value fields (cached), one reading the whole value
// (per record). Invariants: no panic; output batches parse with valid
// CRCs and cover the input's offsets; a record whose value was valid JSON
// is still valid JSON after redaction and masking; an invalid value is
// never delivered changed-but-unparsed (fail closed: dropped).
func FuzzRecord(f *testing.F) {
	f.Add([]byte("k"), []byte("v"), []byte(usaOrder))
	f.Add([]byte(nil), []byte(nil), []byte(`{"country":"brazil","account":"1","items":[{"x":1}]}`))
	f.Add([]byte("k"), []byte("\xff"), []byte(`{"country":"usa","name":"a\"b\\u00e9","account":12345}`))
	f.Add([]byte("k"), []byte("h"), []byte(`not json`))
	f.Add([]byte("k"), []byte("h"), []byte(`{"country":{"deep":[1,2,{"usa":true}]},"account":null}`))
	dir := f.TempDir()
	partial := writeFile(f, dir, "partial.rego", `package strait
decision := {"fields": {"$.account": {"action": "mask", "keep_last": 2}}, "default": "redact"} if {
	input.value.country == "usa"
	input.headers.h != "drop"
} else := {"drop": true}
`)
	whole := writeFile(f, dir, "whole.rego", `package strait
decision := {"default": "redact"} if {
	some k, _ in input.value
	k == "country"
	count(input.key) >= 0
} else := {"drop": true}
`)
	var ics []*interceptor.Interceptor
	for _, pol := range []string{partial, whole} {
		p, err := NewPolicy(Config{Policies: []string{pol}, Catalog: "testdata/demo/catalog.yaml"}, Env{})
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { p.Close() })
		ics = append(ics, p.Interceptor())
	}
	f.Fuzz(func(t *testing.T, key, hval, value []byte) {
		r := kmsg.Record{Key: key, Value: value, Headers: []kmsg.Header{{Key: "h", Value: hval}}}
		in := batch(40, -1, false, r, r)
		for _, ic := range ics {
			out := fetch(t, ic, interceptor.Principal{Name: "p"}, "orders", in)
			recs, hdrs := decode(t, out.RecordBatches)
			if len(hdrs) != 1 || hdrs[0].FirstOffset != 40 || hdrs[0].LastOffsetDelta != 1 {
				t.Fatalf("offsets not covered: %+v", hdrs)
			}
			for _, g := range recs {
				if g.Value == "<nil>" {
					continue
				}
				if json.Valid(value) && !json.Valid([]byte(g.Value)) {
					t.Fatalf("valid JSON %q became %q", value, g.Value)
				}
				if !json.Valid(value) && g.Value != string(value) {
					t.Fatalf("invalid JSON %q delivered changed: %q", value, g.Value)
				}
			}
		}
	})
}

// FuzzBinaryRecord: arbitrary Avro and Protobuf values (behind a valid
// wire header, or not) never panic the Avro and Protobuf paths, and the
// output batch still parses and covers the input's offsets.
func FuzzBinaryRecord(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 7, 2, 'a'}, true)
	f.Add([]byte{0, 0, 0, 0, 9, 2, 2, 0x12, 3, 'u', 's', 'a', 0x0a, 1, 'x'}, false)
	f.Add([]byte("not binary"), true)
	f.Setenv("STRAIT_FUZZ_TOKEN_KEY", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	tok := &Tokenize{KeyEnv: "STRAIT_FUZZ_TOKEN_KEY"}
	var avroIC, protoIC *interceptor.Interceptor
	for i, cat := range []string{"testdata/avro/catalog.yaml", "testdata/proto/catalog.yaml"} {
		p, err := NewPolicy(Config{Policies: []string{"testdata/avro/policy.rego"}, Catalog: cat, Tokenize: tok, OnError: "redact"}, Env{})
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { p.Close() })
		if i == 0 {
			avroIC = p.Interceptor()
		} else {
			protoIC = p.Interceptor()
		}
	}
	f.Fuzz(func(t *testing.T, value []byte, isAvro bool) {
		ic, topic := protoIC, "orders-proto"
		if isAvro {
			ic, topic = avroIC, "orders-avro"
		}
		out := fetch(t, ic, interceptor.Principal{Name: "p"}, topic, batch(0, -1, false, kmsg.Record{Value: value}))
		_, hdrs := decode(t, out.RecordBatches)
		if len(hdrs) != 1 || hdrs[0].LastOffsetDelta != 0 {
			t.Fatalf("offsets not covered: %+v", hdrs)
		}
	})
}
