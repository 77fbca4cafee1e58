package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// checkKeys walks a generic JSON value alongside the struct it will be
// decoded into and reports every unknown key with its path. encoding/json's
// own DisallowUnknownFields stops at the first and does not say where.
func checkKeys(v any, into any, path string) Errors {
	return walkKeys(v, reflect.TypeOf(into), path)
}

var rawMessage = reflect.TypeOf(json.RawMessage(nil))

func walkKeys(v any, t reflect.Type, path string) Errors {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessage {
		return nil // decoded later, strictly, by its owner
	}
	var errs Errors
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil // a type error; the decoder reports it
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f, ok := fields[k]
			if !ok {
				errs = append(errs, fmt.Sprintf("%s: unknown key (known: %s)", join(path, k), strings.Join(sortedKeys(fields), ", ")))
				continue
			}
			errs = append(errs, walkKeys(m[k], f.Type, join(path, k))...)
		}
	case reflect.Slice:
		if l, ok := v.([]any); ok {
			for i, e := range l {
				errs = append(errs, walkKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	case reflect.Map:
		if m, ok := v.(map[string]any); ok {
			for k, e := range m {
				errs = append(errs, walkKeys(e, t.Elem(), join(path, k))...)
			}
		}
	}
	return errs
}

func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := make(map[string]reflect.StructField)
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

func sortedKeys(m map[string]reflect.StructField) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func asTypeError(err error, te **json.UnmarshalTypeError) bool { return errors.As(err, te) }

// DecodeStrict decodes an interceptor's raw config into v, reporting unknown
// keys with their path under prefix (e.g. "interceptors[0].config").
func DecodeStrict(raw json.RawMessage, v any, prefix string) error {
	if len(raw) == 0 {
		return nil
	}
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	if errs := walkKeys(generic, reflect.TypeOf(v), prefix); len(errs) > 0 {
		return errs
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s.%s: expected %s, got %s", prefix, te.Field, te.Type, te.Value)
		}
		return fmt.Errorf("%s: %w", prefix, err)
	}
	return nil
}
