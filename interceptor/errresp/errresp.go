// Package errresp builds the error response a broker would send to refuse a
// request, for any Kafka API kmsg knows (the interceptors' denials, Strait's
// own refusals). It lives apart from the interceptor contract: it is
// reflection over kmsg's structs, and the contract should fit on one screen.
package errresp

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// refusedMessage is what For puts in ErrorMessage fields.
const refusedMessage = "refused by proxy policy"

// For builds the response a broker refusing req would send: the
// response kind of req at req's version, with every item of the request
// (topic, partition, group, resource, ...) answered with code.
//
// It is the generic fallback for interceptors that deny requests, and works by
// mirroring the request into the response with reflection:
//
//   - an int16 field named ErrorCode gets code, at every level;
//   - an ErrorMessage field (*string) gets a short fixed message;
//   - a scalar field (integer, bool, string, *string, UUID) is copied from
//     the request field of the same name and type at the same level, so
//     Topic, TopicID, Partition, Group, ResourceName, ... identify the item;
//   - a slice of structs gets one element per element of the request slice
//     of the same name, mirrored recursively. A request list of scalars
//     ([]int32 Partitions, []string Groups) becomes one element per value,
//     the value going to the element's field named after the list
//     (Partitions→Partition) or, failing that, its first field of that type
//     (CoordinatorKeys→Key). A few lists are renamed between request and
//     response (see sliceSources).
//
// Limits: only response lists whose elements carry an ErrorCode (or are
// pure keys such as AlterClientQuotas' Entity) are mirrored; other lists stay
// empty and other fields keep kmsg's defaults. Copied non-identifying values
// (ListOffsets' Timestamp) are echoed as the client sent them; clients ignore
// them when the item has an error code. Nested non-list structs are left at
// their defaults. The response is what a broker would say to an unauthorized
// client in shape, not in every detail. Reflection and the check below (an
// encode and a decode) make it slow next to hand-written code: it is meant
// for denials, not for every request.
//
// For returns an error when the response would carry code nowhere
// at req's version (for example Metadata below v13 asking for all topics:
// there is no item to put the code on and no top-level error code), when
// code is 0, and for Produce with acks=0, which has no response. The caller
// should then close the connection, as a broker does.
func For(req kmsg.Request, code int16) (kmsg.Response, error) {
	name := kmsg.NameForKey(req.Key())
	if code == 0 {
		return nil, fmt.Errorf("%s: error code 0 (NONE) refuses nothing", name)
	}
	if p, ok := req.(*kmsg.ProduceRequest); ok && p.Acks == 0 {
		return nil, fmt.Errorf("%s: acks=0 has no response to carry an error", name)
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	m := mirror{code: code}
	m.fill(reflect.ValueOf(resp).Elem(), reflect.ValueOf(req).Elem())
	ok, err := carriesCode(resp, code)
	if err != nil {
		return nil, fmt.Errorf("%s v%d: %w", name, req.GetVersion(), err)
	}
	if !ok {
		return nil, fmt.Errorf("%s v%d: no field of the response carries an error code for this request", name, req.GetVersion())
	}
	return resp, nil
}

// sliceSources names, per response list, the request lists it answers when
// the request has no non-empty list of the same name. "A.B" gathers the B
// lists of every element of A. All named lists present are concatenated.
var sliceSources = map[string][]string{
	"Topics":            {"TopicNames", "Dirs.Topics"}, // DeleteTopics v0-5, AlterReplicaLogDirs
	"Coordinators":      {"CoordinatorKeys"},           // FindCoordinator v4+
	"Groups":            {"GroupIDs"},                  // ShareGroupDescribe
	"TransactionStates": {"TransactionalIDs"},          // DescribeTransactions
	"Results": {"Creations", "Filters", "Users", "Deletions", "Upsertions", // ACLs, SCRAM
		"FeatureUpdates"}, // UpdateFeatures
}

// scalarSources names request fields that fill a response field of another
// name (DescribeUserSCRAMCredentials: Users[].Name → Results[].User).
var scalarSources = map[string]string{"User": "Name"}

var stringPtrType = reflect.TypeFor[*string]()

type mirror struct{ code int16 }

// fill mirrors the request struct src (invalid if there is none) into the
// response struct dst.
func (m mirror) fill(dst, src reflect.Value) {
	t := dst.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		d := dst.Field(i)
		if !f.IsExported() || f.Name == "Version" {
			continue
		}
		switch {
		case f.Name == "ErrorCode" && f.Type.Kind() == reflect.Int16:
			d.SetInt(int64(m.code))
		case f.Name == "ErrorMessage" && f.Type == stringPtrType:
			msg := refusedMessage
			d.Set(reflect.ValueOf(&msg))
		case isStructSlice(f.Type):
			m.fillSlice(d, f.Name, src)
		case isScalar(f.Type):
			sf := field(src, f.Name)
			if !sf.IsValid() {
				sf = field(src, scalarSources[f.Name])
			}
			setScalar(d, sf)
		}
	}
}

// fillSlice builds the response list d, named name, from the request struct
// src.
func (m mirror) fillSlice(d reflect.Value, name string, src reflect.Value) {
	var items []item
	if s := field(src, name); s.Kind() == reflect.Slice && s.Len() > 0 {
		items = gather(src, []string{name})
	} else {
		for _, path := range sliceSources[name] {
			items = append(items, gather(src, strings.Split(path, "."))...)
		}
	}
	if len(items) == 0 {
		return
	}
	et := d.Type().Elem()
	if !hasErrorCode(et) && !isKeyOf(et, items[0].v) {
		return
	}
	out := reflect.MakeSlice(d.Type(), len(items), len(items))
	for i, it := range items {
		e := out.Index(i)
		if def, ok := e.Addr().Interface().(interface{ Default() }); ok {
			def.Default()
		}
		if it.v.Kind() == reflect.Struct {
			m.fill(e, it.v)
		} else {
			m.fill(e, reflect.Value{})
			setScalar(keyField(e, it.list, it.v.Type()), it.v)
		}
	}
	d.Set(out)
}

// item is one element of a request list, and the list's name.
type item struct {
	v    reflect.Value
	list string
}

// gather returns the elements of the list at path under v, flattening
// intermediate lists.
func gather(v reflect.Value, path []string) []item {
	s := field(v, path[0])
	if s.Kind() != reflect.Slice || (len(path) > 1 && !isStructSlice(s.Type())) {
		return nil
	}
	var out []item
	for i := range s.Len() {
		if len(path) == 1 {
			out = append(out, item{s.Index(i), path[0]})
		} else {
			out = append(out, gather(s.Index(i), path[1:])...)
		}
	}
	return out
}

// keyField picks the field of the response element e that takes a value of
// type t from the request list name: the field named after the list
// (Partitions→Partition, GroupIDs→GroupID), else the first field of type t or
// *t other than ErrorMessage (CoordinatorKeys→Key, TopicNames→Topic).
func keyField(e reflect.Value, list string, t reflect.Type) reflect.Value {
	fits := func(ft reflect.Type) bool { return ft == t || (ft.Kind() == reflect.Pointer && ft.Elem() == t) }
	if f, ok := e.Type().FieldByName(strings.TrimSuffix(list, "s")); ok && fits(f.Type) {
		return e.FieldByIndex(f.Index)
	}
	for i := range e.NumField() {
		if f := e.Type().Field(i); f.IsExported() && f.Name != "ErrorMessage" && fits(f.Type) {
			return e.Field(i)
		}
	}
	return reflect.Value{}
}

// field returns the field name of struct v, or an invalid Value.
func field(v reflect.Value, name string) reflect.Value {
	if !v.IsValid() || v.Kind() != reflect.Struct || name == "" {
		return reflect.Value{}
	}
	return v.FieldByName(name)
}

// setScalar copies src into dst when their types agree, converting between
// string and *string (DeleteTopics' names are nullable from v6 on). Pointers
// are copied to fresh memory so the response never aliases the request.
func setScalar(dst, src reflect.Value) {
	if !dst.IsValid() || !src.IsValid() {
		return
	}
	switch {
	case src.Type() == dst.Type() && dst.Kind() == reflect.Pointer:
		if !src.IsNil() {
			p := reflect.New(dst.Type().Elem())
			p.Elem().Set(src.Elem())
			dst.Set(p)
		}
	case src.Type() == dst.Type():
		dst.Set(src)
	case dst.Kind() == reflect.Pointer && dst.Type().Elem() == src.Type():
		p := reflect.New(src.Type())
		p.Elem().Set(src)
		dst.Set(p)
	case src.Kind() == reflect.Pointer && src.Type().Elem() == dst.Type():
		if !src.IsNil() {
			dst.Set(src.Elem())
		}
	}
}

// isScalar reports whether t is a value the mirror copies: numbers, bools,
// strings, *string and fixed arrays (UUIDs). Byte slices (records, SASL
// bytes) are never echoed.
func isScalar(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.String, reflect.Array:
		return true
	case reflect.Pointer:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

func isStructSlice(t reflect.Type) bool {
	return t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct
}

// hasErrorCode reports whether struct type t, or a list within it, has an
// ErrorCode field.
func hasErrorCode(t reflect.Type) bool {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Name == "ErrorCode" && f.Type.Kind() == reflect.Int16 {
			return true
		}
		if isStructSlice(f.Type) && hasErrorCode(f.Type.Elem()) {
			return true
		}
	}
	return false
}

// isKeyOf reports whether every field of the response element type t is a
// scalar found under the same name and type in the request element item:
// such lists identify the item (AlterClientQuotas' Entity) and are mirrored
// although they carry no error code.
func isKeyOf(t reflect.Type, item reflect.Value) bool {
	if item.Kind() != reflect.Struct {
		return false
	}
	n := 0
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Name == "UnknownTags" {
			continue
		}
		sf, ok := item.Type().FieldByName(f.Name)
		if !ok || sf.Type != f.Type || !isScalar(f.Type) {
			return false
		}
		n++
	}
	return n > 0
}

// carriesCode encodes resp at its version, decodes it again and reports
// whether some ErrorCode field holds code: fields the version does not have
// are dropped on the wire, so only the round trip tells.
func carriesCode(resp kmsg.Response, code int16) (ok bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("encoding the response: %v", r)
		}
	}()
	back := resp.RequestKind().ResponseKind()
	back.SetVersion(resp.GetVersion())
	if err := back.ReadFrom(resp.AppendTo(nil)); err != nil {
		return false, fmt.Errorf("decoding the response: %w", err)
	}
	return codeIn(back, code), nil
}

// codeIn reports whether some int16 field named ErrorCode, at any depth of
// the kmsg message msg, holds code.
func codeIn(msg any, code int16) bool {
	return hasCode(reflect.ValueOf(msg), code)
}

func hasCode(v reflect.Value, code int16) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		return !v.IsNil() && hasCode(v.Elem(), code)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.Struct {
			return false
		}
		for i := range v.Len() {
			if hasCode(v.Index(i), code) {
				return true
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			if f.Name == "ErrorCode" && f.Type.Kind() == reflect.Int16 {
				if v.Field(i).Int() == int64(code) {
					return true
				}
				continue
			}
			if hasCode(v.Field(i), code) {
				return true
			}
		}
	}
	return false
}
