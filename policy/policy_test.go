package policy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/strait-proxy/strait/crypto/fields"
	"github.com/strait-proxy/strait/interceptor"
)

const usaOrder = `{"name":"Joe Example","address":"123 Main St","country":"usa","ssn_id":"123-45-6789","account":"678901234567","Order_time":"2024-03-01T10:00:00Z","itemid":"A-17"}`
const brOrder = `{"name":"Ana Souza","address":"Rua 1","country":"brazil","ssn_id":"999","account":"111122223333","Order_time":"2024-03-01T11:00:00Z","itemid":"B-2"}`

func demoConfig(t testing.TB) Config {
	return Config{Policies: []string{"testdata/demo/policy.rego"}, Catalog: "testdata/demo/catalog.yaml"}
}

// TestDemoStory: the slides' record with "country": "usa", as three
// principals see it through the same policy.
func TestDemoStory(t *testing.T) {
	p, reg := newPolicy(t, demoConfig(t))
	ic := p.Interceptor()
	// The binary watches these and rebuilds the chain when one changes.
	if fmt.Sprint(ic.Files) != "[testdata/demo/policy.rego testdata/demo/catalog.yaml]" {
		t.Fatalf("files %v", ic.Files)
	}
	in := batch(100, -1, false, rec("k1", usaOrder), rec("k2", brOrder), rec("k3", usaOrder))

	// The policy reads the principal's name and one value field: decisions
	// are cached by (topic, principal, country).
	refs, perRecord, cached := p.st.Load().c.Reads()
	if fmt.Sprint(refs) != "[input.principal.name input.value.country]" || !perRecord || !cached {
		t.Fatalf("reads %v per_record=%v cached=%v", refs, perRecord, cached)
	}

	full := fetch(t, ic, interceptor.Principal{Name: "full-pii", Mechanism: "mtls"}, "orders", in)
	got, _ := decode(t, full.RecordBatches)
	if len(got) != 3 || got[0].Value != usaOrder || got[1].Value != brOrder {
		t.Fatalf("full-pii: %v", got)
	}

	us := fetch(t, ic, interceptor.Principal{Name: "us-financial"}, "orders", in)
	got, hdrs := decode(t, us.RecordBatches)
	want := `{"name":null,"address":null,"country":null,"ssn_id":null,"account":"678901234567","Order_time":"2024-03-01T10:00:00Z","itemid":"A-17"}`
	if len(got) != 2 || got[0].Offset != 100 || got[1].Offset != 102 || got[0].Value != want || got[1].Value != want {
		t.Fatalf("us-financial:\n%v\nwant offsets 100, 102 with %s", got, want)
	}
	// Compacted-topic shape: the batch still covers 100..102.
	if len(hdrs) != 1 || hdrs[0].FirstOffset != 100 || hdrs[0].LastOffsetDelta != 2 || hdrs[0].NumRecords != 2 {
		t.Fatalf("batch header %+v", hdrs)
	}

	br := fetch(t, ic, interceptor.Principal{Name: "brazil"}, "orders", in)
	got, _ = decode(t, br.RecordBatches)
	if len(got) != 1 || got[0].Offset != 101 || !strings.Contains(got[0].Value, `"account":"111122223333"`) || strings.Contains(got[0].Value, "Ana") {
		t.Fatalf("brazil: %v", got)
	}

	nobody := fetch(t, ic, interceptor.Principal{}, "orders", in)
	got, hdrs = decode(t, nobody.RecordBatches)
	if len(got) != 0 || len(hdrs) != 1 || hdrs[0].NumRecords != 0 || hdrs[0].LastOffsetDelta != 2 {
		t.Fatalf("anonymous: %v %+v", got, hdrs)
	}

	// 4 fetches x 3 records; evaluations happen once per distinct
	// (principal, country): full-pii x2, us x2, brazil x2, anonymous x2.
	if n := testutil.ToFloat64(p.m.evals); n != 8 {
		t.Fatalf("%v evaluations, want 8", n)
	}
	if n := testutil.ToFloat64(p.m.records.WithLabelValues("dropped")); n != 1+2+3 {
		t.Fatalf("%v dropped", n)
	}
	_ = reg
}

// TestCatalogDefaultsMaskTokenize: fields the decision does not name get
// their classification's action; mask keeps the last N; tokenize is
// deterministic, keyed, and format-preserving for digit strings (FF1).
func TestCatalogDefaultsMaskTokenize(t *testing.T) {
	dir := t.TempDir()
	pol := writeFile(t, dir, "p.rego", `package strait
decision := {"fields": {"$.ssn_id": "tokenize", "$.itemid": {"action": "mask", "with": "[hidden]"}}} if input.principal.name == "analyst"
`)
	t.Setenv("STRAIT_TEST_TOKEN_KEY", strings.Repeat("ab", 32))
	p, _ := newPolicy(t, Config{Policies: []string{pol}, Catalog: "testdata/demo/catalog.yaml", Tokenize: &Tokenize{KeyEnv: "STRAIT_TEST_TOKEN_KEY"}})
	ic := p.Interceptor()
	v := `{"name":"Joe","account":"678901234567","ssn_id":"123456789","itemid":"A-17","other":{"x":[1,2]}}`
	in := batch(0, -1, false, rec("a", v), rec("b", v))
	got, _ := decode(t, fetch(t, ic, interceptor.Principal{Name: "analyst"}, "orders", in).RecordBatches)
	if len(got) != 2 || got[0].Value != got[1].Value {
		t.Fatalf("tokens must be deterministic: %v", got)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(got[0].Value), &m); err != nil {
		t.Fatalf("output is not JSON: %v: %s", err, got[0].Value)
	}
	ssn, _ := m["ssn_id"].(string)
	if len(ssn) != 9 || !allDigits([]byte(ssn)) || ssn == "123456789" {
		t.Fatalf("ssn_id %q: want a 9-digit FF1 token", ssn)
	}
	if m["name"] != nil || m["account"] != "********4567" || m["itemid"] != "[hidden]" {
		t.Fatalf("got %s", got[0].Value)
	}
	if !strings.Contains(got[0].Value, `"other":{"x":[1,2]}`) {
		t.Fatalf("unselected bytes changed: %s", got[0].Value)
	}
	// The anonymous principal has no decision at all: dropped (on_error
	// defaults to drop; an undefined decision is a failure).
	got, _ = decode(t, fetch(t, ic, interceptor.Principal{}, "orders", in).RecordBatches)
	if len(got) != 0 {
		t.Fatalf("undefined decision must drop: %v", got)
	}
	if n := testutil.ToFloat64(p.m.failures.WithLabelValues("undefined")); n != 1 {
		t.Fatalf("undefined failures %v", n)
	}
}

// TestFailClosed: a policy that errors at evaluation (conflicting
// outputs) drops, or with on_error: redact redacts every classified field;
// never delivers the record as it was.
func TestFailClosed(t *testing.T) {
	dir := t.TempDir()
	pol := writeFile(t, dir, "p.rego", `package strait
decision := {"drop": false} if input.topic
decision := {"drop": true} if input.topic
`)
	for _, onErr := range []string{"drop", "redact"} {
		t.Run(onErr, func(t *testing.T) {
			p, _ := newPolicy(t, Config{Policies: []string{pol}, Catalog: "testdata/demo/catalog.yaml", OnError: onErr})
			got, _ := decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "x"}, "orders", batch(5, -1, false, rec("k", usaOrder))).RecordBatches)
			switch onErr {
			case "drop":
				if len(got) != 0 {
					t.Fatalf("got %v", got)
				}
			case "redact":
				want := `{"name":null,"address":null,"country":null,"ssn_id":null,"account":null,"Order_time":"2024-03-01T10:00:00Z","itemid":"A-17"}`
				if len(got) != 1 || got[0].Value != want {
					t.Fatalf("got %v\nwant %s", got, want)
				}
			}
			if n := testutil.ToFloat64(p.m.failures.WithLabelValues("eval")); n != 1 {
				t.Fatalf("eval failures %v", n)
			}
		})
	}
}

// TestPrincipalTopicOnly: a policy that reads only the principal and the
// topic is evaluated once per (principal, topic), whatever the number of
// records or fetches; control and transactional batches keep their
// producer state.
func TestPrincipalTopicOnly(t *testing.T) {
	dir := t.TempDir()
	pol := writeFile(t, dir, "p.rego", `package strait
default decision := {"drop": true}
decision := {"classifications": {"PII/Financial": "redact"}, "default": "clear"} if {
	input.principal.name == "alice"
	startswith(input.topic, "orders")
}
`)
	p, _ := newPolicy(t, Config{Policies: []string{pol}, Catalog: "testdata/demo/catalog.yaml"})
	refs, perRecord, _ := p.st.Load().c.Reads()
	if perRecord || fmt.Sprint(refs) != "[input.principal.name input.topic]" {
		t.Fatalf("reads %v per_record %v", refs, perRecord)
	}
	ctrl := batch(3, 9, true, kmsg.Record{Key: []byte{0, 0, 0, 0}, Value: []byte{0, 0, 0, 0, 0, 0}})
	ctrl[22] |= 0x20 // control
	fixCRC(ctrl)
	in := append(batch(0, 9, true, rec("a", usaOrder), rec("b", usaOrder), rec("c", usaOrder)), ctrl...)
	for i := 0; i < 3; i++ {
		got, hdrs := decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "alice"}, "orders", in).RecordBatches)
		if len(got) != 3 || !strings.Contains(got[0].Value, `"account":null`) || !strings.Contains(got[0].Value, `"name":"Joe Example"`) {
			t.Fatalf("alice: %v", got)
		}
		if len(hdrs) != 2 || hdrs[0].ProducerID != 9 || hdrs[0].ProducerEpoch != 3 || hdrs[0].FirstSequence != 11 || hdrs[1].Attributes&0x20 == 0 {
			t.Fatalf("headers %+v", hdrs)
		}
		out := fetch(t, p.Interceptor(), interceptor.Principal{Name: "bob"}, "orders", in).RecordBatches
		got, hdrs = decode(t, out)
		if len(got) != 0 || len(hdrs) != 2 || hdrs[0].NumRecords != 0 || hdrs[0].LastOffsetDelta != 2 || hdrs[0].ProducerID != 9 {
			t.Fatalf("bob: %v %+v", got, hdrs)
		}
		if !bytes.Equal(out[len(out)-len(ctrl):], ctrl) {
			t.Fatal("control batch changed")
		}
	}
	if n := testutil.ToFloat64(p.m.evals); n != 2 {
		t.Fatalf("%v evaluations, want 2 (alice, bob)", n)
	}
}

// TestAuditNeverHoldsValues: the audit log has one line per decision
// batch with counts, and no field value, key or header of any record.
func TestAuditNeverHoldsValues(t *testing.T) {
	dir := t.TempDir()
	auditFile := filepath.Join(dir, "audit.jsonl")
	cfg := demoConfig(t)
	cfg.Audit = &Audit{Output: auditFile}
	p, _ := newPolicy(t, cfg)
	in := batch(100, -1, false, rec("secret-key-1", usaOrder), rec("secret-key-2", brOrder))
	fetch(t, p.Interceptor(), interceptor.Principal{Name: "us-financial", Mechanism: "SCRAM-SHA-256"}, "orders", in)
	fetch(t, p.Interceptor(), interceptor.Principal{Name: "full-pii"}, "orders", in)
	p.Close()
	b, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d audit lines:\n%s", len(lines), b)
	}
	var l AuditLine
	if err := json.Unmarshal([]byte(lines[0]), &l); err != nil {
		t.Fatal(err)
	}
	if l.Principal != "User:us-financial" || l.Topic != "orders" || l.OffsetFirst != 100 || l.OffsetLast != 101 ||
		l.Delivered != 1 || l.Dropped != 1 || l.Redacted != 4 || l.Revision != p.Revision() || l.ClientID != "test-client" {
		t.Fatalf("audit line %+v", l)
	}
	for _, secret := range []string{"Joe Example", "123 Main St", "123-45-6789", "678901234567", "Ana Souza", "111122223333", "secret-key", "A-17", "usa"} {
		if bytes.Contains(b, []byte(secret)) {
			t.Fatalf("audit log holds %q:\n%s", secret, b)
		}
	}
}

// TestReload: a new policy takes effect; one that does not compile is
// rejected and the old one stays.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	pol := writeFile(t, dir, "p.rego", "package strait\ndecision := {\"drop\": true}\n")
	p, reg := newPolicy(t, Config{Policies: []string{dir}})
	in := batch(0, -1, false, rec("a", `{"x":1}`))
	if got, _ := decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "a"}, "t", in).RecordBatches); len(got) != 0 {
		t.Fatal("drop policy delivered")
	}
	rev := p.Revision()
	writeFile(t, dir, "p.rego", "package strait\ndecision := {}\n")
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	if p.Revision() == rev {
		t.Fatal("revision did not change")
	}
	if got, _ := decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "a"}, "t", in).RecordBatches); len(got) != 1 {
		t.Fatal("new policy not in force")
	}
	rev = p.Revision()
	writeFile(t, dir, "p.rego", "package strait\ndecision := {\n")
	if err := p.Reload(); err == nil {
		t.Fatal("broken policy accepted")
	}
	if p.Revision() != rev {
		t.Fatal("rejected reload changed the policy")
	}
	if got, _ := decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "a"}, "t", in).RecordBatches); len(got) != 1 {
		t.Fatal("old policy not kept")
	}
	if n := counterValue(t, reg, "strait_policy_reloads_total", "rejected"); n != 1 {
		t.Fatalf("rejected reloads %v", n)
	}
	_ = pol
}

func counterValue(t *testing.T, g prometheus.Gatherer, name, result string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestConfigErrors: validation names the path of each problem.
func TestConfigErrors(t *testing.T) {
	_, err := Load(Config{OnError: "allow", Audit: &Audit{}})
	for _, want := range []string{"policies: required", `on_error: "allow"`, "audit.output: required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v does not say %q", err, want)
		}
	}
	_, err = ParseCatalog([]byte("topics:\n- topics: [t]\n  colour: red\n"), "catalog")
	if err == nil || !strings.Contains(err.Error(), "catalog.topics[0].colour: unknown key") {
		t.Fatalf("unknown key: %v", err)
	}
	_, err = ParseCatalog([]byte("classifications: {A: {action: nuke}}\ntopics:\n- topics: [t]\n  fields: {\"$.x\": [B], \"bad\": [A]}\n"), "catalog")
	for _, want := range []string{"classifications[A].action", `fields[$.x]: classification "B"`, "fields[bad]"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v does not say %q", err, want)
		}
	}
	_, err = Load(Config{Policies: []string{"testdata/demo/policy.rego"}, Query: "data.strait.nope"})
	if err == nil || !strings.Contains(err.Error(), "names no rule") {
		t.Fatalf("missing query rule: %v", err)
	}
	f := false
	_, err = Load(Config{Policies: []string{"testdata/demo/policy.rego"}, PerRecord: &f})
	if err == nil || !strings.Contains(err.Error(), "input.value.country") {
		t.Fatalf("per_record false on a record policy: %v", err)
	}
}

func fixCRC(b []byte) {
	c := crcOf(b[21:])
	b[17], b[18], b[19], b[20] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
}

// TestUnknownTopicID: a Fetch v13+ partition whose topic id cannot be
// resolved fails closed with UNKNOWN_TOPIC_ID (retriable), records
// withheld; a known id is decided as usual.
func TestUnknownTopicID(t *testing.T) {
	p, _ := newPolicy(t, demoConfig(t))
	ic := p.Interceptor()
	known := [16]byte{1, 2, 3}
	mr := kmsg.NewPtrMetadataResponse()
	mt := kmsg.NewMetadataResponseTopic()
	mt.Topic, mt.TopicID = kmsg.StringPtr("orders"), known
	mr.Topics = append(mr.Topics, mt)
	p.topics.Learn(mr)
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 13
	for _, id := range [][16]byte{{9, 9, 9}, known} {
		tp := kmsg.NewFetchResponseTopic()
		tp.TopicID = id
		pt := kmsg.NewFetchResponseTopicPartition()
		pt.RecordBatches = batch(0, -1, false, rec("k", usaOrder))
		tp.Partitions = append(tp.Partitions, pt)
		resp.Topics = append(resp.Topics, tp)
	}
	conn := &interceptor.Conn{Listener: "bootstrap"}
	conn.SetPrincipal(interceptor.Principal{Name: "full-pii"})
	x := &interceptor.Exchange{Conn: conn, Key: 1, Version: 13, Response: resp}
	if err := ic.Hooks[0].Response(t.Context(), x); err != nil {
		t.Fatal(err)
	}
	defer x.Done()
	unknown, ok := resp.Topics[0].Partitions[0], resp.Topics[1].Partitions[0]
	if unknown.ErrorCode != 100 || unknown.RecordBatches != nil || !x.ResponseModified() {
		t.Fatalf("unknown id: code %d, %d bytes", unknown.ErrorCode, len(unknown.RecordBatches))
	}
	if got, _ := decode(t, ok.RecordBatches); ok.ErrorCode != 0 || len(got) != 1 || got[0].Value != usaOrder {
		t.Fatalf("known id: %d %v", ok.ErrorCode, got)
	}
}

// TestAvro: Avro values (Confluent wire format, local writer schema): the
// policy reads a field found by the Avro walker, classified fields are
// redacted (empty), masked and tokenized in place, and the result still
// decodes with the writer schema (hamba/avro).
func TestAvro(t *testing.T) {
	t.Setenv("STRAIT_TEST_TOKEN_KEY", strings.Repeat("cd", 32))
	p, _ := newPolicy(t, Config{Policies: []string{"testdata/avro/policy.rego"}, Catalog: "testdata/avro/catalog.yaml",
		Tokenize: &Tokenize{KeyEnv: "STRAIT_TEST_TOKEN_KEY"}})
	schema, err := avro.ParseFiles("testdata/avro/order.avsc")
	if err != nil {
		t.Fatal(err)
	}
	enc := func(country string) []byte {
		acct := "678900000234"
		b, err := avro.Marshal(schema, map[string]any{
			"name": "Joe Example", "country": country, "ssn_id": "123456789", "account": &acct,
			"card": []byte("4111111111111111"), "age": 42, "tags": []string{"gold", "2fa"},
			"address": map[string]any{"street": "123 Main St", "zip": "94107"}, "itemid": "A-17",
		})
		if err != nil {
			t.Fatal(err)
		}
		return append(fields.AppendWire(nil, 7, nil), b...)
	}
	in := batch(0, -1, false, kmsg.Record{Value: enc("usa")}, kmsg.Record{Value: enc("brazil")})
	got, _ := decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "a"}, "orders-avro", in).RecordBatches)
	if len(got) != 1 || got[0].Offset != 0 {
		t.Fatalf("got %v", got)
	}
	id, _, payload, err := fields.ParseWire([]byte(got[0].Value), false)
	if err != nil || id != 7 {
		t.Fatalf("wire header: %d %v", id, err)
	}
	var out map[string]any
	if err := avro.Unmarshal(schema, payload, &out); err != nil {
		t.Fatalf("rewritten value does not decode: %v", err)
	}
	addr := out["address"].(map[string]any)
	if out["name"] != "" || addr["street"] != "" || addr["zip"] != "94107" || out["country"] != "usa" || out["itemid"] != "A-17" ||
		string(out["card"].([]byte)) != "************1111" || out["age"] != 42 {
		t.Fatalf("decoded %v", out)
	}
	if fmt.Sprint(out["account"]) != "********0234" && fmt.Sprint(out["account"]) != "map[string:********0234]" {
		t.Fatalf("account %v", out["account"])
	}
	if ssn, _ := out["ssn_id"].(string); len(ssn) != 9 || ssn == "123456789" || !allDigits([]byte(ssn)) {
		t.Fatalf("ssn_id %v: want a 9-digit FF1 token", out["ssn_id"])
	}
}

// TestBundle: an OPA bundle directory: its data is data.*, its manifest
// revision is the policy revision (in audit lines), its tests are left out.
func TestBundle(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, ".manifest", `{"revision": "orders-2024-03-01", "roots": ["strait", "strait_test"]}`)
	writeFile(t, dir, "data.json", `{"strait": {"readers": ["alice"]}}`)
	writeFile(t, dir, "policy.rego", `package strait
default decision := {"drop": true}
decision := {"default": "clear"} if input.principal.name in data.strait.readers
`)
	writeFile(t, dir, "policy_test.rego", `package strait_test
test_nothing if true
`)
	p, _ := newPolicy(t, Config{Bundle: dir})
	if p.Revision() != "orders-2024-03-01" {
		t.Fatalf("revision %q", p.Revision())
	}
	in := batch(0, -1, false, rec("k", `{"a":1}`))
	if got, _ := decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "alice"}, "t", in).RecordBatches); len(got) != 1 {
		t.Fatalf("alice: %v", got)
	}
	if got, _ := decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "bob"}, "t", in).RecordBatches); len(got) != 0 {
		t.Fatalf("bob: %v", got)
	}
}

// TestProtobuf: Protobuf values (Confluent wire format, local .proto): the
// policy reads input.value.country from the canonical JSON, classified
// fields (nested and repeated too) are redacted (absent), masked and
// tokenized, and the result is a valid message a real decoder reads.
func TestProtobuf(t *testing.T) {
	t.Setenv("STRAIT_TEST_TOKEN_KEY", strings.Repeat("ef", 32))
	p, _ := newPolicy(t, Config{Policies: []string{"testdata/avro/policy.rego"}, Catalog: "testdata/proto/catalog.yaml",
		Tokenize: &Tokenize{KeyEnv: "STRAIT_TEST_TOKEN_KEY"}})
	fd, err := fields.LoadProtobufFile(fields.LocalProtobuf{File: "testdata/proto/order.proto"})
	if err != nil {
		t.Fatal(err)
	}
	md := fd.Messages().ByName("Order")
	enc := func(country string) []byte {
		m := dynamicpb.NewMessage(md)
		err := protojson.Unmarshal([]byte(`{"name":"Joe Example","country":"`+country+`","ssn_id":"123456789","account":"678900000234",
			"card":"NDExMTExMTExMTExMTExMQ==","age":42,"tags":["gold","2fa"],"address":{"street":"123 Main St","zip":"94107"},
			"itemid":"A-17","previous":[{"street":"1 Old Rd","zip":"1"},{"street":"2 Old Rd","zip":"2"}]}`), m)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return append(fields.AppendWire(nil, 9, []int{1}), b...)
	}
	in := batch(0, -1, false, kmsg.Record{Value: enc("brazil")}, kmsg.Record{Value: enc("usa")})
	got, _ := decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "a"}, "orders-proto", in).RecordBatches)
	if len(got) != 1 || got[0].Offset != 1 {
		t.Fatalf("got %v", got)
	}
	id, idx, payload, err := fields.ParseWire([]byte(got[0].Value), true)
	if err != nil || id != 9 || fmt.Sprint(idx) != "[1]" {
		t.Fatalf("wire header: %d %v %v", id, idx, err)
	}
	m := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(payload, m); err != nil {
		t.Fatalf("rewritten value does not decode: %v", err)
	}
	j, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	var out map[string]any
	json.Unmarshal(j, &out)
	addr := out["address"].(map[string]any)
	prev := out["previous"].([]any)
	if out["name"] != nil || addr["street"] != nil || addr["zip"] != "94107" || out["country"] != "usa" || out["itemid"] != "A-17" ||
		out["account"] != "********0234" || out["card"] != base64.StdEncoding.EncodeToString([]byte("************1111")) ||
		prev[0].(map[string]any)["street"] != nil || prev[1].(map[string]any)["zip"] != "2" || fmt.Sprint(out["tags"]) != "[gold 2fa]" {
		t.Fatalf("decoded %s", j)
	}
	if ssn, _ := out["ssn_id"].(string); len(ssn) != 9 || ssn == "123456789" || !allDigits([]byte(ssn)) {
		t.Fatalf("ssn_id %v: want a 9-digit FF1 token", out["ssn_id"])
	}
}

// TestAuditRotation: with max_size_mb the audit file is rotated (FILE.1,
// FILE.2, ... up to max_files) and no line is lost or split.
func TestAuditRotation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "audit.jsonl")
	cfg := demoConfig(t)
	cfg.Audit = &Audit{Output: file, MaxSizeMB: 1, MaxFiles: 2}
	p, _ := newPolicy(t, cfg)
	in := batch(0, -1, false, rec("k", usaOrder))
	const fetches = 6000 // ~380 bytes a line: about 2.2 MiB
	for i := 0; i < fetches; i++ {
		fetch(t, p.Interceptor(), interceptor.Principal{Name: "full-pii"}, "orders", in)
	}
	p.Close()
	total := 0
	for _, f := range []string{file, file + ".1", file + ".2"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(b) > 1<<20 {
			t.Fatalf("%s is %d bytes, over max_size_mb", f, len(b))
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var al AuditLine
			if err := json.Unmarshal([]byte(l), &al); err != nil {
				t.Fatalf("%s: line %q: %v", f, l, err)
			}
			total++
		}
	}
	if _, err := os.Stat(file + ".3"); err == nil {
		t.Fatal("more rotated files than max_files")
	}
	if total != fetches { // ~2.2 MiB fit in the three files: none dropped
		t.Fatalf("%d lines kept of %d", total, fetches)
	}
}

// TestSchemaRegistry: Avro and Protobuf writer schemas resolved by the id
// in the wire header from a Schema Registry (srfake), for catalog topics
// that list no local schema.
func TestSchemaRegistry(t *testing.T) {
	fake := srfake.New()
	defer fake.Close()
	avsc, _ := os.ReadFile("testdata/avro/order.avsc")
	protoSrc, _ := os.ReadFile("testdata/proto/order.proto")
	aid, _, err := fake.RegisterSchema("orders-avro-value", sr.Schema{Schema: string(avsc)})
	if err != nil {
		t.Fatal(err)
	}
	pid, _, err := fake.RegisterSchema("orders-proto-value", sr.Schema{Schema: string(protoSrc), Type: sr.TypeProtobuf})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cat := writeFile(t, dir, "catalog.yaml", `classifications:
  PII/Personal: {action: redact}
topics:
  - topics: [orders-avro]
    format: avro
    fields: {$.name: [PII/Personal]}
  - topics: [orders-proto]
    format: protobuf
    fields: {$.name: [PII/Personal]}
`)
	_, err = Load(Config{Policies: []string{"testdata/avro/policy.rego"}, Catalog: cat})
	if err == nil || !strings.Contains(err.Error(), "catalog.topics[0].schemas: avro values need writer schemas") {
		t.Fatalf("no schemas, no registry: %v", err)
	}
	p, _ := newPolicy(t, Config{Policies: []string{"testdata/avro/policy.rego"}, Catalog: cat,
		SchemaRegistry: &SchemaRegistry{URLs: []string{fake.URL()}}})

	schema, _ := avro.ParseFiles("testdata/avro/order.avsc")
	av, err := avro.Marshal(schema, map[string]any{"name": "Joe", "country": "usa", "ssn_id": "1", "account": nil,
		"card": []byte{}, "age": 1, "tags": []string{}, "address": map[string]any{"street": "s", "zip": "z"}, "itemid": "A"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "a"}, "orders-avro",
		batch(0, -1, false, kmsg.Record{Value: append(fields.AppendWire(nil, int32(aid), nil), av...)})).RecordBatches)
	var out map[string]any
	if len(got) != 1 || avro.Unmarshal(schema, []byte(got[0].Value)[5:], &out) != nil || out["name"] != "" || out["country"] != "usa" {
		t.Fatalf("avro via registry: %v %v", got, out)
	}

	fd, _ := fields.LoadProtobufFile(fields.LocalProtobuf{File: "testdata/proto/order.proto"})
	m := dynamicpb.NewMessage(fd.Messages().ByName("Order"))
	protojson.Unmarshal([]byte(`{"name":"Joe","country":"usa","itemid":"A"}`), m)
	pb, _ := proto.Marshal(m)
	got, _ = decode(t, fetch(t, p.Interceptor(), interceptor.Principal{Name: "a"}, "orders-proto",
		batch(0, -1, false, kmsg.Record{Value: append(fields.AppendWire(nil, int32(pid), []int{1}), pb...)})).RecordBatches)
	if len(got) != 1 {
		t.Fatalf("protobuf via registry: %v", got)
	}
	_, _, payload, _ := fields.ParseWire([]byte(got[0].Value), true)
	m2 := dynamicpb.NewMessage(fd.Messages().ByName("Order"))
	if err := proto.Unmarshal(payload, m2); err != nil {
		t.Fatal(err)
	}
	if j, _ := protojson.Marshal(m2); !strings.Contains(string(j), `"country":"usa"`) || strings.Contains(string(j), "Joe") {
		t.Fatalf("protobuf via registry: %s", j)
	}
}

// TestReads: what OPA's dependency analysis says the policy reads decides
// per-record evaluation and caching.
func TestReads(t *testing.T) {
	for _, c := range []struct {
		src               string
		refs              string
		perRecord, cached bool
	}{
		{`decision := {} if input.principal.name == "a"`, "[input.principal.name]", false, true},
		{`decision := {} if input.principal.attrs.ou == "x"`, "[input.principal.attrs.ou]", false, true},
		{`decision := {} if startswith(input.topic, "o")`, "[input.topic]", false, true},
		{`decision := {} if input.value.a.b == 1`, "[input.value.a.b]", true, true},
		{`decision := {} if input.value.items[0].sku == "x"`, "[input.value.items[0].sku]", true, true},
		{`decision := {} if input.headers.region == "eu"`, "[input.headers.region]", true, true},
		{`decision := {} if input.key == "k"`, "[input.key]", true, true},
		{"decision := {} if {\n\tsome k, _ in input.value\n\tk == \"x\"\n}", "[input.value]", true, false},
		{`decision := {} if input.offset > 3`, "[input.offset]", true, false},
		{`decision := {} if input[x] == 1`, "[input]", true, false},
		{"decision := {} if f(input.topic)\nf(t) if t == \"x\"", "[input.topic]", false, true},
		{`decision := {} if time.now_ns() > 0`, "[]", false, false},
		{`decision := {} if rand.intn("x", 10) > 5`, "[]", false, false},
	} {
		dir := t.TempDir()
		pol := writeFile(t, dir, "p.rego", "package strait\n"+c.src+"\n")
		comp, err := Load(Config{Policies: []string{pol}})
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		refs, perRecord, cached := comp.Reads()
		if fmt.Sprint(refs) != c.refs || perRecord != c.perRecord || cached != c.cached {
			t.Errorf("%s: reads %v per_record=%v cached=%v, want %s %v %v", c.src, refs, perRecord, cached, c.refs, c.perRecord, c.cached)
		}
	}
}
