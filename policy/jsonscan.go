package policy

import (
	"encoding/json"
	"errors"
	"strings"

	"github.com/strait-proxy/strait/crypto/fields/jsonlex"
)

// A fast path of the locator for the common shape: every path is one
// top-level key of a JSON object ($.name, $["a b"]). The scan below finds
// their values in one pass with no output, callbacks or path strings; it
// validates the document with the same rules as the JSON walker of
// crypto/fields: both lex with crypto/fields/jsonlex (strings, numbers,
// literals, the nesting bound), and the trailing-data check is the same. Whatever it cannot handle (a key
// with escapes) or finds malformed sends the record to the walker, which
// then decides, so an error is always the walker's; FuzzTopScan checks
// that on every input both agree on validity and on the spans.

// topKeys returns the top-level keys of the canonical paths slots, or
// nil when a path is not one top-level key.
func topKeys(slots []string) []string {
	keys := make([]string, len(slots))
	for i, c := range slots {
		switch {
		case strings.HasPrefix(c, "$.") && !strings.ContainsAny(c[2:], ".[]"):
			keys[i] = c[2:]
		case strings.HasPrefix(c, "$[") && strings.HasSuffix(c, "]"):
			if err := json.Unmarshal([]byte(c[2:len(c)-1]), &keys[i]); err != nil {
				return nil
			}
		default:
			return nil
		}
	}
	return keys
}

var errScan = errors.New("policy: fast scan: not handled")

// topScan appends to locs every top-level member of value whose key is
// one of keys, as (slot, start, end) of its value, in document order.
func topScan(locs []loc, keys []string, value []byte) ([]loc, error) {
	src := value
	i := jsonlex.SkipWS(src, 0)
	if i >= len(src) {
		return locs, errScan
	}
	var err error
	if src[i] != '{' {
		if i, err = skipValue(src, i, 0); err != nil {
			return locs, err
		}
	} else {
		i = jsonlex.SkipWS(src, i+1)
		if i < len(src) && src[i] == '}' {
			i++
		} else {
			for {
				if i >= len(src) || src[i] != '"' {
					return locs, errScan
				}
				kend, esc, err := jsonlex.String(src, i)
				if err != nil || esc {
					return locs, errScan
				}
				key := src[i+1 : kend-1]
				i = jsonlex.SkipWS(src, kend)
				if i >= len(src) || src[i] != ':' {
					return locs, errScan
				}
				i = jsonlex.SkipWS(src, i+1)
				start := i
				if i, err = skipValue(src, i, 1); err != nil {
					return locs, err
				}
				for s, k := range keys {
					if len(k) == len(key) && k == string(key) {
						locs = append(locs, loc{s, start, i})
						break
					}
				}
				i = jsonlex.SkipWS(src, i)
				if i >= len(src) {
					return locs, errScan
				}
				if src[i] == ',' {
					i = jsonlex.SkipWS(src, i+1)
					continue
				}
				if src[i] != '}' {
					return locs, errScan
				}
				i++
				break
			}
		}
	}
	if jsonlex.SkipWS(src, i) != len(src) {
		return locs, errScan
	}
	return locs, nil
}

// skipValue validates the JSON value at i (no leading whitespace) and
// returns the offset after it; depth is the nesting around it.
func skipValue(src []byte, i, depth int) (int, error) {
	if i >= len(src) {
		return i, errScan
	}
	switch c := src[i]; c {
	case '{', '[':
		if depth+1 > jsonlex.MaxDepth {
			return i, errScan
		}
		close := byte('}')
		if c == '[' {
			close = ']'
		}
		i = jsonlex.SkipWS(src, i+1)
		if i < len(src) && src[i] == close {
			return i + 1, nil
		}
		for {
			var err error
			if c == '{' {
				if i >= len(src) || src[i] != '"' {
					return i, errScan
				}
				if i, _, err = jsonlex.String(src, i); err != nil {
					return i, err
				}
				i = jsonlex.SkipWS(src, i)
				if i >= len(src) || src[i] != ':' {
					return i, errScan
				}
				i = jsonlex.SkipWS(src, i+1)
			}
			if i, err = skipValue(src, i, depth+1); err != nil {
				return i, err
			}
			i = jsonlex.SkipWS(src, i)
			if i >= len(src) {
				return i, errScan
			}
			if src[i] == ',' {
				i = jsonlex.SkipWS(src, i+1)
				continue
			}
			if src[i] != close {
				return i, errScan
			}
			return i + 1, nil
		}
	case '"':
		end, _, err := jsonlex.String(src, i)
		return end, err
	case 't':
		return jsonlex.Literal(src, i, "true")
	case 'f':
		return jsonlex.Literal(src, i, "false")
	case 'n':
		return jsonlex.Literal(src, i, "null")
	default:
		return jsonlex.Number(src, i)
	}
}
