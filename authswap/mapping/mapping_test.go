package mapping

import (
	"errors"
	"strings"
	"testing"
)

func TestMap(t *testing.T) {
	for _, tc := range []struct {
		rules, dn, want string
		noMatch         bool
	}{
		{"", "CN=alice,O=x", "CN=alice,O=x", false},
		{"DEFAULT", "CN=alice,O=x", "CN=alice,O=x", false},
		// The example from Kafka's documentation and the issue.
		{`RULE:^CN=([a-zA-Z0-9.@-]+).*$/$1/L,DEFAULT`, "CN=Alice.Smith@EXAMPLE.com,OU=eng,O=x", "alice.smith@example.com", false},
		{`RULE:^CN=([a-zA-Z0-9.@-]+).*$/$1/L,DEFAULT`, "OU=eng,O=x", "OU=eng,O=x", false},
		// Kafka's SslPrincipalMapperTest cases.
		{`RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/`, "CN=kafka-server,OU=ServiceUsers,O=Org,C=US", "kafka-server", false},
		{`RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/`, "CN=duke,OU=JavaSoft,O=Sun Microsystems,L=Sanfrancisco,ST=CA,C=US", "duke@JavaSoft", false},
		{`RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L`, "CN=Kafka,OU=ServiceUsers,O=Org,C=US", "kafka", false},
		{`RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U`, "CN=kafka,OU=ServiceUsers,O=Org,C=US", "KAFKA", false},
		{`RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, DEFAULT`, "CN=other,OU=People", "CN=other,OU=People", false},
		// Whitespace around rules and commas, several rules, first wins.
		{" RULE:^CN=a,.*$/first/ ,\n RULE:^CN=.*$/second/ , DEFAULT ", "CN=a,O=x", "first", false},
		{" RULE:^CN=a,.*$/first/ ,\n RULE:^CN=.*$/second/ , DEFAULT ", "CN=b,O=x", "second", false},
		// Escaped slash in the pattern and in the replacement; \$ is a dollar.
		{`RULE:^CN=(.*)\/(.*)$/$2\/$1/`, "CN=a/b", "b/a", false},
		{`RULE:^CN=(.*)$/\$$1/`, "CN=a", "$a", false},
		{`RULE:^CN=(.*)$/${1}x/`, "CN=a", "ax", false},
		// Java reads the longest group number that exists: $10 is group 1 then "0".
		{`RULE:^CN=(.*)$/$10/`, "CN=a", "a0", false},
		// The pattern must match the whole name (Java's matches()).
		{`RULE:CN=alice/bob/`, "CN=alice,O=x", "", true},
		{`RULE:CN=alice.*/bob/`, "CN=alice,O=x", "bob", false},
		// No DEFAULT: a whitelist.
		{`RULE:^CN=(svc-[a-z]+),.*$/$1/`, "CN=mallory,O=x", "", true},
	} {
		r, err := Parse(tc.rules)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.rules, err)
		}
		got, err := r.Map(tc.dn)
		if tc.noMatch {
			if !errors.Is(err, ErrNoMatch) {
				t.Errorf("%q on %q: got %q, %v; want ErrNoMatch", tc.rules, tc.dn, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q on %q: got %q, %v; want %q", tc.rules, tc.dn, got, err, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ rules, want string }{
		{"RULE", "neither DEFAULT nor RULE"},
		{"rule:^a$/b/", "neither DEFAULT nor RULE"},
		{"RULE:^a$", "pattern: missing closing '/'"},
		{"RULE:^a$/b", "replacement: missing closing '/'"},
		{"RULE://x/", "empty pattern"},
		{"RULE:^(a$/b/", "pattern \"^(a$\""},
		{"RULE:^a$/$2/", "group 2 does not exist"},
		{"RULE:^a$/$/", "'$' must be followed"},
		{"RULE:^a$/${1/", "unclosed ${"},
		{"RULE:^a$/b/X", "unexpected \"X\""},
		{"RULE:^a$/b/L,", "empty rule after a trailing comma"},
		{"DEFAULT,,DEFAULT", "rule 2"},
		{`RULE:^a\`, "lone backslash"},
		// RE2 has no backreferences: a config error, not a silent mismatch.
		{`RULE:^(a)\1$/b/`, "invalid escape"},
	} {
		_, err := Parse(tc.rules)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tc.rules, err, tc.want)
		}
	}
}

func TestString(t *testing.T) {
	const s = `RULE:^CN=([a-zA-Z0-9.@-]+).*$/$1/L,DEFAULT`
	if got := MustParse(s).String(); got != s {
		t.Errorf("String() = %q, want %q", got, s)
	}
	if got := (Rules{}).String(); got != "DEFAULT" {
		t.Errorf("zero Rules String() = %q", got)
	}
}

// FuzzParse: the parser never panics, a parsed rule list prints back to a
// list that parses to the same text, and Map never panics nor returns an
// empty name without an error.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "DEFAULT", `RULE:^CN=([a-zA-Z0-9.@-]+).*$/$1/L,DEFAULT`, `RULE:^CN=(.*)\/(.*)$/$2\/$1/U`, `RULE:a/${1}/`, "RULE:/", `RULE:\`} {
		f.Add(s, "CN=alice,OU=eng,O=x")
	}
	f.Fuzz(func(t *testing.T, rules, dn string) {
		r, err := Parse(rules)
		if err != nil {
			return
		}
		again, err := Parse(r.String())
		if err != nil {
			t.Fatalf("String() %q of %q does not parse: %v", r.String(), rules, err)
		}
		if again.String() != r.String() {
			t.Fatalf("round trip %q -> %q", r.String(), again.String())
		}
		name, err := r.Map(dn)
		if err == nil && name == "" && dn != "" {
			t.Fatalf("%q mapped %q to an empty name without an error", rules, dn)
		}
	})
}
