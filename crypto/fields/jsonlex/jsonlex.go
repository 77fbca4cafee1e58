// Package jsonlex is the JSON lexing Strait's two JSON scanners share: the
// field walker of crypto/fields (which seals, opens and redacts fields in
// place) and the policy's fast top-level scan. One definition of what is a
// valid string, number and literal keeps the two agreeing on every input
// (policy's FuzzTopScan checks that they do).
package jsonlex

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// MaxDepth bounds the nesting of objects and arrays the scanners accept.
const MaxDepth = 10000

// SyntaxError is malformed JSON at Offset.
type SyntaxError struct {
	Msg    string
	Offset int
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("json: %s at offset %d", e.Msg, e.Offset) }

func syntax(msg string, off int) error { return &SyntaxError{Msg: msg, Offset: off} }

// SkipWS returns the offset of the first byte at or after i that is not
// JSON whitespace.
func SkipWS(b []byte, i int) int {
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

// Literal checks that lit (true, false or null) starts at src[i] and
// returns the offset after it.
func Literal(src []byte, i int, lit string) (int, error) {
	if len(src)-i < len(lit) || string(src[i:i+len(lit)]) != lit {
		return i, syntax("invalid literal", i)
	}
	return i + len(lit), nil
}

// Number scans the number starting at src[i] and returns the offset after
// it.
func Number(src []byte, i int) (int, error) {
	start := i
	if i < len(src) && src[i] == '-' {
		i++
	}
	if i >= len(src) {
		return i, syntax("invalid number", start)
	}
	switch {
	case src[i] == '0':
		i++
	case src[i] >= '1' && src[i] <= '9':
		for i < len(src) && src[i] >= '0' && src[i] <= '9' {
			i++
		}
	default:
		return i, syntax("invalid character", i)
	}
	if i < len(src) && src[i] == '.' {
		i++
		d := i
		for i < len(src) && src[i] >= '0' && src[i] <= '9' {
			i++
		}
		if i == d {
			return i, syntax("invalid number", start)
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
			return i, syntax("invalid number", start)
		}
	}
	return i, nil
}

// strSafe[c] is true for bytes that can appear in a JSON string unescaped
// and need no attention (not '"', '\\', or a control character).
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return
}()

// String scans the string starting at src[i] == '"'. It returns the offset
// after the closing quote and whether the string contains escapes.
func String(src []byte, i int) (int, bool, error) {
	start := i
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
		// 8 bytes at a time while none is '"', '\\' or a control character
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
			return i, esc, syntax("unterminated string", start)
		}
		switch c := src[i]; {
		case c == '"':
			return i + 1, esc, nil
		case c == '\\':
			esc = true
			if i+1 >= len(src) {
				return i, esc, syntax("unterminated string", start)
			}
			switch src[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(src)-i < 6 || !IsHex4(src[i+2:i+6]) {
					return i, esc, syntax(`invalid \u escape`, i)
				}
				i += 6
			default:
				return i, esc, syntax("invalid escape", i)
			}
		default:
			return i, esc, syntax("control character in string", i)
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

// hasLessByte is non-zero if some byte of x is < n (n <= 128).
func hasLessByte(x uint64, n uint64) uint64 {
	return (x - 0x0101010101010101*n) & ^x & 0x8080808080808080
}

// IsHex4 reports whether the first four bytes of b are hex digits.
func IsHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
