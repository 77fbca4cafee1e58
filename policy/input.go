package policy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"

	"github.com/hamba/avro/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/strait-proxy/strait/crypto/fields"
	"github.com/strait-proxy/strait/interceptor"
	"github.com/strait-proxy/strait/records"
)

// Conn is the connection part of the input document.
type Conn struct {
	Principal  interceptor.Principal
	ClientID   string
	ClientAddr string
	Listener   string
}

// Record is the record part of the input document, for Input.
type Record struct {
	Offset    int64
	Timestamp int64
	Key       []byte
	Headers   map[string][]byte
	Value     []byte
}

// partCtx is what is fixed for one partition of one response.
type partCtx struct {
	conn      *Conn
	op        string // fetch or produce
	topic     string
	partition int32
	ti        *topicInfo
	// items are the input members that do not depend on the record.
	items [][2]*ast.Term
	// key is the cache key prefix: the context values the policy reads.
	key []byte
	// memo, when set, is the deciding run's memo (one per goroutine).
	memo *memo
}

func newPartCtx(rd *reads, c *Conn, op, topic string, partition int32, ti *topicInfo) *partCtx {
	pc := &partCtx{conn: c, op: op, topic: topic, partition: partition, ti: ti}
	p := c.Principal
	attrs := make([][2]*ast.Term, 0, len(p.Attrs))
	for k, v := range p.Attrs {
		attrs = append(attrs, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
	}
	cls, _ := ast.InterfaceToValue(ti.input)
	pc.items = [][2]*ast.Term{
		ast.Item(ast.StringTerm("principal"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("name"), ast.StringTerm(p.Name)),
			ast.Item(ast.StringTerm("mechanism"), ast.StringTerm(p.Mechanism)),
			ast.Item(ast.StringTerm("attrs"), ast.ObjectTerm(attrs...)),
		)),
		ast.Item(ast.StringTerm("client_id"), ast.StringTerm(c.ClientID)),
		ast.Item(ast.StringTerm("client_address"), ast.StringTerm(c.ClientAddr)),
		ast.Item(ast.StringTerm("listener"), ast.StringTerm(c.Listener)),
		ast.Item(ast.StringTerm("topic"), ast.StringTerm(topic)),
		ast.Item(ast.StringTerm("partition"), ast.IntNumberTerm(int(partition))),
		ast.Item(ast.StringTerm("classifications"), ast.NewTerm(cls)),
		ast.Item(ast.StringTerm("operation"), ast.StringTerm(op)),
	}
	// The topic is always in the key: a compiled decision depends on the
	// topic's catalog entry.
	k := appendPart(nil, topic)
	if rd.whole || rd.principal {
		k = appendPart(k, p.Name)
		k = appendPart(k, p.Mechanism)
		if rd.whole || rd.attrs {
			names := make([]string, 0, len(p.Attrs))
			for n := range p.Attrs {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				k = appendPart(appendPart(k, n), p.Attrs[n])
			}
		}
	}
	if rd.whole || rd.clientID {
		k = appendPart(k, c.ClientID)
	}
	if rd.whole || rd.clientAddr {
		k = appendPart(k, c.ClientAddr)
	}
	if rd.whole || rd.listener {
		k = appendPart(k, c.Listener)
	}
	if rd.whole || rd.partition {
		k = binary.AppendVarint(k, int64(partition))
	}
	if rd.whole || rd.operation {
		k = appendPart(k, op)
	}
	pc.key = k
	return pc
}

// appendPart appends a length-prefixed part to a cache key.
func appendPart[S string | []byte](k []byte, s S) []byte {
	k = binary.AppendUvarint(k, uint64(len(s)))
	return append(k, s...)
}

// inputFor builds the input document for one record (rec nil: the
// partition-level input). vals are the raw JSON values of rd.valuePaths
// (nil where absent); the whole value is decoded only if the policy reads
// it as a whole.
func inputFor(rd *reads, pc *partCtx, rec *records.Record, vals [][]byte, readVal []byte) (ast.Value, error) {
	items := make([][2]*ast.Term, len(pc.items), len(pc.items)+6)
	copy(items, pc.items)
	if rec != nil {
		items = append(items,
			ast.Item(ast.StringTerm("offset"), ast.NewTerm(ast.Number(strconv.FormatInt(rec.Offset(), 10)))),
			ast.Item(ast.StringTerm("timestamp"), ast.NewTerm(ast.Number(strconv.FormatInt(rec.Timestamp(), 10)))),
		)
		if rec.Key != nil {
			items = append(items, ast.Item(ast.StringTerm("key"), ast.StringTerm(string(rec.Key))))
		}
		if rd.whole || rd.headers || len(rd.headerNames) > 0 {
			hs := make([][2]*ast.Term, 0, len(rec.Headers))
			for i := range rec.Headers {
				h := &rec.Headers[i]
				if !(rd.whole || rd.headers) && !contains(rd.headerNames, h.Key) {
					continue
				}
				if h.Value == nil {
					hs = append(hs, ast.Item(ast.StringTerm(h.Key), ast.NullTerm()))
				} else {
					hs = append(hs, ast.Item(ast.StringTerm(h.Key), ast.StringTerm(string(h.Value))))
				}
			}
			items = append(items, ast.Item(ast.StringTerm("headers"), ast.ObjectTerm(hs...)))
		}
		if rec.Value != nil {
			switch {
			case (rd.whole || rd.value) && pc.ti.isAvro():
				v, err := avroValue(pc.ti.tf, rec.Value)
				if err != nil {
					return nil, err
				}
				items = append(items, ast.Item(ast.StringTerm("value"), ast.NewTerm(v)))
			case rd.whole || rd.value:
				v, err := jsonValue(readVal)
				if err != nil {
					return nil, err
				}
				items = append(items, ast.Item(ast.StringTerm("value"), ast.NewTerm(v)))
			case len(rd.valuePaths) > 0:
				obj := ast.NewObject()
				for i, p := range rd.parsedPaths {
					if vals[i] == nil {
						continue
					}
					var v ast.Value = ast.String(vals[i]) // avro: string or bytes content
					if !pc.ti.isAvro() {
						var err error
						if v, err = jsonValue(vals[i]); err != nil {
							return nil, err
						}
					}
					setPath(obj, p, v)
				}
				items = append(items, ast.Item(ast.StringTerm("value"), ast.NewTerm(obj)))
			}
		}
	}
	return ast.NewObject(items...), nil
}

func contains(l []string, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

// jsonValue converts one JSON value to an ast.Value, with a fast path for
// the common scalars.
func jsonValue(raw []byte) (ast.Value, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: empty value", fields.ErrMalformed)
	}
	switch c := raw[0]; {
	case c == '"' && len(raw) >= 2 && raw[len(raw)-1] == '"' && bytes.IndexByte(raw, '\\') < 0:
		return ast.String(raw[1 : len(raw)-1]), nil
	case c == '-' || c >= '0' && c <= '9':
		if _, err := strconv.ParseFloat(string(raw), 64); err == nil {
			return ast.Number(raw), nil
		}
	case string(raw) == "true":
		return ast.Boolean(true), nil
	case string(raw) == "false":
		return ast.Boolean(false), nil
	case string(raw) == "null":
		return ast.Null{}, nil
	}
	var x any
	if err := util.UnmarshalJSON(raw, &x); err != nil {
		return nil, fmt.Errorf("%w: %v", fields.ErrMalformed, err)
	}
	return ast.InterfaceToValue(x)
}

// avroValue decodes an Avro value (Confluent wire format) with its writer
// schema.
func avroValue(tf *TopicFields, value []byte) (ast.Value, error) {
	id, _, payload, err := fields.ParseWire(value, false)
	if err != nil {
		return nil, err
	}
	schema, err := tf.AvroSchema(id)
	if err != nil {
		return nil, err
	}
	var x any
	if err := avro.Unmarshal(schema, payload, &x); err != nil {
		return nil, fmt.Errorf("%w: avro: %v", fields.ErrMalformed, err)
	}
	return ast.InterfaceToValue(x)
}

// pathSeg is one segment of a value path the policy reads: a key, or an
// array index (idx >= 0).
type pathSeg struct {
	key string
	idx int
}

// setPath sets obj[segs...] = v, creating objects on the way (an index
// segment becomes a number key, which the ref input.value.a[0] reads the
// same as an array element).
func setPath(obj ast.Object, segs []pathSeg, v ast.Value) {
	cur := obj
	for i, s := range segs {
		var k *ast.Term
		if s.idx >= 0 {
			k = ast.IntNumberTerm(s.idx)
		} else {
			k = ast.StringTerm(s.key)
		}
		if i == len(segs)-1 {
			cur.Insert(k, ast.NewTerm(v))
			return
		}
		next := cur.Get(k)
		if next == nil {
			o := ast.NewObject()
			cur.Insert(k, ast.NewTerm(o))
			cur = o
			continue
		}
		o, ok := next.Value.(ast.Object)
		if !ok {
			return
		}
		cur = o
	}
}

// Input builds the input document of one record as JSON-able Go values
// (for `strait policy eval` and for tests that compare with the
// documentation).
func Input(c Conn, topic string, partition int32, cat *Catalog, r *Record) map[string]any {
	ti := newTopicInfo(cat, topic)
	attrs := map[string]any{}
	for k, v := range c.Principal.Attrs {
		attrs[k] = v
	}
	m := map[string]any{
		"principal":       map[string]any{"name": c.Principal.Name, "mechanism": c.Principal.Mechanism, "attrs": attrs},
		"client_id":       c.ClientID,
		"client_address":  c.ClientAddr,
		"listener":        c.Listener,
		"topic":           topic,
		"partition":       partition,
		"classifications": ti.input,
		"operation":       "fetch",
	}
	if r != nil {
		m["offset"], m["timestamp"] = r.Offset, r.Timestamp
		if r.Key != nil {
			m["key"] = string(r.Key)
		}
		hs := map[string]any{}
		for k, v := range r.Headers {
			if v == nil {
				hs[k] = nil
			} else {
				hs[k] = string(v)
			}
		}
		m["headers"] = hs
		if r.Value != nil {
			var v any
			if err := util.UnmarshalJSON(r.Value, &v); err == nil {
				m["value"] = v
			}
		}
	}
	return m
}
