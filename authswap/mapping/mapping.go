// Package mapping turns a certificate's distinguished name into a principal
// name with the rules of Kafka's ssl.principal.mapping.rules (KIP-371):
//
//	RULE:^CN=([a-zA-Z0-9.@-]+).*$/$1/L,DEFAULT
//
// Rules are tried in order; the first whose pattern matches the whole name
// gives the result. RULE:pattern/replacement/ replaces every match of
// pattern in the name with replacement ($1, ${1}: groups; \x: a literal x),
// then an optional L or U lower- or upper-cases the result. DEFAULT keeps
// the name as it is. A name no rule matches is refused (Kafka's
// NoMatchingRule), so a rule list without DEFAULT is a whitelist.
//
// Patterns are Go regular expressions (RE2), which accept the Java patterns
// Kafka configurations use except for backreferences and lookarounds; a
// pattern RE2 rejects is a configuration error, never a silent mismatch.
package mapping

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Rules is a parsed rule list. The zero value behaves as "DEFAULT".
type Rules struct {
	rules []rule
}

type rule struct {
	isDefault bool
	re        *regexp.Regexp // the pattern as written, for replacing
	whole     *regexp.Regexp // ^(?:pattern)$, for Kafka's matches()
	repl      string         // in Go's Expand syntax
	lower     bool
	upper     bool
	text      string
}

// ErrNoMatch is returned (wrapped) by Map when no rule applies.
var ErrNoMatch = errors.New("no principal mapping rule applies")

// Parse reads a comma-separated rule list. An empty string is "DEFAULT", as
// in Kafka.
func Parse(s string) (Rules, error) {
	var out Rules
	if strings.TrimSpace(s) == "" {
		out.rules = []rule{{isDefault: true, text: "DEFAULT"}}
		return out, nil
	}
	rest := s
	for i := 0; ; i++ {
		rest = strings.TrimLeft(rest, " \t\n")
		r, tail, err := parseOne(rest)
		if err != nil {
			return Rules{}, fmt.Errorf("rule %d: %w", i+1, err)
		}
		out.rules = append(out.rules, r)
		tail = strings.TrimLeft(tail, " \t\n")
		if tail == "" {
			return out, nil
		}
		if tail[0] != ',' {
			return Rules{}, fmt.Errorf("rule %d: unexpected %q after %q (rules are separated by commas)", i+1, clip(tail), r.text)
		}
		rest = tail[1:]
		if strings.TrimSpace(rest) == "" {
			return Rules{}, fmt.Errorf("rule %d: empty rule after a trailing comma", i+2)
		}
	}
}

// MustParse is Parse for constants in tests and examples.
func MustParse(s string) Rules {
	r, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return r
}

func parseOne(s string) (rule, string, error) {
	if strings.HasPrefix(s, "DEFAULT") {
		return rule{isDefault: true, text: "DEFAULT"}, s[len("DEFAULT"):], nil
	}
	body, ok := strings.CutPrefix(s, "RULE:")
	if !ok {
		return rule{}, "", fmt.Errorf("%q is neither DEFAULT nor RULE:pattern/replacement/[LU]", clip(s))
	}
	pat, after, err := field(body)
	if err != nil {
		return rule{}, "", fmt.Errorf("pattern: %w", err)
	}
	repl, after, err := field(after)
	if err != nil {
		return rule{}, "", fmt.Errorf("replacement: %w", err)
	}
	r := rule{}
	switch {
	case strings.HasPrefix(after, "L"):
		r.lower, after = true, after[1:]
	case strings.HasPrefix(after, "U"):
		r.upper, after = true, after[1:]
	}
	r.text = s[:len(s)-len(after)]
	if pat == "" {
		return rule{}, "", errors.New("empty pattern")
	}
	if r.re, err = regexp.Compile(pat); err != nil {
		return rule{}, "", fmt.Errorf("pattern %q: %w", pat, err)
	}
	r.whole = regexp.MustCompile(`^(?:` + pat + `)$`)
	if r.repl, err = translateReplacement(repl, r.re.NumSubexp()); err != nil {
		return rule{}, "", fmt.Errorf("replacement %q: %w", repl, err)
	}
	return r, after, nil
}

// field reads up to the next unescaped '/', keeping escapes as written (the
// regexp and the replacement each interpret their own escapes), and returns
// the text after the slash.
func field(s string) (string, string, error) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
			if i == len(s) {
				return "", "", errors.New("ends in a lone backslash")
			}
		case '/':
			return s[:i], s[i+1:], nil
		}
	}
	return "", "", errors.New("missing closing '/'")
}

// translateReplacement turns a Java Matcher replacement ($n, ${name}, \x)
// into Go's Expand syntax ($${n}, ${name}, $$).
func translateReplacement(j string, groups int) (string, error) {
	var b strings.Builder
	for i := 0; i < len(j); i++ {
		c := j[i]
		switch c {
		case '\\':
			i++
			if i == len(j) {
				return "", errors.New("ends in a lone backslash")
			}
			if j[i] == '$' {
				b.WriteString("$$")
			} else {
				b.WriteByte(j[i])
			}
		case '$':
			if i+1 < len(j) && j[i+1] == '{' {
				end := strings.IndexByte(j[i:], '}')
				if end < 0 {
					return "", errors.New("unclosed ${")
				}
				name := j[i+2 : i+end]
				if n, err := strconv.Atoi(name); err == nil && n > groups {
					return "", fmt.Errorf("group %d does not exist (the pattern has %d)", n, groups)
				}
				b.WriteString("${" + name + "}")
				i += end
				continue
			}
			// Java reads the longest run of digits that still names a group.
			k := i + 1
			if k == len(j) || j[k] < '0' || j[k] > '9' {
				return "", errors.New("'$' must be followed by a group number or {name} (write \\$ for a dollar sign)")
			}
			n := int(j[k] - '0')
			if n > groups {
				return "", fmt.Errorf("group %d does not exist (the pattern has %d)", n, groups)
			}
			k++
			for k < len(j) && j[k] >= '0' && j[k] <= '9' && n*10+int(j[k]-'0') <= groups {
				n = n*10 + int(j[k]-'0')
				k++
			}
			b.WriteString("${" + strconv.Itoa(n) + "}")
			i = k - 1
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// Map applies the rules to name (a distinguished name such as
// "CN=alice,OU=eng,O=Example"). It returns ErrNoMatch (wrapped, naming
// the input) when no rule applies, and an error when a rule maps the
// name to the empty string.
func (r Rules) Map(name string) (string, error) {
	rules := r.rules
	if len(rules) == 0 {
		return name, nil
	}
	for _, ru := range rules {
		if ru.isDefault {
			return name, nil
		}
		if !ru.whole.MatchString(name) {
			continue
		}
		out := ru.re.ReplaceAllString(name, ru.repl)
		switch {
		case ru.lower:
			out = strings.ToLower(out)
		case ru.upper:
			out = strings.ToUpper(out)
		}
		if out == "" {
			return "", fmt.Errorf("rule %s maps %q to an empty name", ru.text, name)
		}
		return out, nil
	}
	return "", fmt.Errorf("%w to %q", ErrNoMatch, name)
}

// String gives back the rules in their configuration syntax.
func (r Rules) String() string {
	if len(r.rules) == 0 {
		return "DEFAULT"
	}
	parts := make([]string, len(r.rules))
	for i, ru := range r.rules {
		parts[i] = ru.text
	}
	return strings.Join(parts, ",")
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
