package resource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file decodes JSON values into typed specs strictly. encoding/json
// ignores unknown fields, matches field names case-insensitively and stops at
// the first type mismatch without saying where inside a list it was; users
// need all of that, with the full path of the field, to fix a file.

var (
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	timeType        = reflect.TypeFor[time.Time]()
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
)

// parseJSON decodes one JSON value, keeping numbers as json.Number so that
// integers are not rounded through float64.
func parseJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the value")
	}
	return v, nil
}

// decodeSpec strictly decodes the JSON spec raw into dst, a pointer to a spec
// struct. An absent or null spec leaves dst unchanged.
func decodeSpec(errs *errorList, raw json.RawMessage, dst any) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return
	}
	v, err := parseJSON(raw)
	if err != nil {
		errs.decodeFailed("spec", "invalid JSON: %v", err)
		return
	}
	decodeStrict(errs, "spec", v, reflect.ValueOf(dst).Elem(), true)
}

// decodeStrict decodes v, a value from parseJSON, into dst following the json
// tags of dst's type. Unknown fields and type mismatches are recorded in errs
// with their path (path names v itself, "" for the top level). Values that
// fail are left at their zero value and decoding carries on, so that one pass
// reports every problem. null is accepted (as "absent") only where nullOK:
// for struct fields, not for list items or map values.
func decodeStrict(errs *errorList, path string, v any, dst reflect.Value, nullOK bool) {
	if v == nil {
		if !nullOK {
			errs.decodeFailed(path, "must not be null")
		}
		return
	}
	t := dst.Type()
	switch {
	case t == rawMessageType:
		raw, err := json.Marshal(v)
		if err != nil {
			errs.decodeFailed(path, "%v", err)
			return
		}
		dst.SetBytes(raw)
		return
	case t == timeType:
		if s, ok := v.(string); ok {
			if tm, err := time.Parse(time.RFC3339, s); err == nil {
				dst.Set(reflect.ValueOf(tm))
				return
			}
		}
		errs.decodeFailed(path, "must be an RFC 3339 timestamp such as \"2006-01-02T15:04:05Z\", got %s", describe(v))
		return
	case reflect.PointerTo(t).Implements(unmarshalerType):
		// Types such as Duration and Port say themselves what they accept.
		raw, err := json.Marshal(v)
		if err == nil {
			err = dst.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(raw)
		}
		if err != nil {
			errs.decodeFailed(path, "%v", err)
		}
		return
	}

	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		decodeStrict(errs, path, v, p.Elem(), nullOK)
		dst.Set(p)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			errs.decodeFailed(path, "must be a mapping, got %s", describe(v))
			return
		}
		fields := jsonFields(t)
		names := make([]string, 0, len(fields))
		for _, f := range fields {
			names = append(names, f.name)
			if fv, ok := m[f.name]; ok {
				decodeStrict(errs, joinField(path, f.name), fv, dst.Field(f.index), true)
			}
		}
		for _, k := range sortedKeys(m) {
			if !slices.Contains(names, k) {
				errs.decodeFailed(joinField(path, k), "unknown field%s", suggestion(k, names))
			}
		}
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			errs.decodeFailed(path, "must be a list, got %s", describe(v))
			return
		}
		s := reflect.MakeSlice(t, len(l), len(l))
		for i, e := range l {
			decodeStrict(errs, fmt.Sprintf("%s[%d]", path, i), e, s.Index(i), false)
		}
		dst.Set(s)
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok || t.Key().Kind() != reflect.String {
			errs.decodeFailed(path, "must be a mapping, got %s", describe(v))
			return
		}
		out := reflect.MakeMapWithSize(t, len(m))
		for _, k := range sortedKeys(m) {
			e := reflect.New(t.Elem()).Elem()
			decodeStrict(errs, path+"["+k+"]", m[k], e, false)
			out.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), e)
		}
		dst.Set(out)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			errs.decodeFailed(path, "must be a string, got %s%s", describe(v), quoteHint(v))
			return
		}
		dst.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			errs.decodeFailed(path, "must be true or false, got %s", describe(v))
			return
		}
		dst.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			errs.decodeFailed(path, "must be a number, got %s", describe(v))
			return
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || dst.OverflowInt(i) {
			errs.decodeFailed(path, "must be an integer in range, got %s", n)
			return
		}
		dst.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			errs.decodeFailed(path, "must be a number, got %s", describe(v))
			return
		}
		u, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil || dst.OverflowUint(u) {
			errs.decodeFailed(path, "must be a non-negative integer in range, got %s", n)
			return
		}
		dst.SetUint(u)
	case reflect.Float32, reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			errs.decodeFailed(path, "must be a number, got %s", describe(v))
			return
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || dst.OverflowFloat(f) {
			errs.decodeFailed(path, "must be a number in range, got %s", n)
			return
		}
		dst.SetFloat(f)
	case reflect.Interface:
		dst.Set(reflect.ValueOf(v))
	default:
		// Only reachable if a spec type gains a field of a kind handled above.
		errs.decodeFailed(path, "cannot decode into %s", t)
	}
}

type jsonField struct {
	name  string
	index int
}

// jsonFields lists the fields of struct type t as encoding/json names them.
func jsonFields(t reflect.Type) []jsonField {
	var fields []jsonField
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
		fields = append(fields, jsonField{name: name, index: i})
	}
	return fields
}

func joinField(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// describe says what a JSON value is, for "got ..." in messages.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "string " + quote(v)
	case json.Number:
		return "number " + truncate(string(v))
	case float64:
		return "number " + strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return "boolean " + strconv.FormatBool(v)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// describeJSON is describe for raw JSON, as UnmarshalJSON methods see it.
func describeJSON(data []byte) string {
	v, err := parseJSON(data)
	if err != nil {
		return "invalid JSON"
	}
	return describe(v)
}

// quoteHint helps with YAML's implicit typing: `yes`, `on`, `1.0` and `080`
// are not strings unless quoted.
func quoteHint(v any) string {
	switch v.(type) {
	case bool, json.Number:
		return " (quote the value in YAML to make it a string)"
	}
	return ""
}

// quote quotes s for a message, shortening very long values.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// JSONFieldNames lists the JSON names of struct type t's fields in field
// order, with the Go field index of each: what strict decoding reads, so a
// schema generated from it (internal/kube/crd) names the same fields.
func JSONFieldNames(t reflect.Type) (names []string, index []int) {
	for _, f := range jsonFields(t) {
		names, index = append(names, f.name), append(index, f.index)
	}
	return names, index
}
