package fields

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// segKind is the kind of one path segment.
type segKind uint8

const (
	segKey   segKind = iota // .name or ["name"]
	segIndex                // [3]
	segAny                  // [*]
)

type segment struct {
	kind  segKind
	key   string
	index int
}

// Path is a parsed path expression.
type Path struct {
	raw  string
	segs []segment
}

// String returns the canonical form of the path.
func (p Path) String() string { return canonical(p.segs) }

// ParsePath parses a path expression:
//
//	$            root (not selectable by itself)
//	.name        object key / record field / message field; name is any run
//	             of characters other than . [ ] " ' and whitespace
//	["any key"]  key in JSON string syntax (escapes allowed)
//	[*]          every element of an array (Avro: also every map value;
//	             Protobuf: every occurrence of a repeated field, every map value)
//	[n]          the element at position n (n >= 0)
func ParsePath(s string) (Path, error) {
	p := Path{raw: s}
	if !strings.HasPrefix(s, "$") {
		return p, fmt.Errorf("%w %q: must start with $", ErrPath, s)
	}
	i := 1
	for i < len(s) {
		switch s[i] {
		case '.':
			j := i + 1
			for j < len(s) && isBareKeyChar(s[j]) {
				j++
			}
			if j == i+1 {
				return p, fmt.Errorf("%w %q: empty name at offset %d", ErrPath, s, i)
			}
			p.segs = append(p.segs, segment{kind: segKey, key: s[i+1 : j]})
			i = j
		case '[':
			if i+1 >= len(s) {
				return p, fmt.Errorf("%w %q: unterminated [", ErrPath, s)
			}
			switch c := s[i+1]; {
			case c == '*':
				if i+2 >= len(s) || s[i+2] != ']' {
					return p, fmt.Errorf("%w %q: expected ] after [*", ErrPath, s)
				}
				p.segs = append(p.segs, segment{kind: segAny})
				i += 3
			case c >= '0' && c <= '9':
				j := i + 1
				for j < len(s) && s[j] >= '0' && s[j] <= '9' {
					j++
				}
				if j >= len(s) || s[j] != ']' {
					return p, fmt.Errorf("%w %q: expected ] after index", ErrPath, s)
				}
				n, err := strconv.Atoi(s[i+1 : j])
				if err != nil || n > 1<<30 {
					return p, fmt.Errorf("%w %q: bad index", ErrPath, s)
				}
				p.segs = append(p.segs, segment{kind: segIndex, index: n})
				i = j + 1
			case c == '"':
				// find the closing quote, honouring escapes
				j := i + 2
				for j < len(s) && s[j] != '"' {
					if s[j] == '\\' {
						j++
					}
					j++
				}
				if j >= len(s) || j+1 >= len(s) || s[j+1] != ']' {
					return p, fmt.Errorf("%w %q: unterminated [\"key\"]", ErrPath, s)
				}
				var key string
				if err := json.Unmarshal([]byte(s[i+1:j+1]), &key); err != nil {
					return p, fmt.Errorf("%w %q: bad quoted key: %v", ErrPath, s, err)
				}
				p.segs = append(p.segs, segment{kind: segKey, key: key})
				i = j + 2
			default:
				return p, fmt.Errorf("%w %q: unexpected %q after [", ErrPath, s, c)
			}
		default:
			return p, fmt.Errorf("%w %q: unexpected %q at offset %d", ErrPath, s, s[i], i)
		}
	}
	if len(p.segs) == 0 {
		return p, fmt.Errorf("%w %q: selects the whole value (use whole-value encryption)", ErrPath, s)
	}
	return p, nil
}

func isBareKeyChar(c byte) bool {
	switch c {
	case '.', '[', ']', '"', '\'', ' ', '\t', '\n', '\r':
		return false
	}
	return c >= 0x20 && c != 0x7f
}

func isBareKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isBareKeyChar(k[i]) {
			return false
		}
	}
	return true
}

func appendKeySeg(b []byte, key string) []byte {
	if isBareKey(key) {
		b = append(b, '.')
		return append(b, key...)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(key)
	b = append(b, '[')
	b = append(b, bytes.TrimRight(buf.Bytes(), "\n")...)
	return append(b, ']')
}

func canonical(segs []segment) string {
	b := []byte{'$'}
	for _, s := range segs {
		switch s.kind {
		case segKey:
			b = appendKeySeg(b, s.key)
		case segIndex:
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(s.index), 10)
			b = append(b, ']')
		case segAny:
			b = append(b, "[*]"...)
		}
	}
	return string(b)
}

// pnode is a node of the compiled path trie.
type pnode struct {
	keys map[string]*pnode
	// klist mirrors keys for fast lookups with few keys
	klist []kchild
	idx   map[int]*pnode
	any   *pnode
	leaf  bool
	// seg is the canonical segment leading to this node (key and index
	// children); wildcard children build theirs from the position.
	seg string
	// static is the full concrete path when no wildcard lies above this node
	// (then the path is constant); dyn is true otherwise.
	static string
	dyn    bool
	// config is the configured path of a leaf (for error messages).
	config string
}

type kchild struct {
	key string
	n   *pnode
}

// findKey looks a key up without allocating.
func (n *pnode) findKey(k []byte) *pnode {
	if len(n.klist) <= 8 {
		for i := range n.klist {
			if c := &n.klist[i]; len(c.key) == len(k) && c.key == string(k) {
				return c.n
			}
		}
		return nil
	}
	return n.keys[string(k)]
}

func (n *pnode) key(k string) *pnode {
	if n.keys == nil {
		return nil
	}
	return n.keys[k]
}

// element returns the child for array position i.
func (n *pnode) element(i int) *pnode {
	if n.idx != nil {
		if c := n.idx[i]; c != nil {
			return c
		}
	}
	return n.any
}

func (n *pnode) hasElems() bool { return n.any != nil || len(n.idx) > 0 }

// compilePaths builds the trie. It rejects overlapping paths (one being a
// prefix of another) and paths mixing [*] and [n] at the same position.
func compilePaths(paths []string) (*pnode, []Path, error) {
	if len(paths) == 0 {
		return nil, nil, fmt.Errorf("%w: no paths", ErrPath)
	}
	root := &pnode{static: "$"}
	var parsed []Path
	for _, ps := range paths {
		p, err := ParsePath(ps)
		if err != nil {
			return nil, nil, err
		}
		parsed = append(parsed, p)
		n := root
		pathSoFar := []byte{'$'}
		dyn := false
		for _, s := range p.segs {
			if n.leaf {
				return nil, nil, fmt.Errorf("%w: %s overlaps %s", ErrPath, ps, n.config)
			}
			var c *pnode
			switch s.kind {
			case segKey:
				pathSoFar = appendKeySeg(pathSoFar, s.key)
				if n.keys == nil {
					n.keys = map[string]*pnode{}
				}
				c = n.keys[s.key]
				if c == nil {
					c = &pnode{seg: string(appendKeySeg(nil, s.key))}
					n.keys[s.key] = c
					n.klist = append(n.klist, kchild{s.key, c})
				}
			case segIndex:
				if n.any != nil {
					return nil, nil, fmt.Errorf("%w: %s mixes [*] and [n] with another path", ErrPath, ps)
				}
				pathSoFar = append(pathSoFar, '[')
				pathSoFar = strconv.AppendInt(pathSoFar, int64(s.index), 10)
				pathSoFar = append(pathSoFar, ']')
				if n.idx == nil {
					n.idx = map[int]*pnode{}
				}
				c = n.idx[s.index]
				if c == nil {
					c = &pnode{seg: "[" + strconv.Itoa(s.index) + "]"}
					n.idx[s.index] = c
				}
			case segAny:
				if len(n.idx) > 0 {
					return nil, nil, fmt.Errorf("%w: %s mixes [*] and [n] with another path", ErrPath, ps)
				}
				dyn = true
				pathSoFar = append(pathSoFar, "[*]"...)
				if n.any == nil {
					n.any = &pnode{}
				}
				c = n.any
			}
			c.dyn = dyn
			if !dyn {
				c.static = string(pathSoFar)
			}
			n = c
		}
		if n.leaf {
			return nil, nil, fmt.Errorf("%w: %s given twice", ErrPath, ps)
		}
		if len(n.keys) > 0 || n.hasElems() {
			return nil, nil, fmt.Errorf("%w: %s overlaps a longer path", ErrPath, ps)
		}
		n.leaf = true
		n.config = p.String()
	}
	return root, parsed, nil
}

// pathBuf builds concrete paths during a walk.
type pathBuf struct{ b []byte }

func (p *pathBuf) push(n *pnode, pos int) int {
	mark := len(p.b)
	if n.seg != "" {
		p.b = append(p.b, n.seg...)
	} else {
		p.b = append(p.b, '[')
		p.b = strconv.AppendInt(p.b, int64(pos), 10)
		p.b = append(p.b, ']')
	}
	return mark
}

func (p *pathBuf) pop(mark int) { p.b = p.b[:mark] }

// of returns the concrete path of leaf n given the current buffer.
func (p *pathBuf) of(n *pnode) string {
	if !n.dyn {
		return n.static
	}
	return string(p.b)
}

// sortedKeys is used for deterministic error messages.
func sortedKeys(m map[string]*pnode) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
