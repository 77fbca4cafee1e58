package fields

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hamba/avro/v2"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ (regenerate them with
// STRAIT_UPDATE_TESTDATA=1 go test -run TestWriteFuzzSeeds).

var fuzzJSONPaths = []string{"$.a", "$.b[*].c", `$["k y"]`, "$.d[1]", "$[*].x"}

func jsonSeeds() [][]byte {
	var out [][]byte
	for _, c := range jsonCases {
		out = append(out, []byte(c.doc))
	}
	for _, s := range []string{`{"a":1,"b":[{"c":"x"},{"c":{"z":[1,2]}}],"k y":null,"d":[0,"one",2]}`, `[{"x":true},{"x":"\u00e9"}]`,
		`{"a":"\ud83d\ude00","b":[]}`, `{"a":1e5,"b":[{"c":-0.5E-3}]}`, ` [ ] `, `{"a" : [ [ { } ] ] }`} {
		out = append(out, []byte(s))
	}
	return out
}

func FuzzJSON(f *testing.F) {
	for _, s := range jsonSeeds() {
		f.Add(s)
	}
	w, err := NewJSON(fuzzJSONPaths)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		sealed, err := w.Seal(nil, doc, fakeSeal)
		if valid := json.Valid(doc); valid != (err == nil) {
			t.Fatalf("json.Valid %v, Seal err %v", valid, err)
		}
		w.Open(nil, doc, fakeOpen) // must not panic
		if err != nil {
			return
		}
		if !json.Valid(sealed) {
			t.Fatalf("sealed is not JSON: %q", sealed)
		}
		opened, err := w.Open(nil, sealed, fakeOpen)
		if err != nil {
			t.Fatalf("open: %v\nsealed %q", err, sealed)
		}
		if !bytes.Equal(opened, doc) {
			t.Fatalf("round trip:\n got %q\nwant %q", opened, doc)
		}
	})
}

var fuzzAvroPaths = []string{"$.ssn", "$.account", "$.blob", "$.address.zip", "$.cards[*].number", "$.cards[*].cvv", "$.notes[*]", "$.next.ssn", "$.next.cards[1].number"}

func avroSeeds(tb testing.TB) [][]byte {
	s := customerSchema(tb)
	c := sampleCustomer()
	var out [][]byte
	for _, api := range []avro.API{avro.DefaultConfig, avro.Config{DisableBlockSizeHeader: true, BlockLength: 2}.Freeze()} {
		out = append(out, avroEncode(tb, api, s, 1, c)[5:])
	}
	c2 := sampleCustomer()
	c2.Account, c2.Alt, c2.Next, c2.Cards, c2.Notes = nil, nil, nil, nil, nil
	out = append(out, avroEncode(tb, avro.DefaultConfig, s, 1, c2)[5:])
	return out
}

func FuzzAvro(f *testing.F) {
	for _, s := range avroSeeds(f) {
		f.Add(s)
	}
	w, err := NewAvro(AvroConfig{Paths: fuzzAvroPaths, Local: []LocalAvro{{ID: 1, Files: avroFiles}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		value := append([]byte{0, 0, 0, 0, 1}, payload...)
		w.Open(nil, value, fakeOpen) // must not panic
		sealed, err := w.Seal(nil, value, fakeSeal)
		if err != nil {
			return
		}
		opened, err := w.Open(nil, sealed, fakeOpen)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		checkBinaryRoundTrip(t, w, value, opened)
	})
}

func protoSeeds(tb testing.TB) [][]byte {
	md, _ := MessageByIndexes(customerFD(tb), []int{0})
	return [][]byte{
		append([]byte{0}, protoPayload(tb, md, customerJSON)...),
		append([]byte{0}, protoPayload(tb, md, `{"ssn":"x","next":{"next":{"ssn":"y"}}}`)...),
		append([]byte{2, 2}, protoPayload(tb, md.ParentFile().Messages().Get(1), `{"x":"a","card":{"number":"n"}}`)...),
		{4, 0, 0},
	}
}

func FuzzProtobuf(f *testing.F) {
	for _, s := range protoSeeds(f) {
		f.Add(s)
	}
	w, err := NewProtobuf(ProtobufConfig{Paths: append(append([]string{}, protoPaths...), "$.x", "$.card.number", "$.next.next.ssn"),
		Local: []LocalProtobuf{{ID: 1, File: "testdata/customer.pb"}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, rest []byte) { // message indexes + payload
		value := append([]byte{0, 0, 0, 0, 1}, rest...)
		w.Open(nil, value, fakeOpen)
		sealed, err := w.Seal(nil, value, fakeSeal)
		if err != nil {
			return
		}
		opened, err := w.Open(nil, sealed, fakeOpen)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		checkBinaryRoundTrip(t, w, value, opened)
	})
}

func wireSeeds() [][]byte {
	return [][]byte{AppendWire(nil, 1, nil), AppendWire(nil, 1, []int{0}), AppendWire(nil, 300, []int{2, 1}), {0, 0, 0, 0, 1, 2, 0}, {0, 1, 2, 3, 4, 0x7f}}
}

func FuzzWire(f *testing.F) {
	for _, s := range wireSeeds() {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, value []byte, protobuf bool) {
		id, idx, payload, err := ParseWire(value, protobuf)
		if err != nil {
			return
		}
		if protobuf && len(idx) == 0 {
			t.Fatal("no index")
		}
		if !protobuf && idx != nil {
			t.Fatal("index without protobuf")
		}
		b := append(AppendWire(nil, id, idx), payload...)
		id2, idx2, payload2, err := ParseWire(b, protobuf)
		if err != nil || id2 != id || fmt.Sprint(idx2) != fmt.Sprint(idx) || !bytes.Equal(payload2, payload) {
			t.Fatalf("re-encode: %v", err)
		}
		if len(b) > len(value) {
			t.Fatalf("canonical form longer than input")
		}
	})
}

func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("STRAIT_UPDATE_TESTDATA") == "" {
		t.Skip("set STRAIT_UPDATE_TESTDATA=1 to regenerate")
	}
	write := func(name string, i int, args ...any) {
		dir := filepath.Join("testdata", "fuzz", name)
		os.MkdirAll(dir, 0o755)
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch a := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", a)
			case bool:
				fmt.Fprintf(&b, "bool(%v)\n", a)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range jsonSeeds() {
		write("FuzzJSON", i, s)
	}
	for i, s := range avroSeeds(t) {
		write("FuzzAvro", i, s)
	}
	for i, s := range protoSeeds(t) {
		write("FuzzProtobuf", i, s)
	}
	for i, s := range wireSeeds() {
		write("FuzzWire", i, s, i%2 == 0)
	}
}

// checkBinaryRoundTrip: Open(Seal(v)) must equal v, except that the length
// varints of sealed fields (and the byte size of Avro blocks holding them)
// are re-encoded minimally: a value using over-long varints there comes back
// shorter, and then a second round trip must be exact.
func checkBinaryRoundTrip(t *testing.T, w Walker, value, opened []byte) {
	if bytes.Equal(opened, value) {
		return
	}
	if len(opened) >= len(value) {
		t.Fatalf("round trip:\n got %x\nwant %x", opened, value)
	}
	sealed, err := w.Seal(nil, opened, fakeSeal)
	if err != nil {
		t.Fatalf("re-seal: %v", err)
	}
	again, err := w.Open(nil, sealed, fakeOpen)
	if err != nil || !bytes.Equal(again, opened) {
		t.Fatalf("second round trip:\n got %x\nwant %x (%v)", again, opened, err)
	}
}
