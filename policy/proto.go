package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/strait-proxy/strait/crypto/fields"
)

// Protobuf values are read and rewritten through their descriptors
// (dynamicpb): a field inside a nested message changes the length of every
// enclosing message, which an in-place splice cannot know. The policy
// reads the value as its canonical JSON (protojson, proto field names),
// so the JSON paths, extraction and caching apply unchanged.

func protoMessage(tf *TopicFields, value []byte) (*dynamicpb.Message, int32, []int, error) {
	id, idx, payload, err := fields.ParseWire(value, true)
	if err != nil {
		return nil, 0, nil, err
	}
	fd, err := tf.ProtoFile(id)
	if err != nil {
		return nil, 0, nil, err
	}
	md, err := fields.MessageByIndexes(fd, idx)
	if err != nil {
		return nil, 0, nil, err
	}
	m := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(payload, m); err != nil {
		return nil, 0, nil, fmt.Errorf("%w: protobuf: %v", fields.ErrMalformed, err)
	}
	return m, id, idx, nil
}

var pjson = protojson.MarshalOptions{UseProtoNames: true}

// protoJSON is the value as the policy reads it.
func protoJSON(tf *TopicFields, value []byte) ([]byte, error) {
	m, _, _, err := protoMessage(tf, value)
	if err != nil {
		return nil, err
	}
	return pjson.Marshal(m)
}

// pseg is a segment of a rewrite path: a field name, an index, or any (*).
type pseg struct {
	name string
	idx  int // -1: a name; -2: [*]
}

// splitPath parses the canonical form of a fields path.
func splitPath(p string) ([]pseg, error) {
	fp, err := fields.ParsePath(p)
	if err != nil {
		return nil, err
	}
	s := fp.String()[1:]
	var out []pseg
	for len(s) > 0 {
		switch {
		case s[0] == '.':
			j := strings.IndexAny(s[1:], ".[")
			if j < 0 {
				j = len(s) - 1
			}
			out = append(out, pseg{name: s[1 : 1+j], idx: -1})
			s = s[1+j:]
		case strings.HasPrefix(s, "[*]"):
			out = append(out, pseg{idx: -2})
			s = s[3:]
		case strings.HasPrefix(s, `["`):
			end := strings.Index(s, `"]`)
			for end > 0 && s[end-1] == '\\' {
				end = strings.Index(s[end+1:], `"]`) + end + 1
			}
			var name string
			if end < 0 || json.Unmarshal([]byte(s[1:end+1]), &name) != nil {
				return nil, fmt.Errorf("bad path %s", p)
			}
			out = append(out, pseg{name: name, idx: -1})
			s = s[end+2:]
		case s[0] == '[':
			end := strings.IndexByte(s, ']')
			n, err := strconv.Atoi(s[1:end])
			if err != nil {
				return nil, fmt.Errorf("bad path %s", p)
			}
			out = append(out, pseg{idx: n})
			s = s[end+1:]
		default:
			return nil, fmt.Errorf("bad path %s", p)
		}
	}
	return out, nil
}

// applyProto rewrites a Protobuf value by decision d.
func (ap *applier) applyProto(d *decision, value []byte, stillEncrypted bool, c *counts) ([]byte, bool, error) {
	m, id, idx, err := protoMessage(d.tf, value)
	if err != nil {
		return nil, false, err
	}
	var n counts
	changed := false
	for _, g := range d.groups {
		for _, p := range g.paths {
			segs, err := splitPath(p)
			if err != nil {
				return nil, false, err
			}
			ch, err := ap.protoVisit(m, segs, g.act, stillEncrypted, &n)
			if err != nil {
				return nil, false, err
			}
			changed = changed || ch
		}
	}
	if !changed {
		c.encrypted += n.encrypted
		return value, false, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, false, err
	}
	out := fields.AppendWire(ap.out[:0], id, idx)
	out = append(out, b...)
	ap.out = out
	c.redacted += n.redacted
	c.masked += n.masked
	c.tokenized += n.tokenized
	c.encrypted += n.encrypted
	return out, true, nil
}

// protoVisit applies act to the fields segs selects under m.
func (ap *applier) protoVisit(m protoreflect.Message, segs []pseg, act action, enc bool, n *counts) (bool, error) {
	s := segs[0]
	if s.idx != -1 {
		return false, nil // an index applies to the field before it
	}
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(s.name))
	if fd == nil {
		fd = m.Descriptor().Fields().ByJSONName(s.name)
	}
	if fd == nil || !m.Has(fd) {
		return false, nil
	}
	rest := segs[1:]
	switch {
	case fd.IsList():
		list := m.Mutable(fd).List()
		sel := func(i int) bool { return true }
		if len(rest) > 0 && rest[0].idx != -1 {
			want := rest[0].idx
			sel = func(i int) bool { return want == -2 || i == want }
			rest = rest[1:]
		}
		changed := false
		for i := 0; i < list.Len(); i++ {
			if !sel(i) {
				continue
			}
			if len(rest) > 0 {
				if fd.Kind() != protoreflect.MessageKind {
					continue
				}
				ch, err := ap.protoVisit(list.Get(i).Message(), rest, act, enc, n)
				if err != nil {
					return false, err
				}
				changed = changed || ch
				continue
			}
			v, keep, err := ap.protoScalar(fd, list.Get(i), act, enc, n)
			if err != nil {
				return false, err
			}
			if !keep {
				list.Set(i, v)
				changed = true
			}
		}
		return changed, nil
	case fd.IsMap():
		if len(rest) == 0 {
			if act.kind == kEncrypted && enc {
				n.encrypted++
				return false, nil
			}
			m.Clear(fd) // a whole map: only redaction is meaningful
			n.redacted++
			return true, nil
		}
		mp := m.Mutable(fd).Map()
		if rest[0].idx != -2 {
			return false, nil
		}
		rest = rest[1:]
		changed := false
		var ferr error
		mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			if len(rest) > 0 {
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					ch, err := ap.protoVisit(v.Message(), rest, act, enc, n)
					changed, ferr = changed || ch, err
				}
				return ferr == nil
			}
			nv, keep, err := ap.protoScalar(fd.MapValue(), v, act, enc, n)
			if err != nil {
				ferr = err
				return false
			}
			if !keep {
				mp.Set(k, nv)
				changed = true
			}
			return true
		})
		return changed, ferr
	case len(rest) > 0:
		if fd.Kind() != protoreflect.MessageKind {
			return false, nil
		}
		return ap.protoVisit(m.Mutable(fd).Message(), rest, act, enc, n)
	}
	if act.kind == kEncrypted && enc {
		n.encrypted++
		return false, nil
	}
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		v, keep, err := ap.protoScalar(fd, m.Get(fd), act, enc, n)
		if err != nil || keep {
			return false, err
		}
		if act.kind == kRedact || act.kind == kEncrypted {
			m.Clear(fd) // absent: the field's default
			return true, nil
		}
		m.Set(fd, v)
		return true, nil
	}
	// Other kinds (numbers, enums, messages) cannot hold a mask or a
	// token: they are cleared (fail closed).
	m.Clear(fd)
	n.redacted++
	return true, nil
}

// protoScalar transforms one string or bytes value; keep reports that it
// stays as it is.
func (ap *applier) protoScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value, act action, enc bool, n *counts) (protoreflect.Value, bool, error) {
	if act.kind == kEncrypted && enc {
		n.encrypted++
		return v, true, nil
	}
	var content []byte
	isString := fd.Kind() == protoreflect.StringKind
	switch fd.Kind() {
	case protoreflect.StringKind:
		content = []byte(v.String())
	case protoreflect.BytesKind:
		content = v.Bytes()
	default:
		// an element of a repeated number: zero it (fail closed)
		n.redacted++
		return fd.Default(), false, nil
	}
	var out []byte
	switch act.kind {
	case kRedact, kEncrypted:
		n.redacted++
	case kMask:
		out = mask(nil, content, act)
		n.masked++
	case kTokenize:
		if ap.tok == nil {
			return v, false, errors.New("policy: tokenize needs tokenize.key_env or tokenize.key_file")
		}
		var err error
		if out, err = ap.tok.token(nil, content); err != nil {
			return v, false, fmt.Errorf("policy: tokenize: %w", err)
		}
		n.tokenized++
	default:
		return v, true, nil
	}
	if isString {
		return protoreflect.ValueOfString(string(out)), false, nil
	}
	if out == nil {
		out = []byte{}
	}
	return protoreflect.ValueOfBytes(out), false, nil
}
