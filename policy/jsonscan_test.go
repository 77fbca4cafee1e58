package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/strait-proxy/strait/crypto/fields"
)

// FuzzTopScan: the fast top-level scan and the JSON walker of
// crypto/fields agree: when the scan accepts a value, the walker accepts
// it too and finds the same spans, in the same order.
func FuzzTopScan(f *testing.F) {
	for _, s := range []string{
		usaOrder, brOrder, `{}`, ` { } `, `[]`, `"x"`, `1`, `null`, `{"name":1,"name":2}`,
		`{"name":{"a":[1,2,{"b":"c"}]},"country":"usa"}`, `{"na\u006de":"x","country":"usa"}`,
		`{"country":"usa"`, `{"country":"usa"} x`, `{"country":"u\x01"}`, `{"country":-0.5e+7,"account":[true,false,null]}`,
		`{"country":"\ud83d\ude00","x":"\\"}`, `{"a b":"c","country":01}`, "{\"country\":\"usa\"}\n", `{"country":1.}`,
		// long strings (the IndexByte path), with an escape, a control
		// character, a quote right at the end, multi-byte UTF-8
		`{"note":"` + strings.Repeat("x", 40) + `","country":"usa"}`,
		`{"note":"` + strings.Repeat("x", 40) + `\"q","country":"usa"}`,
		"{\"note\":\"" + strings.Repeat("x", 40) + "\x1f\",\"country\":\"usa\"}",
		`{"country":"` + strings.Repeat("é", 30) + `"}`,
		`{"name":"` + strings.Repeat("y", 50),
	} {
		f.Add([]byte(s))
	}
	paths := []string{"$.country", "$.name", "$.account", `$["a b"]`}
	w, err := fields.NewJSON(paths)
	if err != nil {
		f.Fatal(err)
	}
	keys := topKeys(paths)
	if fmt.Sprint(keys) != "[country name account a b]" {
		f.Fatalf("keys %q", keys)
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		got, err := topScan(nil, keys, value)
		if err != nil {
			return // the walker decides
		}
		var want []loc
		_, werr := w.Seal(nil, value, func(p string, pt []byte) ([]byte, error) {
			off := cap(value) - cap(pt)
			for i, q := range paths {
				if fp, _ := fields.ParsePath(q); fp.String() == p {
					want = append(want, loc{i, off, off + len(pt)})
				}
			}
			return nil, nil
		})
		if werr != nil {
			t.Fatalf("%q: the scan accepts what the walker refuses: %v", value, werr)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%q: scan %v, walker %v", value, got, want)
		}
	})
}

func TestTopKeys(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"$.a", `$["b c"]`}, "[a b c]"},
		{[]string{"$.a.b"}, "[]"},
		{[]string{"$.a", "$[0]"}, "[]"},
		{[]string{`$["a"]["b"]`}, "[]"},
		{[]string{"$.a[1]"}, "[]"},
	} {
		if got := fmt.Sprint(topKeys(tc.in)); got != tc.want {
			t.Errorf("topKeys(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
