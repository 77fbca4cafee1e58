package fields

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"
)

type tAddress struct {
	Street string `avro:"street"`
	Zip    string `avro:"zip"`
}

type tCard struct {
	Number string  `avro:"number"`
	Cvv    *[]byte `avro:"cvv"`
}

type tCustomer struct {
	Name    string            `avro:"name"`
	SSN     string            `avro:"ssn"`
	Account *string           `avro:"account"`
	Blob    []byte            `avro:"blob"`
	Age     int               `avro:"age"`
	Balance float64           `avro:"balance"`
	Ratio   float32           `avro:"ratio"`
	VIP     bool              `avro:"vip"`
	Since   int64             `avro:"since"`
	Status  string            `avro:"status"`
	Hash    [4]byte           `avro:"hash"`
	Address tAddress          `avro:"address"`
	Cards   []tCard           `avro:"cards"`
	Notes   map[string]string `avro:"notes"`
	Alt     *tAddress         `avro:"alt"`
	ID      string            `avro:"id"`
	Next    *tCustomer        `avro:"next"`
	Tail    string            `avro:"tail"`
}

var avroFiles = []string{"testdata/address.avsc", "testdata/customer.avsc"}

func customerSchema(t testing.TB) avro.Schema {
	t.Helper()
	s, err := avro.ParseFiles(avroFiles...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sampleCustomer() tCustomer {
	acct := "678900000234"
	cvv := []byte{1, 2, 3}
	return tCustomer{
		Name: "Joe Example", SSN: "123-45-6789", Account: &acct, Blob: []byte{0, 1, 2, 0xff},
		Age: 42, Balance: 12.5, Ratio: 0.25, VIP: true, Since: -1234567890123, Status: "CLOSED",
		Hash: [4]byte{9, 8, 7, 6}, Address: tAddress{"123 Main St", "12345"},
		Cards: []tCard{{"4111111111111111", &cvv}, {"5500000000000004", nil}, {"ünïcode 😀", nil}},
		Notes: map[string]string{"a": "note a", "b": "note b"},
		Alt:   &tAddress{"1 Alt Rd", "99999"}, ID: "2b1b7f8e-8f2c-4e0c-9d6e-0d8b1f0c2a11",
		Next: &tCustomer{Name: "Kid", SSN: "987-65-4321", Cards: []tCard{}, Notes: map[string]string{}, Status: "ACTIVE",
			ID: "00000000-0000-0000-0000-000000000000", Tail: "kid tail"},
		Tail: "the end",
	}
}

func avroEncode(t testing.TB, api avro.API, s avro.Schema, id int32, v any) []byte {
	t.Helper()
	b, err := api.Marshal(s, v)
	if err != nil {
		t.Fatal(err)
	}
	return append(AppendWire(nil, id, nil), b...)
}

func TestAvroRoundTrip(t *testing.T) {
	s := customerSchema(t)
	seal, open := gcmFuncs(t)
	paths := []string{"$.ssn", "$.account", "$.blob", "$.address.zip", "$.cards[*].number", "$.cards[*].cvv",
		"$.notes[*]", "$.alt.street", "$.next.ssn"}
	w, err := NewAvro(AvroConfig{Paths: paths, Local: []LocalAvro{{ID: 7, Files: avroFiles}}})
	if err != nil {
		t.Fatal(err)
	}
	apis := map[string]avro.API{
		"sized blocks (hamba default)": avro.DefaultConfig,
		"counted blocks of 2":          avro.Config{DisableBlockSizeHeader: true, BlockLength: 2}.Freeze(),
		"sized blocks of 1":            avro.Config{BlockLength: 1}.Freeze(),
	}
	for name, api := range apis {
		t.Run(name, func(t *testing.T) {
			c := sampleCustomer()
			value := avroEncode(t, api, s, 7, c)
			var rec recorder
			sealed, err := w.Seal(nil, value, rec.wrap(seal))
			if err != nil {
				t.Fatal(err)
			}
			wantPaths := "[$.ssn $.account $.blob $.address.zip $.cards[0].number $.cards[0].cvv $.cards[1].number $.cards[2].number $.notes[0] $.notes[1] $.alt.street $.next.ssn]"
			if fmt.Sprint(rec.paths) != wantPaths {
				t.Errorf("paths %v\nwant  %s", rec.paths, wantPaths)
			}
			if !bytes.Equal(sealed[:5], value[:5]) {
				t.Fatal("header changed")
			}
			// the sealed value is still valid for the writer schema
			var got tCustomer
			if err := api.Unmarshal(s, sealed[5:], &got); err != nil {
				t.Fatalf("sealed value does not decode: %v", err)
			}
			if got.Name != c.Name || got.Age != c.Age || got.Tail != c.Tail || got.Address.Street != c.Address.Street ||
				got.Hash != c.Hash || got.Status != c.Status || got.ID != c.ID || got.Next.Tail != "kid tail" {
				t.Errorf("untouched fields changed: %+v", got)
			}
			for _, sv := range []string{got.SSN, *got.Account, got.Address.Zip, got.Cards[0].Number, got.Notes["a"], got.Alt.Street, got.Next.SSN} {
				if _, err := base64.StdEncoding.DecodeString(sv); err != nil || strings.Contains(sv, "123") && len(sv) < 20 {
					t.Errorf("sealed string %q is not base64 ciphertext", sv)
				}
			}
			if bytes.Equal(got.Blob, c.Blob) || len(got.Blob) != 12+16+len(c.Blob) {
				t.Errorf("bytes field not sealed to raw ciphertext: %x", got.Blob)
			}
			if got.Cards[1].Cvv != nil {
				t.Error("null branch changed")
			}
			for _, secret := range []string{"123-45-6789", "678900000234", "4111111111111111", "note a", "1 Alt Rd", "987-65-4321"} {
				if bytes.Contains(sealed, []byte(secret)) {
					t.Errorf("plaintext %q left in sealed value", secret)
				}
			}
			opened, err := w.Open(nil, sealed, open)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(opened, value) {
				t.Fatalf("round trip not byte-exact:\n got %x\nwant %x", opened, value)
			}
		})
	}
}

func TestAvroNullsAndMissing(t *testing.T) {
	s := customerSchema(t)
	seal, open := gcmFuncs(t)
	w, err := NewAvro(AvroConfig{Paths: []string{"$.account", "$.alt.street", "$.next.next.ssn", "$.nosuch"}, Local: []LocalAvro{{ID: 1, Files: avroFiles}}})
	if err != nil {
		t.Fatal(err)
	}
	c := sampleCustomer()
	c.Account, c.Alt, c.Next = nil, nil, nil
	value := avroEncode(t, avro.DefaultConfig, s, 1, c)
	var rec recorder
	sealed, err := w.Seal(nil, value, rec.wrap(seal))
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.paths) != 0 || !bytes.Equal(sealed, value) {
		t.Fatalf("nulls sealed: %v", rec.paths)
	}
	if opened, err := w.Open(nil, sealed, open); err != nil || !bytes.Equal(opened, value) {
		t.Fatal(err)
	}
}

func TestCheckAvro(t *testing.T) {
	s := customerSchema(t)
	if err := CheckAvro(s, []string{"$.ssn", "$.account", "$.blob", "$.cards[*].cvv", "$.notes[*]", "$.next.alt.zip", "$.next.cards[0].number"}); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"$.age":     "int",
		"$.balance": "double",
		"$.vip":     "boolean",
		"$.status":  "strait.test.Status",
		"$.hash":    "strait.test.Hash",
		"$.address": "strait.test.Address",
		"$.cards":   "array<strait.test.Card>",
		"$.notes":   "map<string>",
		"$.alt":     "[null,strait.test.Address]",
		"$.id":      "string (logicalType uuid)",
	}
	for p, typ := range bad {
		err := CheckAvro(s, []string{"$.ssn", p})
		var fe *FieldTypeError
		if !errors.As(err, &fe) || fe.Path != p || fe.Type != typ {
			t.Errorf("%s: err %v, want FieldTypeError with type %s", p, err, typ)
		}
	}
	for _, p := range []string{"$.nosuch", "$.ssn.x", "$.address.nosuch", "$.cards.number"} {
		if err := CheckAvro(s, []string{p}); !errors.Is(err, ErrPathNotFound) {
			t.Errorf("%s: err %v, want ErrPathNotFound", p, err)
		}
	}
	// the walker refuses a local schema with a wrongly typed path up front
	if _, err := NewAvro(AvroConfig{Paths: []string{"$.age"}, Local: []LocalAvro{{ID: 1, Files: avroFiles}}}); err == nil {
		t.Error("NewAvro accepted an int path")
	}
}

func TestAvroErrors(t *testing.T) {
	s := customerSchema(t)
	seal, open := gcmFuncs(t)
	w, _ := NewAvro(AvroConfig{Paths: []string{"$.ssn", "$.blob"}, Local: []LocalAvro{{ID: 1, Files: avroFiles}}})
	value := avroEncode(t, avro.DefaultConfig, s, 1, sampleCustomer())
	// unknown schema id
	other := append([]byte{0, 0, 0, 0, 2}, value[5:]...)
	if _, err := w.Seal(nil, other, seal); !errors.Is(err, ErrSchema) {
		t.Errorf("unknown id: %v", err)
	}
	// bad magic, short
	if _, err := w.Seal(nil, append([]byte{1}, value[1:]...), seal); !errors.Is(err, ErrMalformed) {
		t.Errorf("magic: %v", err)
	}
	// every truncation is an error, never a panic
	for n := 5; n < len(value); n++ {
		if _, err := w.Seal(nil, value[:n], seal); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated at %d: %v", n, err)
		}
	}
	// trailing data
	if _, err := w.Seal(nil, append(append([]byte(nil), value...), 0), seal); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing: %v", err)
	}
	// opening a value that was never sealed
	if _, err := w.Open(nil, value, open); err == nil {
		t.Error("open of plaintext succeeded")
	}
}

func TestAvroTamperMove(t *testing.T) {
	s := customerSchema(t)
	seal, open := gcmFuncs(t)
	w, _ := NewAvro(AvroConfig{Paths: []string{"$.ssn", "$.name"}, Local: []LocalAvro{{ID: 1, Files: avroFiles}}})
	sealed, err := w.Seal(nil, avroEncode(t, avro.DefaultConfig, s, 1, sampleCustomer()), seal)
	if err != nil {
		t.Fatal(err)
	}
	var c tCustomer
	if err := avro.Unmarshal(s, sealed[5:], &c); err != nil {
		t.Fatal(err)
	}
	c.Name, c.SSN = c.SSN, c.Name
	moved := avroEncode(t, avro.DefaultConfig, s, 1, c)
	if _, err := w.Open(nil, moved, open); err == nil {
		t.Fatal("swapped ciphertexts opened")
	}
}

func TestAvroGenericEqual(t *testing.T) {
	// decoding the opened value generically equals decoding the original
	s := customerSchema(t)
	seal, open := gcmFuncs(t)
	w, _ := NewAvro(AvroConfig{Paths: []string{"$.cards[*].cvv"}, Local: []LocalAvro{{ID: 3, Files: avroFiles}}})
	v := avroEncode(t, avro.DefaultConfig, s, 3, sampleCustomer())
	sealed, _ := w.Seal(nil, v, seal)
	opened, err := w.Open(nil, sealed, open)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	avro.Unmarshal(s, v[5:], &a)
	avro.Unmarshal(s, opened[5:], &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("differs")
	}
}
