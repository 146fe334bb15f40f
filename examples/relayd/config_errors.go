package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
)

// How a config file that does not decode is described: the line and
// column of a syntax error, the path of an unknown field.

// describeJSONError turns a decoding error into one naming where it is:
// the unknown field with its path, the field of a type mismatch, or the
// line and column of a syntax error.
func describeJSONError(data []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := position(data, syn.Offset)
		return fmt.Errorf("invalid JSON at line %d, column %d: %s", line, col, strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		line, col := position(data, typ.Offset)
		return fmt.Errorf("field %q (line %d, column %d): expected %s, got JSON %s", typ.Field, line, col, typ.Type, typ.Value)
	case errors.Is(err, io.EOF):
		return errors.New("the file is empty; expected a JSON object")
	}
	if name, ok := unknownField(err); ok {
		var doc any
		if json.Unmarshal(data, &doc) == nil {
			if at := findUnknown(reflect.TypeFor[Config](), doc, name, ""); at != "" {
				return fmt.Errorf("unknown field %q at %s", name, at)
			}
		}
		return fmt.Errorf("unknown field %q", name)
	}
	return err
}

// unknownField extracts the name from encoding/json's unknown-field error,
// which has no type of its own.
func unknownField(err error) (string, bool) {
	rest, ok := strings.CutPrefix(err.Error(), "json: unknown field ")
	if !ok {
		return "", false
	}
	name, err2 := unquote(rest)
	return name, err2 == nil
}

func unquote(s string) (string, error) {
	var v string
	err := json.Unmarshal([]byte(s), &v)
	return v, err
}

// findUnknown returns the path (like accounts[1].api_kye) of the first key
// called name that t has no field for, or "".
func findUnknown(t reflect.Type, v any, name, at string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			ft, known := fields[strings.ToLower(k)]
			if !known {
				if k == name {
					return join(at, k)
				}
				continue
			}
			if p := findUnknown(ft, obj[k], name, join(at, k)); p != "" {
				return p
			}
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if p := findUnknown(t.Elem(), obj[k], name, fmt.Sprintf("%s[%q]", at, k)); p != "" {
				return p
			}
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			return ""
		}
		for i, e := range arr {
			if p := findUnknown(t.Elem(), e, name, fmt.Sprintf("%s[%d]", at, i)); p != "" {
				return p
			}
		}
	}
	return ""
}

func join(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

// jsonFields maps the lower-cased JSON names of t's fields to their types
// (encoding/json matches names case-insensitively).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[strings.ToLower(name)] = f.Type
	}
	return m
}

// position converts a byte offset into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	offset = min(max(offset, 0), int64(len(data)))
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - bytes.LastIndexByte(before, '\n')
	return line, col
}
