package fields

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

const customerJSON = `{
 "name":"Joe Example","ssn":"123-45-6789","account":"678900000234","blob":"AAEC/w==","age":42,"balance":12.5,"vip":true,
 "address":{"street":"123 Main St","zip":"12345"},
 "cards":[{"number":"4111111111111111","cvv":"AQID"},{"number":"5500000000000004"},{"number":"ünïcode 😀"}],
 "notes":{"a":"note a","b":"note b"},
 "tags":["t1","t2"],
 "email":"joe@example.com",
 "created":"2026-11-28T17:00:00Z","status":"CLOSED",
 "by_id":{"7":{"number":"7777","cvv":"Bw=="}},
 "next":{"name":"Kid","ssn":"987-65-4321"}
}`

func customerFD(t testing.TB) protoreflect.FileDescriptor {
	t.Helper()
	fd, err := LoadProtobufFile(LocalProtobuf{File: "testdata/customer.proto"})
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func protoPayload(t testing.TB, md protoreflect.MessageDescriptor, js string) []byte {
	t.Helper()
	m := dynamicpb.NewMessage(md)
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		t.Fatal(err)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func protoDecode(t testing.TB, md protoreflect.MessageDescriptor, b []byte) *dynamicpb.Message {
	t.Helper()
	m := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("does not decode: %v", err)
	}
	return m
}

// TestWriteDescriptorSet regenerates testdata/customer.pb when
// STRAIT_UPDATE_TESTDATA=1.
func TestWriteDescriptorSet(t *testing.T) {
	if os.Getenv("STRAIT_UPDATE_TESTDATA") == "" {
		t.Skip("set STRAIT_UPDATE_TESTDATA=1 to regenerate")
	}
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{"testdata"}})}
	fs, err := c.Compile(context.Background(), "customer.proto")
	if err != nil {
		t.Fatal(err)
	}
	fd := fs[0]
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		for i := 0; i < f.Imports().Len(); i++ {
			add(f.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	add(fd)
	b, _ := proto.Marshal(set)
	if err := os.WriteFile("testdata/customer.pb", b, 0o644); err != nil {
		t.Fatal(err)
	}
}

var protoPaths = []string{"$.ssn", "$.account", "$.blob", "$.address.zip", "$.cards[*].number", "$.cards[*].cvv",
	"$.notes[*]", "$.tags[1]", "$.email", "$.by_id[*].number", "$.next.ssn"}

func TestProtobufRoundTrip(t *testing.T) {
	seal, open := gcmFuncs(t)
	fd := customerFD(t)
	md, _ := MessageByIndexes(fd, []int{0})
	payload := protoPayload(t, md, customerJSON)
	for _, src := range []LocalProtobuf{{ID: 5, File: "testdata/customer.proto"}, {ID: 5, File: "testdata/customer.pb"},
		{ID: 5, File: "customer.proto", ImportPaths: []string{"testdata"}}} {
		t.Run(src.File, func(t *testing.T) {
			w, err := NewProtobuf(ProtobufConfig{Paths: protoPaths, Local: []LocalProtobuf{src}})
			if err != nil {
				t.Fatal(err)
			}
			for _, hdr := range [][]byte{AppendWire(nil, 5, []int{0}), {0, 0, 0, 0, 5, 2, 0}} { // shortcut and explicit [0]
				value := append(append([]byte(nil), hdr...), payload...)
				var rec recorder
				sealed, err := w.Seal(nil, value, rec.wrap(seal))
				if err != nil {
					t.Fatal(err)
				}
				want := "[$.ssn $.account $.blob $.address.zip $.cards[0].number $.cards[0].cvv $.cards[1].number $.cards[2].number $.notes[0] $.notes[1] $.tags[1] $.by_id[0].number $.next.ssn $.email]" // Go puts oneofs last
				if fmt.Sprint(rec.paths) != want {
					t.Errorf("paths %v\nwant  %s", rec.paths, want)
				}
				if !bytes.HasPrefix(sealed, hdr) {
					t.Fatal("header changed")
				}
				m := protoDecode(t, md, sealed[len(hdr):])
				js, _ := protojson.Marshal(m)
				for _, secret := range []string{"123-45-6789", "678900000234", "12345", "4111111111111111", "note a", "joe@example", "987-65-4321", "7777", `"t2"`} {
					if bytes.Contains(sealed, []byte(strings.Trim(secret, `"`))) && secret != `"t2"` || strings.Contains(string(js), secret) {
						t.Errorf("plaintext %q left", secret)
					}
				}
				for _, keep := range []string{"Joe Example", "123 Main St", `"t1"`, "CLOSED", "Kid"} {
					if !strings.Contains(string(js), keep) {
						t.Errorf("untouched %q lost: %s", keep, js)
					}
				}
				ssn := m.Get(md.Fields().ByName("ssn")).String()
				if _, err := base64.StdEncoding.DecodeString(ssn); err != nil {
					t.Errorf("ssn %q not base64", ssn)
				}
				opened, err := w.Open(nil, sealed, open)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(opened, value) {
					t.Fatalf("not byte-exact:\n got %x\nwant %x", opened, value)
				}
			}
		})
	}
}

// Unknown fields and non-canonical field order survive byte for byte.
func TestProtobufUnknownAndOrder(t *testing.T) {
	seal, open := gcmFuncs(t)
	w, err := NewProtobuf(ProtobufConfig{Paths: []string{"$.ssn", "$.address.zip"}, Local: []LocalProtobuf{{ID: 1, File: "testdata/customer.proto"}}})
	if err != nil {
		t.Fatal(err)
	}
	var p []byte
	p = protowire.AppendTag(p, 99, protowire.BytesType) // unknown
	p = protowire.AppendString(p, "unknown stays")
	// address with its fields in reverse order and an unknown varint inside
	var addr []byte
	addr = protowire.AppendTag(addr, 2, protowire.BytesType)
	addr = protowire.AppendString(addr, "12345")
	addr = protowire.AppendTag(addr, 50, protowire.VarintType)
	addr = protowire.AppendVarint(addr, 300)
	addr = protowire.AppendTag(addr, 1, protowire.BytesType)
	addr = protowire.AppendString(addr, "street")
	p = protowire.AppendTag(p, 8, protowire.BytesType)
	p = protowire.AppendBytes(p, addr)
	p = protowire.AppendTag(p, 2, protowire.BytesType)
	p = protowire.AppendString(p, "ssn-1")
	p = protowire.AppendTag(p, 5, protowire.VarintType)
	p = protowire.AppendVarint(p, 42)
	p = protowire.AppendTag(p, 2, protowire.BytesType) // the same singular field again (last one wins)
	p = protowire.AppendString(p, "ssn-2")
	p = protowire.AppendTag(p, 98, protowire.Fixed32Type)
	p = protowire.AppendFixed32(p, 7)
	p = protowire.AppendTag(p, 97, protowire.StartGroupType)
	p = protowire.AppendTag(p, 1, protowire.VarintType)
	p = protowire.AppendVarint(p, 1)
	p = protowire.AppendTag(p, 97, protowire.EndGroupType)
	value := append(AppendWire(nil, 1, []int{0}), p...)
	var rec recorder
	sealed, err := w.Seal(nil, value, rec.wrap(seal))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rec.paths) != "[$.address.zip $.ssn $.ssn]" {
		t.Errorf("paths %v", rec.paths)
	}
	if !bytes.Contains(sealed, []byte("unknown stays")) || !bytes.Contains(sealed, []byte("street")) {
		t.Error("untouched bytes lost")
	}
	opened, err := w.Open(nil, sealed, open)
	if err != nil || !bytes.Equal(opened, value) {
		t.Fatalf("not byte-exact: %v", err)
	}
}

func TestProtobufMessageIndexes(t *testing.T) {
	seal, open := gcmFuncs(t)
	w, err := NewProtobuf(ProtobufConfig{Paths: []string{"$.x", "$.number", "$.card.number"}, Local: []LocalProtobuf{{ID: 1, File: "testdata/customer.pb"}}})
	if err != nil {
		t.Fatal(err)
	}
	fd := customerFD(t)
	// synthesized map-entry messages are not counted (Confluent counts the
	// message elements of the schema text): Card is nested message 0
	cardIdx := 0
	if fd.Messages().Get(0).Messages().ByName("Card").Index() == 0 {
		t.Log("note: Card is also descriptor index 0")
	}
	cases := []struct {
		idx  []int
		js   string
		want string
	}{
		{[]int{1}, `{"x":"secret x","card":{"number":"n1"}}`, "[$.x $.card.number]"},
		{[]int{0, cardIdx}, `{"number":"card secret","cvv":"AQ=="}`, "[$.number]"},
	}
	for _, c := range cases {
		md, err := MessageByIndexes(fd, c.idx)
		if err != nil {
			t.Fatal(err)
		}
		value := append(AppendWire(nil, 1, c.idx), protoPayload(t, md, c.js)...)
		var rec recorder
		sealed, err := w.Seal(nil, value, rec.wrap(seal))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(rec.paths) != c.want {
			t.Errorf("%v: paths %v want %s", c.idx, rec.paths, c.want)
		}
		opened, err := w.Open(nil, sealed, open)
		if err != nil || !bytes.Equal(opened, value) {
			t.Fatalf("%v: %v", c.idx, err)
		}
	}
	// out-of-range index
	if _, err := w.Seal(nil, append(AppendWire(nil, 1, []int{5}), 0x0a, 0), seal); !errors.Is(err, ErrSchema) {
		t.Errorf("bad index: %v", err)
	}
}

func TestCheckProtobuf(t *testing.T) {
	fd := customerFD(t)
	md, _ := MessageByIndexes(fd, []int{0})
	if err := CheckProtobuf(md, protoPaths); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"$.age":             "int32",
		"$.balance":         "double",
		"$.vip":             "bool",
		"$.status":          "enum",
		"$.phone":           "int64",
		"$.address":         "message",
		"$.created":         "message",
		"$.tags":            "repeated string",
		"$.notes":           "map<string, string>",
		"$.cards":           "repeated strait.test.Customer.Card",
		"$.by_id[*]":        "message",
		"$.cards[*]":        "message",
		"$.next.age":        "int32",
		"$.created.seconds": "int64",
	}
	for p, typ := range bad {
		err := CheckProtobuf(md, []string{p})
		var fe *FieldTypeError
		if !errors.As(err, &fe) || fe.Path != p || !strings.HasPrefix(fe.Type, typ) {
			t.Errorf("%s: err %v, want FieldTypeError %s", p, err, typ)
		}
	}
	for _, p := range []string{"$.nosuch", "$.ssn.x", "$.address.nosuch", "$.ssn[*]", "$.age.x"} {
		if err := CheckProtobuf(md, []string{p}); !errors.Is(err, ErrPathNotFound) {
			t.Errorf("%s: err %v, want ErrPathNotFound", p, err)
		}
	}
}

func TestProtobufErrors(t *testing.T) {
	seal, open := gcmFuncs(t)
	w, _ := NewProtobuf(ProtobufConfig{Paths: []string{"$.ssn", "$.address.zip"}, Local: []LocalProtobuf{{ID: 1, File: "testdata/customer.proto"}}})
	md, _ := MessageByIndexes(customerFD(t), []int{0})
	value := append(AppendWire(nil, 1, []int{0}), protoPayload(t, md, customerJSON)...)
	for n := 0; n < len(value); n++ {
		if _, err := w.Seal(nil, value[:n], seal); err == nil && n < 6 {
			t.Fatalf("truncated at %d accepted", n)
		}
	}
	// wrong wire type for a selected field
	bad := append(AppendWire(nil, 1, []int{0}), protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 1)...)
	if _, err := w.Seal(nil, bad, seal); !errors.Is(err, ErrMalformed) {
		t.Errorf("wire type: %v", err)
	}
	if _, err := w.Open(nil, value, open); err == nil {
		t.Error("opened plaintext")
	}
	// swap two sealed strings: fails (path bound)
	sealed, _ := w.Seal(nil, value, seal)
	m := protoDecode(t, md, sealed[6:])
	ssnF, addrF := md.Fields().ByName("ssn"), md.Fields().ByName("address")
	addr := m.Get(addrF).Message()
	zipF := addr.Descriptor().Fields().ByName("zip")
	s1, s2 := m.Get(ssnF), addr.Get(zipF)
	m.Set(ssnF, s2)
	addr.Set(zipF, s1)
	b, _ := proto.Marshal(m)
	if _, err := w.Open(nil, append(AppendWire(nil, 1, []int{0}), b...), open); err == nil {
		t.Error("swapped ciphertexts opened")
	}
}
