package fields

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// AvroConfig configures NewAvro. At least one schema source must be given;
// local schemas take precedence over the registry for their id.
type AvroConfig struct {
	// Paths select the fields to encrypt (see ParsePath). A path selects a
	// record field by name ($.a.b), every array element or map value ([*]),
	// or an array element / map value by position ([n]). Unions on the way
	// are followed into every branch where the rest of the path resolves.
	Paths []string
	// Registry resolves writer schemas by the id in the wire header.
	Registry *Registry
	// Local are writer schemas read from .avsc files, each with the schema
	// id that producers put in the wire header.
	Local []LocalAvro
	// RetryAfter is how long a failed schema lookup/compilation is
	// remembered (default: the registry's RetryAfter, else 1s).
	RetryAfter time.Duration
}

// LocalAvro is a writer schema from files: the last file is the schema; the
// ones before it define named types it references (parsed in order).
type LocalAvro struct {
	ID    int32
	Files []string
}

type avroWalker struct {
	root  *pnode
	reg   *Registry
	local map[int32]avro.Schema
	plans planCache[*aPlan]
}

// NewAvro returns a Walker for Avro values in the Confluent wire format
// (magic 0, 4-byte schema id, Avro binary). The writer schema is taken from
// Local or the Registry by id. Selected fields must be string or bytes, or a
// union of null with string and/or bytes (CheckAvro). Seal replaces a string
// with the standard padded base64 of its ciphertext (still a valid Avro
// string) and bytes with the raw ciphertext; the enclosing bytes (other
// fields, array block headers except the byte size of negative-count blocks,
// union indexes, the wire header) are copied unchanged.
func NewAvro(cfg AvroConfig) (Walker, error) {
	root, _, err := compilePaths(cfg.Paths)
	if err != nil {
		return nil, err
	}
	if cfg.Registry == nil && len(cfg.Local) == 0 {
		return nil, fmt.Errorf("%w: avro: no registry and no local schema", ErrSchema)
	}
	w := &avroWalker{root: root, reg: cfg.Registry, local: map[int32]avro.Schema{}}
	w.plans.retryAfter = retryAfterFor(cfg.RetryAfter, cfg.Registry)
	for _, l := range cfg.Local {
		if len(l.Files) == 0 {
			return nil, fmt.Errorf("%w: avro: local schema %d has no file", ErrSchema, l.ID)
		}
		s, err := avro.ParseFiles(l.Files...)
		if err != nil {
			return nil, fmt.Errorf("%w: avro: %v: %v", ErrSchema, l.Files, err)
		}
		if _, err := compileAvro(s, root, false); err != nil {
			return nil, err
		}
		w.local[l.ID] = s
	}
	return w, nil
}

// CheckAvro reports whether paths may be encrypted in schema: every path
// must resolve (else an error wrapping ErrPathNotFound) to a string or bytes
// field, or a union of null with string and/or bytes, without a logical type
// (else a *FieldTypeError naming the path and the type).
func CheckAvro(schema avro.Schema, paths []string) error {
	root, _, err := compilePaths(paths)
	if err != nil {
		return err
	}
	_, err = compileAvro(schema, root, true)
	return err
}

// ParseAvroRegistrySchema parses an Avro schema from the registry, resolving
// its references (named types defined in other subjects) through reg.
func ParseAvroRegistrySchema(reg *Registry, s sr.Schema) (avro.Schema, error) {
	if s.Type != sr.TypeAvro {
		return nil, fmt.Errorf("%w: schema type is %v, want AVRO", ErrSchema, s.Type)
	}
	cache := &avro.SchemaCache{}
	seen := map[refKey]bool{}
	var addRefs func(refs []sr.SchemaReference, depth int) error
	addRefs = func(refs []sr.SchemaReference, depth int) error {
		if depth > 32 {
			return fmt.Errorf("%w: avro: references nested too deep", ErrSchema)
		}
		for _, ref := range refs {
			k := refKey{ref.Subject, ref.Version}
			if seen[k] {
				continue
			}
			seen[k] = true
			if reg == nil {
				return fmt.Errorf("%w: avro: reference %s needs a registry", ErrSchema, ref.Name)
			}
			rs, err := reg.SchemaByReference(ref)
			if err != nil {
				return err
			}
			if err := addRefs(rs.References, depth+1); err != nil {
				return err
			}
			if _, err := avro.ParseWithCache(rs.Schema, "", cache); err != nil {
				return fmt.Errorf("%w: avro: reference %s: %v", ErrSchema, ref.Name, err)
			}
		}
		return nil
	}
	if err := addRefs(s.References, 0); err != nil {
		return nil, err
	}
	out, err := avro.ParseWithCache(s.Schema, "", cache)
	if err != nil {
		return nil, fmt.Errorf("%w: avro: %v", ErrSchema, err)
	}
	return out, nil
}

func (w *avroWalker) plan(id int32) (*aPlan, error) {
	return w.plans.get(id, func() (*aPlan, error) {
		s, ok := w.local[id]
		if !ok {
			if w.reg == nil {
				return nil, fmt.Errorf("%w: avro: unknown schema id %d", ErrSchema, id)
			}
			rs, err := w.reg.SchemaByID(int(id))
			if err != nil {
				return nil, err
			}
			if s, err = ParseAvroRegistrySchema(w.reg, rs); err != nil {
				return nil, fmt.Errorf("schema id %d: %w", id, err)
			}
		}
		p, err := compileAvro(s, w.root, false)
		if err != nil {
			return nil, fmt.Errorf("schema id %d: %w", id, err)
		}
		return p, nil
	})
}

func (w *avroWalker) Seal(dst, value []byte, fn SealFunc) ([]byte, error) {
	return w.run(dst, value, fn, nil)
}

func (w *avroWalker) Open(dst, value []byte, fn OpenFunc) ([]byte, error) {
	return w.run(dst, value, nil, fn)
}

func (w *avroWalker) run(dst, value []byte, seal SealFunc, open OpenFunc) ([]byte, error) {
	id, _, _, err := ParseWire(value, false)
	if err != nil {
		return dst, err
	}
	p, err := w.plan(id)
	if err != nil {
		return dst, err
	}
	if p == nil { // no configured path in this schema
		return append(dst, value...), nil
	}
	a := awalkPool.Get().(*awalk)
	defer func() {
		a.src, a.out, a.seal, a.open = nil, nil, nil, nil
		if cap(a.scratch) > 64<<10 {
			a.scratch = nil
		}
		awalkPool.Put(a)
	}()
	a.src, a.out, a.last, a.seal, a.open, a.budget = value, dst, 0, seal, open, len(value)+1<<16
	a.path.b = append(a.path.b[:0], '$')
	end, err := a.walk(p, 5)
	if err != nil {
		return dst, err
	}
	if end != len(value) {
		return dst, malformed("avro: %d trailing bytes", len(value)-end)
	}
	return append(a.out, value[a.last:]...), nil
}

// ---- schema model ----

type akind uint8

const (
	aNull akind = iota
	aBool
	aInt
	aLong
	aFloat
	aDouble
	aBytes
	aString
	aRecord
	aEnum
	aArray
	aMap
	aUnion
	aFixed
)

type aType struct {
	kind     akind
	name     string // short type name for messages
	logical  string
	fields   []aField
	items    *aType // array items, map values
	branches []*aType
	size     int // fixed
}

type aField struct {
	name string
	t    *aType
}

func convertAvro(s avro.Schema, named map[string]*aType) (*aType, error) {
	switch s := s.(type) {
	case *avro.RefSchema:
		return convertAvro(s.Schema(), named)
	case *avro.RecordSchema:
		if t := named[s.FullName()]; t != nil {
			return t, nil
		}
		t := &aType{kind: aRecord, name: s.FullName()}
		named[s.FullName()] = t
		for _, f := range s.Fields() {
			ft, err := convertAvro(f.Type(), named)
			if err != nil {
				return nil, err
			}
			t.fields = append(t.fields, aField{name: f.Name(), t: ft})
		}
		return t, nil
	case *avro.EnumSchema:
		return &aType{kind: aEnum, name: s.FullName()}, nil
	case *avro.FixedSchema:
		return &aType{kind: aFixed, name: s.FullName(), size: s.Size()}, nil
	case *avro.ArraySchema:
		it, err := convertAvro(s.Items(), named)
		if err != nil {
			return nil, err
		}
		return &aType{kind: aArray, name: "array<" + it.name + ">", items: it}, nil
	case *avro.MapSchema:
		it, err := convertAvro(s.Values(), named)
		if err != nil {
			return nil, err
		}
		return &aType{kind: aMap, name: "map<" + it.name + ">", items: it}, nil
	case *avro.UnionSchema:
		t := &aType{kind: aUnion}
		var names []string
		for _, b := range s.Types() {
			bt, err := convertAvro(b, named)
			if err != nil {
				return nil, err
			}
			t.branches = append(t.branches, bt)
			names = append(names, bt.name)
		}
		t.name = "[" + strings.Join(names, ",") + "]"
		return t, nil
	case *avro.NullSchema:
		return &aType{kind: aNull, name: "null"}, nil
	case *avro.PrimitiveSchema:
		t := &aType{name: string(s.Type())}
		switch s.Type() {
		case avro.Boolean:
			t.kind = aBool
		case avro.Int:
			t.kind = aInt
		case avro.Long:
			t.kind = aLong
		case avro.Float:
			t.kind = aFloat
		case avro.Double:
			t.kind = aDouble
		case avro.Bytes:
			t.kind = aBytes
		case avro.String:
			t.kind = aString
		default:
			return nil, fmt.Errorf("%w: avro: unsupported primitive %s", ErrSchema, s.Type())
		}
		if l := s.Logical(); l != nil {
			t.logical = string(l.Type())
			t.name += " (logicalType " + t.logical + ")"
		}
		return t, nil
	}
	return nil, fmt.Errorf("%w: avro: unsupported schema %T", ErrSchema, s)
}

// aPlan is the compiled walk of one trie node over one schema type.
type aPlan struct {
	t        *aType
	n        *pnode
	leaf     bool
	fields   []*aPlan       // record: per field, nil = skip
	elemAny  *aPlan         // array/map [*]
	elemIdx  map[int]*aPlan // array/map [n]
	branches []*aPlan       // union: per branch, nil = skip
}

func (p *aPlan) elem(i int) *aPlan {
	if p.elemIdx != nil {
		if c := p.elemIdx[i]; c != nil {
			return c
		}
	}
	return p.elemAny
}

func leafAllowed(t *aType) bool {
	switch t.kind {
	case aString, aBytes:
		return t.logical == ""
	case aUnion:
		some := false
		for _, b := range t.branches {
			switch {
			case b.kind == aNull:
			case (b.kind == aString || b.kind == aBytes) && b.logical == "":
				some = true
			default:
				return false
			}
		}
		return some
	}
	return false
}

// compileAvro builds the walk plan; nil plan means no path resolves. With
// strict, a path that resolves nowhere is an error.
func compileAvro(s avro.Schema, root *pnode, strict bool) (*aPlan, error) {
	t, err := convertAvro(s, map[string]*aType{})
	if err != nil {
		return nil, err
	}
	found := map[*pnode]bool{}
	p, err := compileAPlan(t, root, found, 0)
	if err != nil {
		return nil, err
	}
	if strict {
		if err := checkFound(root, found); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func checkFound(n *pnode, found map[*pnode]bool) error {
	if n.leaf {
		if !found[n] {
			return fmt.Errorf("%w: %s", ErrPathNotFound, n.config)
		}
		return nil
	}
	for _, k := range sortedKeys(n.keys) {
		if err := checkFound(n.keys[k], found); err != nil {
			return err
		}
	}
	for _, c := range n.idx {
		if err := checkFound(c, found); err != nil {
			return err
		}
	}
	if n.any != nil {
		return checkFound(n.any, found)
	}
	return nil
}

func compileAPlan(t *aType, n *pnode, found map[*pnode]bool, depth int) (*aPlan, error) {
	if depth > 256 {
		return nil, fmt.Errorf("%w: avro: schema/path too deep", ErrSchema)
	}
	if n.leaf {
		if !leafAllowed(t) {
			reason := "must be string or bytes, or a union of null with them"
			if t.logical != "" {
				reason = "logical types cannot be encrypted (readers would reject the ciphertext)"
			}
			return nil, &FieldTypeError{Path: n.config, Type: t.name, Reason: reason}
		}
		found[n] = true
		return &aPlan{t: t, n: n, leaf: true}, nil
	}
	p := &aPlan{t: t, n: n}
	any := false
	switch t.kind {
	case aRecord:
		if len(n.keys) == 0 {
			return nil, nil
		}
		p.fields = make([]*aPlan, len(t.fields))
		for i, f := range t.fields {
			if c := n.key(f.name); c != nil {
				cp, err := compileAPlan(f.t, c, found, depth+1)
				if err != nil {
					return nil, err
				}
				p.fields[i] = cp
				any = any || cp != nil
			}
		}
	case aArray, aMap:
		if n.any != nil {
			cp, err := compileAPlan(t.items, n.any, found, depth+1)
			if err != nil {
				return nil, err
			}
			p.elemAny = cp
			any = cp != nil
		}
		for i, c := range n.idx {
			cp, err := compileAPlan(t.items, c, found, depth+1)
			if err != nil {
				return nil, err
			}
			if cp != nil {
				if p.elemIdx == nil {
					p.elemIdx = map[int]*aPlan{}
				}
				p.elemIdx[i] = cp
				any = true
			}
		}
	case aUnion:
		p.branches = make([]*aPlan, len(t.branches))
		for i, b := range t.branches {
			cp, err := compileAPlan(b, n, found, depth+1)
			if err != nil {
				return nil, err
			}
			p.branches[i] = cp
			any = any || cp != nil
		}
	}
	if !any {
		return nil, nil
	}
	return p, nil
}

// ---- binary walk ----

var awalkPool = sync.Pool{New: func() any { return &awalk{path: pathBuf{b: make([]byte, 0, 64)}} }}

type awalk struct {
	src     []byte
	out     []byte
	last    int
	path    pathBuf
	seal    SealFunc
	open    OpenFunc
	budget  int
	scratch []byte
}

func readLong(src []byte, i int) (int64, int, error) {
	if i >= len(src) {
		return 0, i, malformed("avro: unexpected end of data at offset %d", i)
	}
	v, k := binary.Varint(src[i:])
	if k <= 0 {
		return 0, i, malformed("avro: bad varint at offset %d", i)
	}
	return v, i + k, nil
}

func span(src []byte, i int) (int, int, error) {
	n, j, err := readLong(src, i)
	if err != nil {
		return 0, 0, err
	}
	if n < 0 || n > int64(len(src)-j) {
		return 0, 0, malformed("avro: bad length %d at offset %d", n, i)
	}
	return j, j + int(n), nil
}

func (a *awalk) skip(t *aType, i int, depth int) (int, error) {
	if depth > maxDepth {
		return i, malformed("avro: nesting deeper than %d", maxDepth)
	}
	src := a.src
	switch t.kind {
	case aNull:
		return i, nil
	case aBool:
		if i >= len(src) {
			return i, malformed("avro: unexpected end of data")
		}
		return i + 1, nil
	case aInt, aLong, aEnum:
		_, j, err := readLong(src, i)
		return j, err
	case aFloat, aDouble, aFixed:
		n := 4
		if t.kind == aDouble {
			n = 8
		} else if t.kind == aFixed {
			n = t.size
		}
		if len(src)-i < n {
			return i, malformed("avro: unexpected end of data")
		}
		return i + n, nil
	case aBytes, aString:
		_, e, err := span(src, i)
		return e, err
	case aRecord:
		var err error
		for _, f := range t.fields {
			if i, err = a.skip(f.t, i, depth+1); err != nil {
				return i, err
			}
		}
		return i, nil
	case aUnion:
		b, j, err := readLong(src, i)
		if err != nil {
			return j, err
		}
		if b < 0 || b >= int64(len(t.branches)) {
			return j, malformed("avro: union index %d out of range at offset %d", b, i)
		}
		return a.skip(t.branches[b], j, depth+1)
	case aArray, aMap:
		for {
			cnt, j, err := readLong(src, i)
			if err != nil {
				return j, err
			}
			i = j
			if cnt == 0 {
				return i, nil
			}
			if cnt < 0 {
				if cnt == math.MinInt64 {
					return i, malformed("avro: bad block count")
				}
				_, e, err := span(src, i) // byte size then items: skip them all
				if err != nil {
					return e, err
				}
				i = e
				continue
			}
			for ; cnt > 0; cnt-- {
				if a.budget--; a.budget < 0 {
					return i, malformed("avro: too many array/map items")
				}
				if t.kind == aMap {
					if _, i, err = span(src, i); err != nil {
						return i, err
					}
				}
				if i, err = a.skip(t.items, i, depth+1); err != nil {
					return i, err
				}
			}
		}
	}
	return i, malformed("avro: unknown type")
}

func (a *awalk) walk(p *aPlan, i int) (int, error) {
	src := a.src
	t := p.t
	if p.leaf {
		return a.leaf(p, i)
	}
	var err error
	switch t.kind {
	case aRecord:
		for k, f := range t.fields {
			if fp := p.fields[k]; fp != nil {
				mark := a.path.push(fp.n, 0)
				i, err = a.walk(fp, i)
				a.path.pop(mark)
			} else {
				i, err = a.skip(f.t, i, 0)
			}
			if err != nil {
				return i, err
			}
		}
		return i, nil
	case aUnion:
		b, j, err := readLong(src, i)
		if err != nil {
			return j, err
		}
		if b < 0 || b >= int64(len(t.branches)) {
			return j, malformed("avro: union index %d out of range at offset %d", b, i)
		}
		if bp := p.branches[b]; bp != nil {
			return a.walk(bp, j)
		}
		return a.skip(t.branches[b], j, 0)
	case aArray, aMap:
		pos := 0
		for {
			hs := i
			cnt, j, err := readLong(src, i)
			if err != nil {
				return j, err
			}
			i = j
			if cnt == 0 {
				return i, nil
			}
			sized := cnt < 0
			cntEnd, itemsStart := i, i
			var oldSize int64
			mark := 0
			if sized {
				if cnt == math.MinInt64 {
					return i, malformed("avro: bad block count")
				}
				cnt = -cnt
				if oldSize, itemsStart, err = readLong(src, i); err != nil {
					return i, err
				}
				if oldSize < 0 || oldSize > int64(len(src)-itemsStart) {
					return i, malformed("avro: bad block size %d", oldSize)
				}
				// the size is rewritten after the block: drop the header
				a.out = append(a.out, src[a.last:hs]...)
				mark = len(a.out)
				i = itemsStart
				a.last = i
			}
			for ; cnt > 0; cnt-- {
				if a.budget--; a.budget < 0 {
					return i, malformed("avro: too many array/map items")
				}
				if t.kind == aMap {
					if _, i, err = span(src, i); err != nil {
						return i, err
					}
				}
				if ep := p.elem(pos); ep != nil {
					m := a.path.push(ep.n, pos)
					i, err = a.walk(ep, i)
					a.path.pop(m)
				} else {
					i, err = a.skip(t.items, i, 0)
				}
				if err != nil {
					return i, err
				}
				pos++
			}
			if sized {
				if int64(i-itemsStart) != oldSize {
					return i, malformed("avro: block size %d, items take %d bytes", oldSize, i-itemsStart)
				}
				a.out = append(a.out, src[a.last:i]...)
				a.last = i
				if newSize := len(a.out) - mark; int64(newSize) == oldSize {
					a.out = insertAt(a.out, mark, src[hs:itemsStart]) // unchanged: verbatim
				} else {
					// the count bytes are kept verbatim, the size is re-encoded
					var hdr [2 * binary.MaxVarintLen64]byte
					h := append(hdr[:0], src[hs:cntEnd]...)
					h = binary.AppendVarint(h, int64(newSize))
					a.out = insertAt(a.out, mark, h)
				}
			}
		}
	}
	return a.skip(t, i, 0)
}

func (a *awalk) leaf(p *aPlan, i int) (int, error) {
	src := a.src
	t := p.t
	if t.kind == aUnion {
		b, j, err := readLong(src, i)
		if err != nil {
			return j, err
		}
		if b < 0 || b >= int64(len(t.branches)) {
			return j, malformed("avro: union index %d out of range at offset %d", b, i)
		}
		t = t.branches[b]
		i = j
		if t.kind == aNull {
			return i, nil
		}
	}
	start := i
	cs, ce, err := span(src, i)
	if err != nil {
		return i, err
	}
	path := a.path.of(p.n)
	content := src[cs:ce]
	var rep []byte
	if a.seal != nil {
		ct, err := a.seal(path, content)
		if err != nil {
			return i, &callbackError{path: path, err: err}
		}
		rep = ct
		if t.kind == aString {
			a.scratch = base64.StdEncoding.AppendEncode(a.scratch[:0], ct)
			rep = a.scratch
		}
	} else {
		ct := content
		if t.kind == aString {
			a.scratch, err = base64.StdEncoding.AppendDecode(a.scratch[:0], content)
			if err != nil {
				return i, notSealed(path, "avro: string is not base64")
			}
			ct = a.scratch
		}
		if len(ct) == 0 {
			return i, notSealed(path, "avro: empty")
		}
		pt, err := a.open(path, ct)
		if err != nil {
			return i, &callbackError{path: path, err: err}
		}
		rep = pt
	}
	a.out = append(a.out, src[a.last:start]...)
	a.out = binary.AppendVarint(a.out, int64(len(rep)))
	a.out = append(a.out, rep...)
	a.last = ce
	return ce, nil
}
