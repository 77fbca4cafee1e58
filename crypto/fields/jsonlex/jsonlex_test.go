package jsonlex

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestTokens(t *testing.T) {
	long := strings.Repeat("abcdefgh", 8)
	for _, tc := range []struct {
		in      string
		end     int // -1: an error
		escaped bool
	}{
		{`""`, 2, false},
		{`"abc"x`, 5, false},
		{`"a\"b"`, 6, true},
		{`"\u00e9"`, 8, true},
		{`"\u00g9"`, -1, false},
		{`"\q"`, -1, false},
		{`"abc`, -1, false},
		{"\"a\x01b\"", -1, false},
		{`"` + long + `"`, len(long) + 2, false},                // the IndexByte path
		{`"` + long + "\x1f" + `"`, -1, false},                  // a control character there
		{`"` + long + `\n"`, len(long) + 4, true},               // an escape sends it to the loop
		{`"` + long + `\"` + long + `"`, 2*len(long) + 4, true}, // a quote that is escaped
	} {
		end, esc, err := String([]byte(tc.in), 0)
		if tc.end < 0 {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Errorf("String(%q) = %d, %v; want a SyntaxError", tc.in, end, err)
			}
			continue
		}
		if err != nil || end != tc.end || esc != tc.escaped {
			t.Errorf("String(%q) = %d, %v, %v; want %d, %v", tc.in, end, esc, err, tc.end, tc.escaped)
		}
	}
	for _, tc := range []struct {
		in  string
		end int
	}{
		{"0", 1}, {"-0", 2}, {"12.5e+3,", 7}, {"1E9", 3}, {"-", -1}, {"01", 1}, {"1.", -1}, {"1e", -1}, {"x", -1}, {".5", -1},
	} {
		end, err := Number([]byte(tc.in), 0)
		if (tc.end < 0) != (err != nil) || (tc.end >= 0 && end != tc.end) {
			t.Errorf("Number(%q) = %d, %v; want %d", tc.in, end, err, tc.end)
		}
	}
	if end, err := Literal([]byte("true,"), 0, "true"); end != 4 || err != nil {
		t.Errorf("Literal true = %d, %v", end, err)
	}
	if _, err := Literal([]byte("tru"), 0, "true"); err == nil {
		t.Error("Literal accepted a short literal")
	}
	if got := SkipWS([]byte(" \t\r\nx"), 0); got != 4 {
		t.Errorf("SkipWS = %d", got)
	}
	if err := (&SyntaxError{Msg: "invalid number", Offset: 7}).Error(); err != "json: invalid number at offset 7" {
		t.Errorf("Error() = %q", err)
	}
}

// FuzzString: a string token String accepts whole is valid JSON, and one
// it refuses is not (encoding/json is the reference).
func FuzzString(f *testing.F) {
	for _, s := range []string{`""`, `"abc"`, `"a\"b"`, `"\u00e9"`, `"\ud83d\ude00"`, "\"a\x01\"", `"` + strings.Repeat("x", 40) + `"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || b[0] != '"' {
			return
		}
		end, _, err := String(b, 0)
		if err != nil {
			if json.Valid(b) {
				t.Fatalf("refused valid JSON string %q: %v", b, err)
			}
			return
		}
		if !json.Valid(b[:end]) {
			t.Fatalf("accepted %q, not valid JSON", b[:end])
		}
	})
}
