package fields

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	good := map[string]string{
		"$.a":                "$.a",
		"$.a.b":              "$.a.b",
		"$.list[*].c":        "$.list[*].c",
		"$.list[3]":          "$.list[3]",
		`$.a["odd key"]`:     `$.a["odd key"]`,
		`$["a"]`:             "$.a",
		`$["x\"y"]`:          `$["x\"y"]`,
		`$["é\u00e9"]`:       "$.éé",
		"$[*][*].x":          "$[*][*].x",
		"$.snake_case-dash1": "$.snake_case-dash1",
	}
	for in, want := range good {
		p, err := ParsePath(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if p.String() != want {
			t.Errorf("%s: canonical %s, want %s", in, p.String(), want)
		}
	}
	for _, bad := range []string{"", "a.b", "$", "$.", "$..a", "$[", "$[x]", "$[*", `$["a]`, "$.a b", "$[-1]", `$["a"`} {
		if _, err := ParsePath(bad); !errors.Is(err, ErrPath) {
			t.Errorf("%q: err %v, want ErrPath", bad, err)
		}
	}
	for _, set := range [][]string{{"$.a", "$.a.b"}, {"$.a.b", "$.a"}, {"$.a", "$.a"}, {"$.l[*]", "$.l[0]"}, {}} {
		if _, err := NewJSON(set); !errors.Is(err, ErrPath) {
			t.Errorf("%v: err %v, want ErrPath", set, err)
		}
	}
}

type jsonCase struct {
	name  string
	paths []string
	doc   string
	// sealed lists the concrete paths expected to be sealed, in order
	sealed []string
}

var jsonCases = []jsonCase{
	{"string", []string{"$.ssn"}, `{"name":"Joe","ssn":"123-45-6789"}`, []string{"$.ssn"}},
	{"number", []string{"$.n"}, `{"n":-12.5e+3,"x":1}`, []string{"$.n"}},
	{"int zero", []string{"$.n"}, `{"n":0}`, []string{"$.n"}},
	{"bool", []string{"$.b"}, `{"b":true}`, []string{"$.b"}},
	{"false", []string{"$.b"}, `{"b":false}`, []string{"$.b"}},
	{"null", []string{"$.v"}, `{"v":null,"w":2}`, []string{"$.v"}},
	{"object", []string{"$.addr"}, `{"addr":{"street":"1 Main St","zip":[1,2]},"k":1}`, []string{"$.addr"}},
	{"array", []string{"$.tags"}, `{"tags":["a","b",{"c":null}]}`, []string{"$.tags"}},
	{"empty object/array", []string{"$.o", "$.a"}, `{"o":{},"a":[]}`, []string{"$.o", "$.a"}},
	{"nested", []string{"$.a.b.c"}, `{"a":{"x":1,"b":{"c":"deep","d":2}}}`, []string{"$.a.b.c"}},
	{"wildcard", []string{"$.list[*].c"}, `{"list":[{"c":1},{"d":2},{"c":"three"},5]}`, []string{"$.list[0].c", "$.list[2].c"}},
	{"index", []string{"$.list[1]"}, `{"list":["a","b","c"]}`, []string{"$.list[1]"}},
	{"nested wildcards", []string{"$[*].x[*]"}, `[{"x":[1,2]},{"x":"s"},{"x":[3]}]`, []string{"$[0].x[0]", "$[0].x[1]", "$[2].x[0]"}},
	{"odd key", []string{`$.a["odd key"]`}, `{"a":{"odd key":"v","odd":1}}`, []string{`$.a["odd key"]`}},
	{"escaped key in doc", []string{"$.ssn"}, `{"s\u0073n":"x","ssn2":"y"}`, []string{"$.ssn"}},
	{"missing", []string{"$.nope", "$.a.b"}, `{"a":1,"c":{"b":2}}`, nil},
	{"missing all", []string{"$.x"}, `[]`, nil},
	{"scalar doc", []string{"$.x"}, `42`, nil},
	{"whitespace kept", []string{"$.a", "$.c"}, " {\n\t\"a\" : [ 1 , 2 ] ,\r\n \"b\":\"x\" , \"c\" :\"y\" }\n", []string{"$.a", "$.c"}},
	{"unicode", []string{"$.name"}, `{"name":"Jöe \u00e9 \ud83d\ude00 😀 \" \\ \/ \n","other":"ü"}`, []string{"$.name"}},
	{"duplicate keys", []string{"$.k"}, `{"k":1,"k":2}`, []string{"$.k", "$.k"}},
	{"two fields", []string{"$.ssn_id", "$.account"}, `{"name":"Joe Example","address":"123 Main St","ssn_id":"123-45-6789","account":"678900000234"}`, []string{"$.ssn_id", "$.account"}},
}

func TestJSONRoundTrip(t *testing.T) {
	seal, open := gcmFuncs(t)
	for _, c := range jsonCases {
		t.Run(c.name, func(t *testing.T) {
			w, err := NewJSON(c.paths)
			if err != nil {
				t.Fatal(err)
			}
			var rec recorder
			sealed, err := w.Seal([]byte("prefix:"), []byte(c.doc), rec.wrap(seal))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(sealed, []byte("prefix:")) {
				t.Fatal("dst not kept")
			}
			sealed = sealed[len("prefix:"):]
			if fmt.Sprint(rec.paths) != fmt.Sprint(c.sealed) {
				t.Fatalf("sealed paths %q, want %q", rec.paths, c.sealed)
			}
			if !json.Valid(sealed) {
				t.Fatalf("sealed doc is not valid JSON: %s", sealed)
			}
			if len(c.sealed) == 0 && string(sealed) != c.doc {
				t.Fatalf("nothing to seal but doc changed: %s", sealed)
			}
			opened, err := w.Open(nil, sealed, open)
			if err != nil {
				t.Fatalf("open: %v\nsealed: %s", err, sealed)
			}
			if string(opened) != c.doc {
				t.Fatalf("round trip:\n got %q\nwant %q", opened, c.doc)
			}
		})
	}
}

func TestJSONSealedShape(t *testing.T) {
	w, _ := NewJSON([]string{"$.a", "$.c"})
	doc := `{ "a" : {"x":1} , "b" : [1, 2] , "c":null }`
	out, err := w.Seal(nil, []byte(doc), func(path string, pt []byte) ([]byte, error) {
		return []byte(path + "|" + string(pt)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	want := `{ "a" : "` + enc(`$.a|{"x":1}`) + `" , "b" : [1, 2] , "c":"` + enc("$.c|null") + `" }`
	if string(out) != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
}

func TestJSONInvalid(t *testing.T) {
	w, _ := NewJSON([]string{"$.a"})
	seal, _ := gcmFuncs(t)
	for _, doc := range []string{``, ` `, `{`, `{"a":}`, `{"a":1,}`, `{"a" 1}`, `[1,]`, `{"a":tru}`, `{"a":01}`, `{"a":1.}`,
		`{"a":-}`, `{"a":1e}`, `"abc`, `"a\x"`, "\"a\x01\"", `{"a":"\u12"}`, `{"a":1}x`, `{"a":1}{}`, `{a:1}`, `[1 2]`, `nul`,
		strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1)} {
		if _, err := w.Seal(nil, []byte(doc), seal); !errors.Is(err, ErrMalformed) {
			t.Errorf("%.40q: err %v, want ErrMalformed", doc, err)
		}
	}
	// deep but within the limit is fine
	deep := strings.Repeat("[", 500) + strings.Repeat("]", 500)
	if _, err := w.Seal(nil, []byte(deep), seal); err != nil {
		t.Error(err)
	}
}

func TestJSONOpenNotSealed(t *testing.T) {
	w, _ := NewJSON([]string{"$.a"})
	_, open := gcmFuncs(t)
	for _, doc := range []string{`{"a":1}`, `{"a":null}`, `{"a":{}}`, `{"a":"not base64!"}`, `{"a":""}`} {
		if _, err := w.Open(nil, []byte(doc), open); !errors.Is(err, ErrNotSealed) {
			t.Errorf("%s: err %v, want ErrNotSealed", doc, err)
		}
	}
	// valid base64 but not a ciphertext: the OpenFunc error comes back
	if _, err := w.Open(nil, []byte(`{"a":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`), open); err == nil || errors.Is(err, ErrNotSealed) {
		t.Errorf("err %v, want the OpenFunc error", err)
	}
	// escaped base64 (a re-serializer wrote \/ and \u002b) still opens
	seal, _ := gcmFuncs(t)
	sealed, _ := w.Seal(nil, []byte(`{"a":[1,2,3]}`), seal)
	esc := strings.ReplaceAll(strings.ReplaceAll(string(sealed), "/", `\/`), "+", `\u002b`)
	got, err := w.Open(nil, []byte(esc), open)
	if err != nil || string(got) != `{"a":[1,2,3]}` {
		t.Fatalf("escaped: %s %v", got, err)
	}
	// a plaintext that is not one JSON value is refused
	bad := func(string, []byte) ([]byte, error) { return []byte("1 2"), nil }
	if _, err := w.Open(nil, []byte(`{"a":"AAAA"}`), bad); !errors.Is(err, ErrNotSealed) {
		t.Errorf("err %v, want ErrNotSealed", err)
	}
}

func TestJSONCallbackError(t *testing.T) {
	w, _ := NewJSON([]string{"$.a"})
	boom := errors.New("kms down")
	_, err := w.Seal(nil, []byte(`{"a":1}`), func(string, []byte) ([]byte, error) { return nil, boom })
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "$.a") {
		t.Fatalf("err %v", err)
	}
}

// Moving a ciphertext to another field (or another array element) fails,
// because the concrete path is bound as AEAD additional data.
func TestJSONTamperMove(t *testing.T) {
	seal, open := gcmFuncs(t)
	w, _ := NewJSON([]string{"$.ssn", "$.account", "$.kids[*].ssn"})
	doc := `{"ssn":"111","account":"222","kids":[{"ssn":"333"},{"ssn":"444"}]}`
	sealed, err := w.Seal(nil, []byte(doc), seal)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(sealed, &m); err != nil {
		t.Fatal(err)
	}
	kids := m["kids"].([]any)
	swaps := []func(){
		func() { m["ssn"], m["account"] = m["account"], m["ssn"] },
		func() {
			a, b := kids[0].(map[string]any), kids[1].(map[string]any)
			a["ssn"], b["ssn"] = b["ssn"], a["ssn"]
		},
		func() { m["ssn"] = kids[0].(map[string]any)["ssn"] },
	}
	for i, swap := range swaps {
		json.Unmarshal(sealed, &m)
		kids = m["kids"].([]any)
		swap()
		moved, _ := json.Marshal(m)
		if _, err := w.Open(nil, moved, open); err == nil {
			t.Errorf("swap %d: open succeeded", i)
		}
	}
	// flipping one byte of a ciphertext fails too
	i := bytes.Index(sealed, []byte(`"ssn":"`)) + 10
	flipped := append([]byte(nil), sealed...)
	flipped[i] ^= 1
	if flipped[i] == '"' || flipped[i] == '\\' {
		flipped[i] ^= 3
	}
	if _, err := w.Open(nil, flipped, open); err == nil {
		t.Error("flipped: open succeeded")
	}
	// untouched it opens
	if got, err := w.Open(nil, sealed, open); err != nil || string(got) != doc {
		t.Fatalf("%s %v", got, err)
	}
}

func TestJSONBigDoc(t *testing.T) {
	seal, open := gcmFuncs(t)
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := 0; i < 5000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"secret":"s-%d","pad":%q}`, i, i, strings.Repeat("x", i%50))
	}
	b.WriteString(`],"tail":true}`)
	doc := b.String()
	w, _ := NewJSON([]string{"$.items[*].secret"})
	sealed, err := w.Seal(nil, []byte(doc), seal)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(`"s-4999"`)) {
		t.Fatal("plaintext left")
	}
	got, err := w.Open(nil, sealed, open)
	if err != nil || string(got) != doc {
		t.Fatalf("round trip failed: %v", err)
	}
}

func TestJSONConcurrent(t *testing.T) {
	seal, open := gcmFuncs(t)
	w, _ := NewJSON([]string{"$.a[*].b"})
	doc := []byte(`{"a":[{"b":1},{"b":"x"}]}`)
	done := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 200; i++ {
				s, err := w.Seal(nil, doc, seal)
				if err == nil {
					s, err = w.Open(nil, s, open)
				}
				if err == nil && !bytes.Equal(s, doc) {
					err = errors.New("mismatch")
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
