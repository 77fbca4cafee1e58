package fields

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func srClient(t testing.TB, url string, opts ...sr.ClientOpt) *sr.Client {
	t.Helper()
	cl, err := sr.NewClient(append([]sr.ClientOpt{sr.URLs(url)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// Avro schemas with a reference, served by srfake, read through pkg/sr with
// basic auth.
func TestRegistryAvro(t *testing.T) {
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	fake := srfake.New(srfake.WithAuth(auth))
	defer fake.Close()
	ctx := context.Background()
	admin := srClient(t, fake.URL(), sr.BasicAuth("alice", "s3cret"))
	if _, err := admin.CreateSchema(ctx, "address", sr.Schema{Schema: readFile(t, "testdata/address.avsc")}); err != nil {
		t.Fatal(err)
	}
	ss, err := admin.CreateSchema(ctx, "customers-value", sr.Schema{
		Schema:     readFile(t, "testdata/customer.avsc"),
		References: []sr.SchemaReference{{Name: "strait.test.Address", Subject: "address", Version: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := NewRegistry(RegistryConfig{URLs: []string{fake.URL()}, Username: "alice", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewAvro(AvroConfig{Paths: []string{"$.ssn", "$.address.zip"}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	seal, open := gcmFuncs(t)
	value := avroEncode(t, avro.DefaultConfig, customerSchema(t), int32(ss.ID), sampleCustomer())
	sealed, err := w.Seal(nil, value, seal)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("123-45-6789")) {
		t.Fatal("not sealed")
	}
	opened, err := w.Open(nil, sealed, open)
	if err != nil || !bytes.Equal(opened, value) {
		t.Fatalf("round trip: %v", err)
	}
	// validation against the registry's schema
	rs, err := reg.SchemaByID(ss.ID)
	if err != nil {
		t.Fatal(err)
	}
	as, err := ParseAvroRegistrySchema(reg, rs)
	if err != nil {
		t.Fatal(err)
	}
	var fe *FieldTypeError
	if err := CheckAvro(as, []string{"$.age"}); !errors.As(err, &fe) {
		t.Fatalf("CheckAvro: %v", err)
	}

	// wrong password: a schema error, not a panic and not plaintext
	bad, _ := NewRegistry(RegistryConfig{URLs: []string{fake.URL()}, Username: "alice", Password: "nope"})
	wb, _ := NewAvro(AvroConfig{Paths: []string{"$.ssn"}, Registry: bad})
	if _, err := wb.Seal(nil, value, seal); !errors.Is(err, ErrSchema) {
		t.Fatalf("bad auth: %v", err)
	}
	// unknown id
	if _, err := w.Seal(nil, append([]byte{0, 0, 0, 0x7f, 0}, value[5:]...), seal); !errors.Is(err, ErrSchema) {
		t.Fatalf("unknown id: %v", err)
	}
}

// The schema is fetched once per id; failures are retried after RetryAfter.
func TestRegistryCacheCounts(t *testing.T) {
	fake := srfake.New()
	defer fake.Close()
	var calls atomic.Int32
	fake.Intercept(func(http.ResponseWriter, *http.Request) bool { calls.Add(1); return false })
	_, _, err := fake.RegisterSchema("c-value", sr.Schema{Schema: readFile(t, "testdata/customer.avsc"),
		References: []sr.SchemaReference{{Name: "strait.test.Address", Subject: "address", Version: 1}}})
	if err == nil {
		t.Fatal("registered with a dangling reference")
	}
	if _, _, err := fake.RegisterSchema("address", sr.Schema{Schema: readFile(t, "testdata/address.avsc")}); err != nil {
		t.Fatal(err)
	}
	id, _, err := fake.RegisterSchema("c-value", sr.Schema{Schema: readFile(t, "testdata/customer.avsc"),
		References: []sr.SchemaReference{{Name: "strait.test.Address", Subject: "address", Version: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	reg, _ := NewRegistry(RegistryConfig{URLs: []string{fake.URL()}, RetryAfter: 50 * time.Millisecond})
	w, _ := NewAvro(AvroConfig{Paths: []string{"$.ssn"}, Registry: reg})
	seal, _ := gcmFuncs(t)
	value := avroEncode(t, avro.DefaultConfig, customerSchema(t), int32(id), sampleCustomer())
	for i := 0; i < 50; i++ {
		if _, err := w.Seal(nil, value, seal); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 2 { // schema by id + the reference
		t.Fatalf("%d registry calls, want 2", n)
	}
	// a missing id is asked once per RetryAfter, not once per record
	missing := append([]byte{0, 0, 0, 0x7f, 0x7f}, value[5:]...)
	calls.Store(0)
	for i := 0; i < 50; i++ {
		w.Seal(nil, missing, seal)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d registry calls for a missing id, want 1", n)
	}
	time.Sleep(60 * time.Millisecond)
	w.Seal(nil, missing, seal)
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d registry calls after RetryAfter, want 2", n)
	}
}

// Protobuf schema with an import resolved as an SR reference, over TLS.
func TestRegistryProtobufTLS(t *testing.T) {
	fake := srfake.New()
	defer fake.Close()
	srv := httptest.NewTLSServer(fake.Handler())
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	reg, err := NewRegistry(RegistryConfig{URLs: []string{srv.URL}, TLS: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fake.RegisterSchema("address.proto", sr.Schema{Type: sr.TypeProtobuf, Schema: readFile(t, "testdata/address.proto")}); err != nil {
		t.Fatal(err)
	}
	id, _, err := fake.RegisterSchema("customers-value", sr.Schema{Type: sr.TypeProtobuf, Schema: readFile(t, "testdata/customer.proto"),
		References: []sr.SchemaReference{{Name: "address.proto", Subject: "address.proto", Version: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewProtobuf(ProtobufConfig{Paths: protoPaths, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	md, _ := MessageByIndexes(customerFD(t), []int{0})
	value := append(AppendWire(nil, int32(id), []int{0}), protoPayload(t, md, customerJSON)...)
	seal, open := gcmFuncs(t)
	sealed, err := w.Seal(nil, value, seal)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("123-45-6789")) {
		t.Fatal("not sealed")
	}
	opened, err := w.Open(nil, sealed, open)
	if err != nil || !bytes.Equal(opened, value) {
		t.Fatalf("round trip: %v", err)
	}
	// without the CA the registry is unreachable: schema error
	reg2, _ := NewRegistry(RegistryConfig{URLs: []string{srv.URL}, Timeout: 2 * time.Second})
	w2, _ := NewProtobuf(ProtobufConfig{Paths: protoPaths, Registry: reg2})
	if _, err := w2.Seal(nil, value, seal); !errors.Is(err, ErrSchema) {
		t.Fatalf("untrusted TLS: %v", err)
	}
	// an Avro schema id used with the protobuf walker
	aid, _, err := fake.RegisterSchema("x", sr.Schema{Schema: `"string"`})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Seal(nil, append(AppendWire(nil, int32(aid), []int{0}), 0x12, 0), seal); !errors.Is(err, ErrSchema) {
		t.Fatalf("avro id in protobuf walker: %v", err)
	}
}
