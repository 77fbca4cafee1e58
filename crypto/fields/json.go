package fields

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/strait-proxy/strait/crypto/fields/jsonlex"
)

// maxDepth bounds nesting of JSON arrays/objects (as encoding/json does)
// and of Avro values.
const maxDepth = jsonlex.MaxDepth

type jsonWalker struct {
	root  *pnode
	paths []Path
}

// NewJSON returns a Walker for JSON values. Each configured path selects a
// JSON value of any type (string, number, boolean, null, object, array); Seal
// passes its exact raw bytes to the SealFunc and writes the ciphertext back as
// a JSON string holding standard base64 with padding. Open decodes that string
// (padded or unpadded standard base64 is accepted), opens it and splices the
// exact original bytes back. The document is never re-serialized: every byte
// outside the selected values is copied unchanged, whitespace included.
func NewJSON(paths []string) (Walker, error) {
	root, parsed, err := compilePaths(paths)
	if err != nil {
		return nil, err
	}
	return &jsonWalker{root: root, paths: parsed}, nil
}

type jscan struct {
	src   []byte
	out   []byte
	last  int
	depth int
	path  pathBuf
	seal  SealFunc
	open  OpenFunc
	// scratch for unescaping / base64 decoding on Open
	scratch []byte
	// sub validates opened plaintexts
	sub *jscan
}

var jscanPool = sync.Pool{New: func() any { return &jscan{path: pathBuf{b: make([]byte, 0, 64)}, scratch: make([]byte, 0, 256)} }}

func (w *jsonWalker) Seal(dst, value []byte, fn SealFunc) ([]byte, error) {
	return w.run(dst, value, fn, nil)
}

func (w *jsonWalker) Open(dst, value []byte, fn OpenFunc) ([]byte, error) {
	return w.run(dst, value, nil, fn)
}

func (w *jsonWalker) run(dst, value []byte, seal SealFunc, open OpenFunc) ([]byte, error) {
	s := jscanPool.Get().(*jscan)
	s.src, s.out, s.last, s.depth = value, dst, 0, 0
	s.path.b = append(s.path.b[:0], '$')
	s.seal, s.open = seal, open
	i := jsonlex.SkipWS(value, 0)
	end, err := s.value(i, w.root)
	if err == nil {
		end = jsonlex.SkipWS(value, end)
		if end != len(value) {
			err = malformed("json: trailing data at offset %d", end)
		}
	}
	out := s.out
	if err == nil {
		out = append(out, value[s.last:]...)
	}
	s.src, s.out, s.seal, s.open = nil, nil, nil, nil
	if cap(s.scratch) > 64<<10 {
		s.scratch = make([]byte, 0, 256)
	}
	jscanPool.Put(s)
	if err != nil {
		return dst, err
	}
	return out, nil
}

// value scans the JSON value starting at i (no leading whitespace) and returns
// the offset just after it. n is the trie node of this position (nil: no
// configured path below).
func (s *jscan) value(i int, n *pnode) (int, error) {
	src := s.src
	if i >= len(src) {
		return i, malformed("json: unexpected end of input")
	}
	if n != nil && n.leaf {
		end, err := s.value(i, nil)
		if err != nil {
			return end, err
		}
		return end, s.leafAt(n, i, end)
	}
	switch c := src[i]; c {
	case '{':
		return s.object(i, n)
	case '[':
		return s.array(i, n)
	case '"':
		end, _, err := jsonlex.String(src, i)
		return end, lexErr(err)
	case 't':
		end, err := jsonlex.Literal(src, i, "true")
		return end, lexErr(err)
	case 'f':
		end, err := jsonlex.Literal(src, i, "false")
		return end, lexErr(err)
	case 'n':
		end, err := jsonlex.Literal(src, i, "null")
		return end, lexErr(err)
	default:
		end, err := jsonlex.Number(src, i)
		return end, lexErr(err)
	}
}

// lexErr words a jsonlex error as this package's ErrMalformed.
func lexErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %v", ErrMalformed, err)
}

func (s *jscan) object(i int, n *pnode) (int, error) {
	src := s.src
	if s.depth++; s.depth > maxDepth {
		return i, malformed("json: nesting deeper than %d", maxDepth)
	}
	defer func() { s.depth-- }()
	i = jsonlex.SkipWS(src, i+1)
	if i < len(src) && src[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(src) || src[i] != '"' {
			return i, malformed("json: expected object key at offset %d", i)
		}
		kstart := i
		kend, esc, err := jsonlex.String(src, i)
		err = lexErr(err)
		if err != nil {
			return kend, err
		}
		i = jsonlex.SkipWS(src, kend)
		if i >= len(src) || src[i] != ':' {
			return i, malformed("json: expected ':' at offset %d", i)
		}
		i = jsonlex.SkipWS(src, i+1)
		var child *pnode
		if n != nil && n.keys != nil {
			raw := src[kstart+1 : kend-1]
			if esc {
				s.scratch = unescapeJSON(s.scratch[:0], raw)
				raw = s.scratch
			}
			child = n.findKey(raw)
		}
		if child != nil {
			mark := s.path.push(child, 0)
			i, err = s.value(i, child)
			s.path.pop(mark)
		} else {
			i, err = s.value(i, nil)
		}
		if err != nil {
			return i, err
		}
		i = jsonlex.SkipWS(src, i)
		if i >= len(src) {
			return i, malformed("json: unterminated object")
		}
		switch src[i] {
		case ',':
			i = jsonlex.SkipWS(src, i+1)
		case '}':
			return i + 1, nil
		default:
			return i, malformed("json: expected ',' or '}' at offset %d", i)
		}
	}
}

func (s *jscan) array(i int, n *pnode) (int, error) {
	src := s.src
	if s.depth++; s.depth > maxDepth {
		return i, malformed("json: nesting deeper than %d", maxDepth)
	}
	defer func() { s.depth-- }()
	i = jsonlex.SkipWS(src, i+1)
	if i < len(src) && src[i] == ']' {
		return i + 1, nil
	}
	elems := n != nil && n.hasElems()
	var err error
	for pos := 0; ; pos++ {
		if elems {
			if child := n.element(pos); child != nil {
				mark := s.path.push(child, pos)
				i, err = s.value(i, child)
				s.path.pop(mark)
			} else {
				i, err = s.value(i, nil)
			}
		} else {
			i, err = s.value(i, nil)
		}
		if err != nil {
			return i, err
		}
		i = jsonlex.SkipWS(src, i)
		if i >= len(src) {
			return i, malformed("json: unterminated array")
		}
		switch src[i] {
		case ',':
			i = jsonlex.SkipWS(src, i+1)
		case ']':
			return i + 1, nil
		default:
			return i, malformed("json: expected ',' or ']' at offset %d", i)
		}
	}
}

// leafAt seals or opens the value src[start:end] selected by leaf n.
func (s *jscan) leafAt(n *pnode, start, end int) error {
	path := s.path.of(n)
	raw := s.src[start:end]
	if s.seal != nil {
		ct, err := s.seal(path, raw)
		if err != nil {
			return &callbackError{path: path, err: err}
		}
		s.out = append(s.out, s.src[s.last:start]...)
		s.out = append(s.out, '"')
		s.out = base64.StdEncoding.AppendEncode(s.out, ct)
		s.out = append(s.out, '"')
		s.last = end
		return nil
	}
	if raw[0] != '"' {
		return notSealed(path, "json: not a string")
	}
	body := raw[1 : len(raw)-1]
	for _, c := range body {
		if c == '\\' {
			s.scratch = unescapeJSON(s.scratch[:0], body)
			body = append([]byte(nil), s.scratch...)
			break
		}
	}
	enc := base64.StdEncoding
	if len(body)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	var err error
	s.scratch, err = enc.AppendDecode(s.scratch[:0], body)
	if err != nil || len(s.scratch) == 0 {
		return notSealed(path, "json: not base64")
	}
	pt, err := s.open(path, s.scratch)
	if err != nil {
		return &callbackError{path: path, err: err}
	}
	// The plaintext must be exactly one JSON value (it always is when it was
	// sealed by a walker): never splice something that breaks the document.
	if s.sub == nil {
		s.sub = &jscan{}
	}
	s.sub.src, s.sub.depth = pt, 0
	e, verr := s.sub.value(0, nil)
	s.sub.src = nil
	if verr != nil || e != len(pt) || len(pt) == 0 {
		return notSealed(path, "json: opened plaintext is not a single JSON value")
	}
	s.out = append(s.out, s.src[s.last:start]...)
	s.out = append(s.out, pt...)
	s.last = end
	return nil
}

// unescapeJSON appends the unescaped form of a (valid) JSON string body.
func unescapeJSON(dst, b []byte) []byte {
	for i := 0; i < len(b); {
		c := b[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		if i+1 >= len(b) {
			return dst
		}
		switch b[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			if i+6 > len(b) {
				return dst
			}
			r := hex4(b[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(b) && b[i] == '\\' && b[i+1] == 'u' {
					r2 := hex4(b[i+2 : i+6])
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						i += 6
						dst = utf8.AppendRune(dst, d)
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // " \ /
			dst = append(dst, b[i+1])
		}
		i += 2
	}
	return dst
}

func hex4(b []byte) rune {
	v, _ := strconv.ParseUint(string(b), 16, 16)
	return rune(v)
}
