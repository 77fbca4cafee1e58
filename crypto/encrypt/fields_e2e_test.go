package encrypt_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/strait-proxy/strait/crypto/decrypt"
	"github.com/strait-proxy/strait/crypto/encrypt"
	"github.com/strait-proxy/strait/crypto/envelope"
	"github.com/strait-proxy/strait/crypto/fields"
	"github.com/strait-proxy/strait/crypto/rules"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/internal/straittest"
)

// Avro and Protobuf field encryption end to end: Confluent-wire-format
// values go through an encrypting Strait, are stored with the chosen fields
// sealed (and every other field decoding unchanged with the writer schema),
// and come back byte for byte through a decrypting Strait. Writer schemas
// come from local files (testdata/) and from a Schema Registry (srfake, with
// basic auth).

const (
	avroLocalID  = 7
	protoLocalID = 8
	srPassEnv    = "STRAIT_TEST_SR_PASSWORD"
)

// sealedPaths are the configured paths; sealedNames the fields they touch.
var (
	sealedPaths = []string{"$.ssn_id", "$.account", "$.card", "$.tags[*]", "$.address.zip"}
	sealedNames = []string{"ssn_id", "account", "card", "tags", "zip"}
	// protoIndexes: Customer is the second message of customer.proto.
	protoIndexes = []int{1}
)

// yamlList is a YAML flow sequence of quoted strings.
func yamlList(l []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range l {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", s)
	}
	return b.String() + "]"
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	straittest.Must(t, err, "abs")
	return p
}

func fieldsYAML(t *testing.T, keyringPath, srURL string) string {
	return fmt.Sprintf(`
interceptors:
  - name: encrypt
    config:
      kms: {local: {keyring: %q}}
      schema_registry: {urls: [%q], username: alice, password_env: %s}
      rules:
        - topics: [avro-local]
          key_id: customers-kek
          format: avro
          fields: %s
          schemas: [{id: %d, files: [%q]}]
        - topics: [proto-local]
          key_id: customers-kek
          format: protobuf
          fields: %s
          schemas: [{id: %d, files: [%q]}]
        - {topics: [avro-sr], key_id: customers-kek, format: avro, fields: %s}
        - {topics: [proto-sr], key_id: customers-kek, format: protobuf, fields: %s}
`, keyringPath, srURL, srPassEnv,
		yamlList(sealedPaths), avroLocalID, testdata(t, "customer.avsc"),
		yamlList(sealedPaths), protoLocalID, testdata(t, "customer.proto"),
		yamlList(sealedPaths), yamlList(sealedPaths))
}

// avroCustomer is the i-th test record as a generic Avro value; i%3==0 has
// a null account.
func avroCustomer(i int) map[string]any {
	m := map[string]any{
		"name":    fmt.Sprintf("Joe Example %d", i),
		"ssn_id":  fmt.Sprintf("123-45-%04d", i),
		"account": fmt.Sprintf("6789%08d", i),
		"card":    fmt.Appendf(nil, "card-secret-%04d", i),
		"age":     30 + i,
		"balance": float64(i) + 0.25,
		"tags":    []any{fmt.Sprintf("tag-secret-%d-a", i), fmt.Sprintf("tag-secret-%d-b", i)},
		"address": map[string]any{"street": "123 Main St", "zip": fmt.Sprintf("zip-%05d", i)},
	}
	if i%3 == 0 {
		m["account"] = nil
	}
	return m
}

// secretsOf are the plaintexts of the sealed fields of record i.
func secretsOf(i int) []string {
	s := []string{fmt.Sprintf("123-45-%04d", i), fmt.Sprintf("card-secret-%04d", i),
		fmt.Sprintf("tag-secret-%d-a", i), fmt.Sprintf("tag-secret-%d-b", i), fmt.Sprintf("zip-%05d", i)}
	if i%3 != 0 {
		s = append(s, fmt.Sprintf("6789%08d", i))
	}
	return s
}

func avroValue(t *testing.T, schema avro.Schema, id int32, i int) []byte {
	t.Helper()
	b, err := avro.Marshal(schema, avroCustomer(i))
	straittest.Must(t, err, "avro marshal")
	return append(fields.AppendWire(nil, id, nil), b...)
}

func protoCustomer(md protoreflect.MessageDescriptor, i int) *dynamicpb.Message {
	m := dynamicpb.NewMessage(md)
	f := md.Fields()
	m.Set(f.ByName("name"), protoreflect.ValueOfString(fmt.Sprintf("Joe Example %d", i)))
	m.Set(f.ByName("ssn_id"), protoreflect.ValueOfString(fmt.Sprintf("123-45-%04d", i)))
	if i%3 != 0 {
		m.Set(f.ByName("account"), protoreflect.ValueOfString(fmt.Sprintf("6789%08d", i)))
	}
	m.Set(f.ByName("card"), protoreflect.ValueOfBytes(fmt.Appendf(nil, "card-secret-%04d", i)))
	m.Set(f.ByName("age"), protoreflect.ValueOfInt32(int32(30+i)))
	m.Set(f.ByName("balance"), protoreflect.ValueOfFloat64(float64(i)+0.25))
	tags := m.Mutable(f.ByName("tags")).List()
	tags.Append(protoreflect.ValueOfString(fmt.Sprintf("tag-secret-%d-a", i)))
	tags.Append(protoreflect.ValueOfString(fmt.Sprintf("tag-secret-%d-b", i)))
	addr := m.Mutable(f.ByName("address")).Message()
	addr.Set(addr.Descriptor().Fields().ByName("street"), protoreflect.ValueOfString("123 Main St"))
	addr.Set(addr.Descriptor().Fields().ByName("zip"), protoreflect.ValueOfString(fmt.Sprintf("zip-%05d", i)))
	return m
}

func protoValue(t *testing.T, md protoreflect.MessageDescriptor, id int32, i int) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(protoCustomer(md, i))
	straittest.Must(t, err, "proto marshal")
	return append(fields.AppendWire(nil, id, protoIndexes), b...)
}

// isSealedString: a sealed string field holds the padded base64 of a
// detached envelope; a sealed bytes field the envelope itself.
func isSealedString(s string) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	return err == nil && isSealedBytes(b)
}

func isSealedBytes(b []byte) bool {
	_, err := envelope.ParseDetached(b)
	return err == nil
}

func TestAvroProtobufFieldsEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The registry, with basic auth; Strait reads the password from the
	// environment (password_env).
	fake := srfake.New(srfake.WithAuth("Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))))
	t.Cleanup(fake.Close)
	t.Setenv(srPassEnv, "s3cret")
	avsc, err := os.ReadFile(testdata(t, "customer.avsc"))
	straittest.Must(t, err, "read avsc")
	protoSrc, err := os.ReadFile(testdata(t, "customer.proto"))
	straittest.Must(t, err, "read proto")
	avroSRID, _, err := fake.RegisterSchema("avro-sr-value", sr.Schema{Schema: string(avsc), Type: sr.TypeAvro})
	straittest.Must(t, err, "register avro")
	protoSRID, _, err := fake.RegisterSchema("proto-sr-value", sr.Schema{Schema: string(protoSrc), Type: sr.TypeProtobuf})
	straittest.Must(t, err, "register protobuf")

	avroSchema, err := avro.Parse(string(avsc))
	straittest.Must(t, err, "parse avsc")
	fd, err := fields.LoadProtobufFile(fields.LocalProtobuf{File: testdata(t, "customer.proto")})
	straittest.Must(t, err, "load proto")
	md := fd.Messages().ByName("Customer")

	cluster := straittest.Cluster(t, kfake.SeedTopics(1, "avro-local", "proto-local", "avro-sr", "proto-sr"))
	pr := startPair(t, cluster, yamlConfig(t, fieldsYAML(t, keyring(t), fake.URL())))
	p := client(t, pr.producer.Bootstrap)

	const n = 12
	cases := []struct {
		topic string
		value func(i int) []byte
		check func(t *testing.T, i int, stored []byte)
	}{
		{"avro-local", func(i int) []byte { return avroValue(t, avroSchema, avroLocalID, i) }, nil},
		{"avro-sr", func(i int) []byte { return avroValue(t, avroSchema, int32(avroSRID), i) }, nil},
		{"proto-local", func(i int) []byte { return protoValue(t, md, protoLocalID, i) }, nil},
		{"proto-sr", func(i int) []byte { return protoValue(t, md, int32(protoSRID), i) }, nil},
	}
	for ci := range cases {
		c := &cases[ci]
		if c.topic[:4] == "avro" {
			c.check = func(t *testing.T, i int, stored []byte) { checkStoredAvro(t, avroSchema, c.value(i), stored, i) }
		} else {
			c.check = func(t *testing.T, i int, stored []byte) { checkStoredProto(t, md, c.value(i), stored, i) }
		}
	}
	for _, c := range cases {
		t.Run(c.topic, func(t *testing.T) {
			var recs []*kgo.Record
			for i := range n {
				recs = append(recs, &kgo.Record{Topic: c.topic, Key: fmt.Appendf(nil, "k%d", i), Value: c.value(i)})
			}
			straittest.Must(t, p.ProduceSync(ctx, recs...).FirstErr(), "produce %s", c.topic)

			stored := consume(t, ctx, cluster.ListenAddrs()[0], c.topic, n)
			for i, g := range stored {
				if v, ok := header(g, envelope.HeaderKey); !ok || string(v) != string(envelope.PartFields.HeaderValue()) {
					t.Fatalf("stored record %d: %s header %q, %v", i, envelope.HeaderKey, v, ok)
				}
				for _, s := range secretsOf(i) {
					if bytes.Contains(g.Value, []byte(s)) {
						t.Fatalf("stored record %d holds %q in clear", i, s)
					}
				}
				c.check(t, i, g.Value)
			}

			got := consume(t, ctx, pr.reader.Bootstrap, c.topic, n)
			for i, g := range got {
				if want := c.value(i); !bytes.Equal(g.Value, want) || len(g.Headers) != 0 {
					t.Fatalf("record %d through the decrypting Strait:\n got %x %v\nwant %x", i, g.Value, g.Headers, want)
				}
			}
		})
	}
}

// checkStoredAvro decodes the stored value with the writer schema: the
// wire header is intact, sealed fields hold ciphertext, every other field
// equals the original.
func checkStoredAvro(t *testing.T, schema avro.Schema, orig, stored []byte, i int) {
	t.Helper()
	if !bytes.Equal(stored[:5], orig[:5]) {
		t.Fatalf("record %d: wire header %x, want %x", i, stored[:5], orig[:5])
	}
	var want, got map[string]any
	straittest.Must(t, avro.Unmarshal(schema, orig[5:], &want), "decode original")
	straittest.Must(t, avro.Unmarshal(schema, stored[5:], &got), "stored value %d does not decode with its writer schema", i)

	if s, _ := got["ssn_id"].(string); !isSealedString(s) {
		t.Fatalf("record %d: ssn_id %q is not sealed", i, got["ssn_id"])
	}
	acc := unwrapUnion(got["account"])
	if i%3 == 0 {
		if acc != nil {
			t.Fatalf("record %d: null account became %v", i, acc)
		}
	} else if s, _ := acc.(string); !isSealedString(s) {
		t.Fatalf("record %d: account %v is not sealed", i, got["account"])
	}
	if b, _ := got["card"].([]byte); !isSealedBytes(b) {
		t.Fatalf("record %d: card %q is not an envelope", i, got["card"])
	}
	tags, _ := got["tags"].([]any)
	if len(tags) != 2 {
		t.Fatalf("record %d: tags %v", i, got["tags"])
	}
	for _, tg := range tags {
		if s, _ := tg.(string); !isSealedString(s) {
			t.Fatalf("record %d: tag %v is not sealed", i, tg)
		}
	}
	ga, wa := got["address"].(map[string]any), want["address"].(map[string]any)
	if s, _ := ga["zip"].(string); !isSealedString(s) {
		t.Fatalf("record %d: address.zip %v is not sealed", i, ga["zip"])
	}
	delete(ga, "zip")
	delete(wa, "zip")
	for _, k := range sealedNames {
		delete(got, k)
		delete(want, k)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("record %d: clear fields changed:\n got %v\nwant %v", i, got, want)
	}
	if len(got) != 4 { // name, age, balance, address{street}
		t.Fatalf("record %d: unexpected field set %v", i, got)
	}
}

func unwrapUnion(v any) any {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for _, inner := range m {
			return inner
		}
	}
	return v
}

// checkStoredProto parses the stored value with the writer schema: header and
// message indexes intact, sealed fields hold ciphertext, the rest is equal.
func checkStoredProto(t *testing.T, md protoreflect.MessageDescriptor, orig, stored []byte, i int) {
	t.Helper()
	id, idx, payload, err := fields.ParseWire(stored, true)
	straittest.Must(t, err, "stored wire header")
	oid, _, opayload, _ := fields.ParseWire(orig, true)
	if id != oid || !reflect.DeepEqual(idx, protoIndexes) {
		t.Fatalf("record %d: schema id %d indexes %v, want %d %v", i, id, idx, oid, protoIndexes)
	}
	got, want := dynamicpb.NewMessage(md), dynamicpb.NewMessage(md)
	straittest.Must(t, proto.Unmarshal(payload, got), "stored value %d does not parse with its writer schema", i)
	straittest.Must(t, proto.Unmarshal(opayload, want), "parse original")
	if len(got.GetUnknown()) != 0 {
		t.Fatalf("record %d: stored value has unknown fields", i)
	}
	f := md.Fields()
	if s := got.Get(f.ByName("ssn_id")).String(); !isSealedString(s) {
		t.Fatalf("record %d: ssn_id %q is not sealed", i, s)
	}
	if has := got.Has(f.ByName("account")); has != (i%3 != 0) {
		t.Fatalf("record %d: account presence %v", i, has)
	} else if has && !isSealedString(got.Get(f.ByName("account")).String()) {
		t.Fatalf("record %d: account is not sealed", i)
	}
	if b := got.Get(f.ByName("card")).Bytes(); !isSealedBytes(b) {
		t.Fatalf("record %d: card %q is not an envelope", i, b)
	}
	tags := got.Get(f.ByName("tags")).List()
	if tags.Len() != 2 {
		t.Fatalf("record %d: %d tags", i, tags.Len())
	}
	for j := range tags.Len() {
		if !isSealedString(tags.Get(j).String()) {
			t.Fatalf("record %d: tag %d not sealed", i, j)
		}
	}
	addr := got.Get(f.ByName("address")).Message()
	zipF := addr.Descriptor().Fields().ByName("zip")
	if !isSealedString(addr.Get(zipF).String()) {
		t.Fatalf("record %d: address.zip not sealed", i)
	}
	for _, m := range []*dynamicpb.Message{got, want} {
		for _, name := range []protoreflect.Name{"ssn_id", "account", "card", "tags"} {
			m.Clear(f.ByName(name))
		}
		m.Mutable(f.ByName("address")).Message().Clear(zipF)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("record %d: clear fields changed:\n got %v\nwant %v", i, got, want)
	}
}

// TestFieldRuleTypeRefused: a rule that names a field that is neither string
// nor bytes in a local writer schema is refused when the interceptor is
// built, for Avro and Protobuf, for encrypt and decrypt alike.
func TestFieldRuleTypeRefused(t *testing.T) {
	kr := keyring(t)
	for _, c := range []struct {
		format, file, path string
		typeErr            bool
	}{
		{"avro", "customer.avsc", "$.age", true},
		{"avro", "customer.avsc", "$.balance", true},
		{"avro", "customer.avsc", "$.address", true},
		{"protobuf", "customer.proto", "$.age", true},
		{"protobuf", "customer.proto", "$.balance", true},
		{"protobuf", "customer.proto", "$.address", true},
	} {
		t.Run(c.format+c.path, func(t *testing.T) {
			cfg := yamlConfig(t, fmt.Sprintf(`
interceptors:
  - name: encrypt
    config:
      kms: {local: {keyring: %q}}
      rules:
        - {topics: [t], key_id: customers-kek, format: %s, fields: ["$.ssn_id", %q], schemas: [{id: 1, files: [%q]}]}
`, kr, c.format, c.path, testdata(t, c.file)))
			for name, build := range map[string]func(rules.Config, rules.Env) error{
				"encrypt": func(c rules.Config, e rules.Env) error {
					ic, err := encrypt.New(c, e)
					closeIC(ic)
					return err
				},
				"decrypt": func(c rules.Config, e rules.Env) error {
					ic, err := decrypt.New(c, e)
					closeIC(ic)
					return err
				},
			} {
				err := build(cfg, rules.Env{})
				var fe *fields.FieldTypeError
				if !errors.As(err, &fe) {
					t.Fatalf("%s with a %s rule on %s: err %v, want a FieldTypeError", name, c.format, c.path, err)
				}
				if fe.Path != c.path {
					t.Fatalf("%s: error names %q, want %q (%v)", name, fe.Path, c.path, err)
				}
				t.Logf("%s refused: %v", name, err)
			}
		})
	}
	// The same rules with string/bytes fields are accepted.
	for _, c := range []struct{ format, file string }{{"avro", "customer.avsc"}, {"protobuf", "customer.proto"}} {
		cfg := yamlConfig(t, fmt.Sprintf(`
interceptors:
  - name: encrypt
    config:
      kms: {local: {keyring: %q}}
      rules:
        - {topics: [t], key_id: customers-kek, format: %s, fields: %s, schemas: [{id: 1, files: [%q]}]}
`, kr, c.format, yamlList(sealedPaths), testdata(t, c.file)))
		ic, err := encrypt.New(cfg, rules.Env{})
		straittest.Must(t, err, "%s rule with string/bytes fields", c.format)
		closeIC(ic)
	}
}

func closeIC(ic *interceptor.Interceptor) {
	if ic != nil && ic.Close != nil {
		_ = ic.Close()
	}
}
