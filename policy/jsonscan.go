package policy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
)

// A fast path of the locator for the common shape: every path is one
// top-level key of a JSON object ($.name, $["a b"]). The scan below finds
// their values in one pass with no output, callbacks or path strings; it
// validates the document with the same rules as the JSON walker of
// crypto/fields (its scanString, scanNumber, literals, nesting bound and
// trailing-data check are mirrored here). Whatever it cannot handle (a key
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

// jsonMaxDepth is crypto/fields' bound on nesting.
const jsonMaxDepth = 10000

var errScan = errors.New("policy: fast scan: not handled")

// topScan appends to locs every top-level member of value whose key is
// one of keys, as (slot, start, end) of its value, in document order.
func topScan(locs []loc, keys []string, value []byte) ([]loc, error) {
	src := value
	i := skipWS(src, 0)
	if i >= len(src) {
		return locs, errScan
	}
	var err error
	if src[i] != '{' {
		if i, err = skipValue(src, i, 0); err != nil {
			return locs, err
		}
	} else {
		i = skipWS(src, i+1)
		if i < len(src) && src[i] == '}' {
			i++
		} else {
			for {
				if i >= len(src) || src[i] != '"' {
					return locs, errScan
				}
				kend, esc, err := scanString(src, i)
				if err != nil || esc {
					return locs, errScan
				}
				key := src[i+1 : kend-1]
				i = skipWS(src, kend)
				if i >= len(src) || src[i] != ':' {
					return locs, errScan
				}
				i = skipWS(src, i+1)
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
				i = skipWS(src, i)
				if i >= len(src) {
					return locs, errScan
				}
				if src[i] == ',' {
					i = skipWS(src, i+1)
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
	if skipWS(src, i) != len(src) {
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
		if depth+1 > jsonMaxDepth {
			return i, errScan
		}
		close := byte('}')
		if c == '[' {
			close = ']'
		}
		i = skipWS(src, i+1)
		if i < len(src) && src[i] == close {
			return i + 1, nil
		}
		for {
			var err error
			if c == '{' {
				if i >= len(src) || src[i] != '"' {
					return i, errScan
				}
				if i, _, err = scanString(src, i); err != nil {
					return i, err
				}
				i = skipWS(src, i)
				if i >= len(src) || src[i] != ':' {
					return i, errScan
				}
				i = skipWS(src, i+1)
			}
			if i, err = skipValue(src, i, depth+1); err != nil {
				return i, err
			}
			i = skipWS(src, i)
			if i >= len(src) {
				return i, errScan
			}
			if src[i] == ',' {
				i = skipWS(src, i+1)
				continue
			}
			if src[i] != close {
				return i, errScan
			}
			return i + 1, nil
		}
	case '"':
		end, _, err := scanString(src, i)
		return end, err
	case 't':
		return literal(src, i, "true")
	case 'f':
		return literal(src, i, "false")
	case 'n':
		return literal(src, i, "null")
	default:
		return scanNumber(src, i)
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func literal(src []byte, i int, lit string) (int, error) {
	if len(src)-i < len(lit) || string(src[i:i+len(lit)]) != lit {
		return i, errScan
	}
	return i + len(lit), nil
}

func scanNumber(src []byte, i int) (int, error) {
	if i < len(src) && src[i] == '-' {
		i++
	}
	if i >= len(src) {
		return i, errScan
	}
	switch {
	case src[i] == '0':
		i++
	case src[i] >= '1' && src[i] <= '9':
		for i < len(src) && src[i] >= '0' && src[i] <= '9' {
			i++
		}
	default:
		return i, errScan
	}
	if i < len(src) && src[i] == '.' {
		i++
		d := i
		for i < len(src) && src[i] >= '0' && src[i] <= '9' {
			i++
		}
		if i == d {
			return i, errScan
		}
	}
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		i++
		if i < len(src) && (src[i] == '+' || src[i] == '-') {
			i++
		}
		d := i
		for i < len(src) && src[i] >= '0' && src[i] <= '9' {
			i++
		}
		if i == d {
			return i, errScan
		}
	}
	return i, nil
}

// strSafe[c]: c may appear unescaped in a JSON string and needs no
// attention (not '"', '\\' or a control character).
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return
}()

// scanString scans the string at src[i] == '"': the offset after its
// closing quote, and whether it holds escapes.
func scanString(src []byte, i int) (int, bool, error) {
	i++
	// Long strings: find the closing quote and any backslash with
	// IndexByte (vectorized), then look for control characters only; any
	// doubt goes to the byte loop below from where it started.
	if len(src)-i > 32 {
		if q := bytes.IndexByte(src[i:], '"'); q >= 0 && bytes.IndexByte(src[i:i+q], '\\') < 0 && !hasControl(src[i:i+q]) {
			return i + q + 1, false, nil
		}
	}
	esc := false
	for {
		for i+8 <= len(src) {
			v := binary.LittleEndian.Uint64(src[i:])
			if (hasZeroByte(v^0x2222222222222222)|hasZeroByte(v^0x5c5c5c5c5c5c5c5c)|hasLessByte(v, 0x20))&0x8080808080808080 != 0 {
				break
			}
			i += 8
		}
		for i < len(src) && strSafe[src[i]] {
			i++
		}
		if i >= len(src) {
			return i, esc, errScan
		}
		switch c := src[i]; {
		case c == '"':
			return i + 1, esc, nil
		case c == '\\':
			esc = true
			if i+1 >= len(src) {
				return i, esc, errScan
			}
			switch src[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(src)-i < 6 || !isHex4(src[i+2:i+6]) {
					return i, esc, errScan
				}
				i += 6
			default:
				return i, esc, errScan
			}
		default:
			return i, esc, errScan
		}
	}
}

// hasControl reports a byte below 0x20 in b.
func hasControl(b []byte) bool {
	i := 0
	for ; i+32 <= len(b); i += 32 { // one branch per 32 bytes
		if hasLessByte(binary.LittleEndian.Uint64(b[i:]), 0x20)|hasLessByte(binary.LittleEndian.Uint64(b[i+8:]), 0x20)|
			hasLessByte(binary.LittleEndian.Uint64(b[i+16:]), 0x20)|hasLessByte(binary.LittleEndian.Uint64(b[i+24:]), 0x20) != 0 {
			return true
		}
	}
	for ; i+8 <= len(b); i += 8 {
		if hasLessByte(binary.LittleEndian.Uint64(b[i:]), 0x20) != 0 {
			return true
		}
	}
	for ; i < len(b); i++ {
		if b[i] < 0x20 {
			return true
		}
	}
	return false
}

func hasZeroByte(x uint64) uint64 { return (x - 0x0101010101010101) & ^x & 0x8080808080808080 }

func hasLessByte(x uint64, n uint64) uint64 {
	return (x - 0x0101010101010101*n) & ^x & 0x8080808080808080
}

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
