package fields

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bufbuild/protocompile"
	"github.com/twmb/franz-go/pkg/sr"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// ProtobufConfig configures NewProtobuf. Local schemas take precedence over
// the registry for their id.
type ProtobufConfig struct {
	// Paths select fields by name ($.a.b); [*] or [n] select occurrences of
	// a repeated field (position among the field's occurrences in the
	// message) or values of a map field (position among its entries).
	Paths []string
	// Registry resolves the schema (Protobuf schema text and its references)
	// by the id in the wire header.
	Registry *Registry
	// Local are schemas from files.
	Local []LocalProtobuf
	// RetryAfter is how long a failed schema lookup/compilation is
	// remembered (default: the registry's RetryAfter, else 1s).
	RetryAfter time.Duration
}

// LocalProtobuf is a schema from a file: either a .proto source file or a
// compiled FileDescriptorSet (protoc --descriptor_set_out --include_imports;
// any other extension than .proto is read as a descriptor set).
type LocalProtobuf struct {
	ID int32
	// File is the .proto file or the descriptor set.
	File string
	// ImportPaths for .proto imports; default: the directory of File (then
	// File's base name is its import name). With ImportPaths set, File is
	// resolved relative to them.
	ImportPaths []string
	// Name selects, in a descriptor set, the file whose messages the wire
	// message indexes refer to (default: the last file of the set).
	Name string
}

type protoWalker struct {
	root  *pnode
	reg   *Registry
	local map[int32]protoreflect.FileDescriptor
	files planCache[*pbFile]
}

type pbFile struct {
	fd    protoreflect.FileDescriptor
	root  *pnode
	plans sync.Map // string(message indexes) -> *pbPlanEntry
}

type pbPlanEntry struct {
	p   *pPlan
	err error
}

// NewProtobuf returns a Walker for Protobuf values in the Confluent wire
// format (magic 0, 4-byte schema id, message-index array, Protobuf binary).
// The message is chosen by the message indexes in the schema's file. Selected
// fields must be string or bytes (CheckProtobuf). Seal replaces a string with
// the standard padded base64 of its ciphertext and bytes with the raw
// ciphertext; enclosing message lengths are recomputed, every other byte
// (other fields, unknown fields, field order) is copied unchanged.
func NewProtobuf(cfg ProtobufConfig) (Walker, error) {
	root, _, err := compilePaths(cfg.Paths)
	if err != nil {
		return nil, err
	}
	if cfg.Registry == nil && len(cfg.Local) == 0 {
		return nil, fmt.Errorf("%w: protobuf: no registry and no local schema", ErrSchema)
	}
	w := &protoWalker{root: root, reg: cfg.Registry, local: map[int32]protoreflect.FileDescriptor{}}
	w.files.retryAfter = retryAfterFor(cfg.RetryAfter, cfg.Registry)
	for _, l := range cfg.Local {
		fd, err := LoadProtobufFile(l)
		if err != nil {
			return nil, err
		}
		w.local[l.ID] = fd
	}
	return w, nil
}

// LoadProtobufFile loads the file descriptor of a local schema.
func LoadProtobufFile(l LocalProtobuf) (protoreflect.FileDescriptor, error) {
	if strings.HasSuffix(l.File, ".proto") {
		ips, name := l.ImportPaths, l.File
		if len(ips) == 0 {
			ips, name = []string{filepath.Dir(l.File)}, filepath.Base(l.File)
		}
		c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: ips})}
		fs, err := c.Compile(context.Background(), name)
		if err != nil {
			return nil, fmt.Errorf("%w: protobuf: %v", ErrSchema, err)
		}
		return fs[0], nil
	}
	b, err := os.ReadFile(l.File)
	if err != nil {
		return nil, fmt.Errorf("%w: protobuf: %v", ErrSchema, err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("%w: protobuf: %s: not a FileDescriptorSet: %v", ErrSchema, l.File, err)
	}
	if len(set.File) == 0 {
		return nil, fmt.Errorf("%w: protobuf: %s: empty descriptor set", ErrSchema, l.File)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("%w: protobuf: %s: %v", ErrSchema, l.File, err)
	}
	name := l.Name
	if name == "" {
		name = set.File[len(set.File)-1].GetName()
	}
	fd, err := files.FindFileByPath(name)
	if err != nil {
		return nil, fmt.Errorf("%w: protobuf: %s: %v", ErrSchema, l.File, err)
	}
	return fd, nil
}

// ParseProtobufRegistrySchema compiles a Protobuf schema from the registry,
// fetching its references (imports named by reference name) through reg.
// Well-known google/protobuf/*.proto imports are built in.
func ParseProtobufRegistrySchema(reg *Registry, s sr.Schema, name string) (protoreflect.FileDescriptor, error) {
	if s.Type != sr.TypeProtobuf {
		return nil, fmt.Errorf("%w: schema type is %v, want PROTOBUF", ErrSchema, s.Type)
	}
	srcs := map[string]string{name: s.Schema}
	var add func(refs []sr.SchemaReference, depth int) error
	add = func(refs []sr.SchemaReference, depth int) error {
		if depth > 32 {
			return fmt.Errorf("%w: protobuf: references nested too deep", ErrSchema)
		}
		for _, ref := range refs {
			if _, ok := srcs[ref.Name]; ok {
				continue
			}
			if reg == nil {
				return fmt.Errorf("%w: protobuf: reference %s needs a registry", ErrSchema, ref.Name)
			}
			rs, err := reg.SchemaByReference(ref)
			if err != nil {
				return err
			}
			srcs[ref.Name] = rs.Schema
			if err := add(rs.References, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := add(s.References, 0); err != nil {
		return nil, err
	}
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
		Accessor: protocompile.SourceAccessorFromMap(srcs),
	})}
	fs, err := c.Compile(context.Background(), name)
	if err != nil {
		return nil, fmt.Errorf("%w: protobuf: %v", ErrSchema, err)
	}
	return fs[0], nil
}

// MessageByIndexes returns the message addressed by Confluent message indexes
// in fd: [i] is the i-th top-level message, [i, j] its j-th nested message...
// As in Confluent's serializers (which count the message elements of the
// schema text), synthesized map-entry messages are not counted.
func MessageByIndexes(fd protoreflect.FileDescriptor, idx []int) (protoreflect.MessageDescriptor, error) {
	if len(idx) == 0 {
		idx = []int{0}
	}
	msgs := fd.Messages()
	var md protoreflect.MessageDescriptor
	for _, i := range idx {
		md = nil
		k := 0
		for j := 0; j < msgs.Len(); j++ {
			m := msgs.Get(j)
			if m.IsMapEntry() {
				continue
			}
			if k == i {
				md = m
				break
			}
			k++
		}
		if md == nil {
			return nil, fmt.Errorf("%w: protobuf: message index %v out of range in %s", ErrSchema, idx, fd.Path())
		}
		msgs = md.Messages()
	}
	return md, nil
}

// CheckProtobuf reports whether paths may be encrypted in message md: every
// path must resolve (else an error wrapping ErrPathNotFound) to a string or
// bytes field (repeated ones and map values through [*] or [n]); any other
// type is a *FieldTypeError naming the path and the type.
func CheckProtobuf(md protoreflect.MessageDescriptor, paths []string) error {
	root, _, err := compilePaths(paths)
	if err != nil {
		return err
	}
	found := map[*pnode]bool{}
	if _, err := compilePPlan(md, root, found, 0); err != nil {
		return err
	}
	return checkFound(root, found)
}

func (w *protoWalker) file(id int32) (*pbFile, error) {
	return w.files.get(id, func() (*pbFile, error) {
		fd, ok := w.local[id]
		if !ok {
			if w.reg == nil {
				return nil, fmt.Errorf("%w: protobuf: unknown schema id %d", ErrSchema, id)
			}
			rs, err := w.reg.SchemaByID(int(id))
			if err != nil {
				return nil, err
			}
			if fd, err = ParseProtobufRegistrySchema(w.reg, rs, "strait-schema-"+strconv.Itoa(int(id))+".proto"); err != nil {
				return nil, fmt.Errorf("schema id %d: %w", id, err)
			}
		}
		return &pbFile{fd: fd, root: w.root}, nil
	})
}

func (f *pbFile) plan(idx []int) (*pPlan, error) {
	var key string
	if len(idx) != 1 || idx[0] != 0 {
		b := make([]byte, 0, 4*len(idx))
		for _, i := range idx {
			b = strconv.AppendInt(b, int64(i), 10)
			b = append(b, ',')
		}
		key = string(b)
	}
	if e, ok := f.plans.Load(key); ok {
		pe := e.(*pbPlanEntry)
		return pe.p, pe.err
	}
	md, err := MessageByIndexes(f.fd, idx)
	pe := &pbPlanEntry{err: err}
	if err == nil {
		pe.p, pe.err = compilePPlan(md, f.root, map[*pnode]bool{}, 0)
		if pe.err != nil {
			pe.err = fmt.Errorf("message %s: %w", md.FullName(), pe.err)
		}
	}
	f.plans.Store(key, pe)
	return pe.p, pe.err
}

func (w *protoWalker) Seal(dst, value []byte, fn SealFunc) ([]byte, error) {
	return w.run(dst, value, fn, nil)
}

func (w *protoWalker) Open(dst, value []byte, fn OpenFunc) ([]byte, error) {
	return w.run(dst, value, nil, fn)
}

func (w *protoWalker) run(dst, value []byte, seal SealFunc, open OpenFunc) ([]byte, error) {
	id, idx, payload, err := ParseWire(value, true)
	if err != nil {
		return dst, err
	}
	f, err := w.file(id)
	if err != nil {
		return dst, err
	}
	p, err := f.plan(idx)
	if err != nil {
		return dst, err
	}
	if p == nil {
		return append(dst, value...), nil
	}
	pw := pwalkPool.Get().(*pwalk)
	defer func() {
		pw.src, pw.out, pw.seal, pw.open = nil, nil, nil, nil
		if cap(pw.scratch) > 64<<10 {
			pw.scratch = nil
		}
		pwalkPool.Put(pw)
	}()
	pw.src, pw.out, pw.last, pw.seal, pw.open = value, dst, 0, seal, open
	pw.path.b = append(pw.path.b[:0], '$')
	start := len(value) - len(payload)
	if err := pw.message(p, start, len(value)); err != nil {
		return dst, err
	}
	return append(pw.out, value[pw.last:]...), nil
}

// ---- plans ----

type pTarget struct {
	n    *pnode
	leaf bool
	str  bool   // leaf: string (base64) rather than bytes
	msg  *pPlan // message (or map entry) to walk into
}

type pField struct {
	num     protowire.Number
	node    *pnode // pushed as path segment; nil for a map entry's value
	list    bool
	single  *pTarget
	elemAny *pTarget
	elemIdx map[int]*pTarget
}

func (f *pField) elem(i int) *pTarget {
	if f.elemIdx != nil {
		if t := f.elemIdx[i]; t != nil {
			return t
		}
	}
	return f.elemAny
}

type pPlan struct {
	fields []*pField
}

func (p *pPlan) field(num protowire.Number) (int, *pField) {
	for i, f := range p.fields {
		if f.num == num {
			return i, f
		}
	}
	return -1, nil
}

func kindName(fd protoreflect.FieldDescriptor) string {
	k := fd.Kind().String()
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		k = string(fd.Message().FullName())
	} else if fd.Kind() == protoreflect.EnumKind {
		k = string(fd.Enum().FullName())
	}
	if fd.IsMap() {
		return "map<" + fd.MapKey().Kind().String() + ", " + kindName(fd.MapValue()) + ">"
	}
	if fd.IsList() {
		return "repeated " + k
	}
	return k
}

// target compiles the value of field fd (one element for lists/maps) at n.
func target(fd protoreflect.FieldDescriptor, n *pnode, found map[*pnode]bool, depth int) (*pTarget, error) {
	if n.leaf {
		switch fd.Kind() {
		case protoreflect.StringKind, protoreflect.BytesKind:
			found[n] = true
			return &pTarget{n: n, leaf: true, str: fd.Kind() == protoreflect.StringKind}, nil
		}
		return nil, &FieldTypeError{Path: n.config, Type: fd.Kind().String() + " (" + string(fd.FullName()) + ")", Reason: "must be string or bytes"}
	}
	if fd.Kind() != protoreflect.MessageKind {
		return nil, nil // path continues below a scalar: not found
	}
	p, err := compilePPlan(fd.Message(), n, found, depth+1)
	if err != nil || p == nil {
		return nil, err
	}
	return &pTarget{n: n, msg: p}, nil
}

func compilePPlan(md protoreflect.MessageDescriptor, n *pnode, found map[*pnode]bool, depth int) (*pPlan, error) {
	if depth > 256 {
		return nil, fmt.Errorf("%w: protobuf: path too deep", ErrSchema)
	}
	p := &pPlan{}
	for _, k := range sortedKeys(n.keys) {
		c := n.keys[k]
		fd := md.Fields().ByName(protoreflect.Name(k))
		if fd == nil {
			continue
		}
		f := &pField{num: fd.Number(), node: c}
		if fd.IsList() || fd.IsMap() {
			f.list = true
			if !c.hasElems() {
				if c.leaf {
					return nil, &FieldTypeError{Path: c.config, Type: kindName(fd), Reason: "select the elements with [*] or [n]"}
				}
				continue
			}
			mk := func(en *pnode) (*pTarget, error) {
				if !fd.IsMap() {
					return target(fd, en, found, depth)
				}
				vt, err := target(fd.MapValue(), en, found, depth)
				if err != nil || vt == nil {
					if err == nil && en.leaf {
						return nil, nil
					}
					return nil, err
				}
				// the entry is a message whose field 2 is the value; the
				// element segment is already pushed.
				entry := &pPlan{fields: []*pField{{num: 2, single: vt}}}
				return &pTarget{n: en, msg: entry}, nil
			}
			if c.any != nil {
				t, err := mk(c.any)
				if err != nil {
					return nil, err
				}
				f.elemAny = t
			}
			for i, en := range c.idx {
				t, err := mk(en)
				if err != nil {
					return nil, err
				}
				if t != nil {
					if f.elemIdx == nil {
						f.elemIdx = map[int]*pTarget{}
					}
					f.elemIdx[i] = t
				}
			}
			if f.elemAny == nil && f.elemIdx == nil {
				continue
			}
		} else {
			if c.hasElems() {
				continue // not a list: [..] does not resolve
			}
			t, err := target(fd, c, found, depth)
			if err != nil {
				return nil, err
			}
			if t == nil {
				continue
			}
			f.single = t
		}
		p.fields = append(p.fields, f)
	}
	if len(p.fields) == 0 {
		return nil, nil
	}
	return p, nil
}

// ---- wire walk ----

var pwalkPool = sync.Pool{New: func() any { return &pwalk{path: pathBuf{b: make([]byte, 0, 64)}} }}

type pwalk struct {
	src     []byte
	out     []byte
	last    int
	path    pathBuf
	seal    SealFunc
	open    OpenFunc
	scratch []byte
}

// message walks the message encoded in src[i:end].
func (w *pwalk) message(p *pPlan, i, end int) error {
	src := w.src[:end]
	var posBuf [8]int
	pos := posBuf[:0]
	if len(p.fields) > len(posBuf) {
		pos = make([]int, 0, len(p.fields))
	}
	pos = pos[:len(p.fields)]
	for i < end {
		num, typ, n := protowire.ConsumeTag(src[i:])
		if n < 0 {
			return malformed("protobuf: bad tag at offset %d: %v", i, protowire.ParseError(n))
		}
		vstart := i + n
		fi, f := p.field(num)
		if f == nil {
			m := protowire.ConsumeFieldValue(num, typ, src[vstart:])
			if m < 0 {
				return malformed("protobuf: bad field %d at offset %d: %v", num, i, protowire.ParseError(m))
			}
			i = vstart + m
			continue
		}
		if typ != protowire.BytesType {
			return malformed("protobuf: field %d has wire type %d, schema says length-delimited", num, typ)
		}
		v, m := protowire.ConsumeBytes(src[vstart:])
		if m < 0 {
			return malformed("protobuf: bad length of field %d at offset %d: %v", num, i, protowire.ParseError(m))
		}
		cend := vstart + m
		cstart := cend - len(v)
		var t *pTarget
		var mark int
		if f.node != nil {
			mark = w.path.push(f.node, 0)
		}
		if f.list {
			k := pos[fi]
			pos[fi]++
			if t = f.elem(k); t != nil {
				m2 := w.path.push(t.n, k)
				err := w.value(t, vstart, cstart, cend)
				w.path.pop(m2)
				if err != nil {
					return err
				}
			}
		} else if err := w.value(f.single, vstart, cstart, cend); err != nil {
			return err
		}
		if f.node != nil {
			w.path.pop(mark)
		}
		i = cend
	}
	return nil
}

// value rewrites one length-delimited value: length varint at lstart,
// content src[cstart:cend].
func (w *pwalk) value(t *pTarget, lstart, cstart, cend int) error {
	src := w.src
	if t.msg != nil {
		w.out = append(w.out, src[w.last:lstart]...)
		mark := len(w.out)
		w.last = cstart
		if err := w.message(t.msg, cstart, cend); err != nil {
			return err
		}
		w.out = append(w.out, src[w.last:cend]...)
		w.last = cend
		var hdr [binaryMaxVarintLen64]byte
		w.out = insertAt(w.out, mark, protowire.AppendVarint(hdr[:0], uint64(len(w.out)-mark)))
		return nil
	}
	path := w.path.of(t.n)
	content := src[cstart:cend]
	var rep []byte
	if w.seal != nil {
		ct, err := w.seal(path, content)
		if err != nil {
			return &callbackError{path: path, err: err}
		}
		rep = ct
		if t.str {
			w.scratch = base64.StdEncoding.AppendEncode(w.scratch[:0], ct)
			rep = w.scratch
		}
	} else {
		ct := content
		if t.str {
			var err error
			w.scratch, err = base64.StdEncoding.AppendDecode(w.scratch[:0], content)
			if err != nil {
				return notSealed(path, "protobuf: string is not base64")
			}
			ct = w.scratch
		}
		if len(ct) == 0 {
			return notSealed(path, "protobuf: empty")
		}
		pt, err := w.open(path, ct)
		if err != nil {
			return &callbackError{path: path, err: err}
		}
		rep = pt
	}
	w.out = append(w.out, src[w.last:lstart]...)
	w.out = protowire.AppendVarint(w.out, uint64(len(rep)))
	w.out = append(w.out, rep...)
	w.last = cend
	return nil
}

const binaryMaxVarintLen64 = 10
