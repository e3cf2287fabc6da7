package resource

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// FieldChange is one field that differs between two versions of an object.
type FieldChange struct {
	// Field is the path of the field as error messages name it, such as
	// "spec.rules[0].to[0].methods" or "metadata.labels[tier]".
	Field string `json:"field"`
	// Old and New are the values in a compact flow style ("[GET, POST]",
	// "24h", "{to: [{methods: [GET]}]}"); "" means the field was not set.
	Old string `json:"old,omitempty"`
	New string `json:"new,omitempty"`
}

// Diff lists the fields in which next differs from prev, two valid objects
// of the same kind (as Validate leaves them, or as stored): labels,
// annotations and the defaulted spec, in schema order. Metadata the store
// sets (uid, resourceVersion, generation, timestamps) is not compared. A
// value that changes because a field was left out and its default applies
// is a change like any other.
//
// Lists of scalars (methods, principals, ...) are compared whole; lists of
// mappings (rules, from, to, when) item by item, so that a change deep in a
// rule names that rule.
func Diff(prev, next *Object) ([]FieldChange, error) {
	if prev.Kind != next.Kind {
		return nil, fmt.Errorf("resource.Diff: %s and %s are of different kinds", prev.Ref(), next.Ref())
	}
	k, ok := kindNamed(next.Kind)
	if !ok {
		return nil, fmt.Errorf("resource.Diff: unknown kind %q", next.Kind)
	}
	var prevErrs, nextErrs errorList
	ps, ns := k.spec(&prevErrs, prev.Spec), k.spec(&nextErrs, next.Spec)
	if err := errors.Join(prevErrs.err(prev.Source, prev.Ref()), nextErrs.err(next.Source, next.Ref())); err != nil {
		return nil, fmt.Errorf("resource.Diff: %w", err)
	}
	var d differ
	d.value("metadata.labels", reflect.ValueOf(prev.Metadata.Labels), reflect.ValueOf(next.Metadata.Labels))
	d.value("metadata.annotations", reflect.ValueOf(prev.Metadata.Annotations), reflect.ValueOf(next.Metadata.Annotations))
	d.value("spec", reflect.ValueOf(ps), reflect.ValueOf(ns))
	return d.changes, nil
}

type differ struct {
	changes []FieldChange
}

func (d *differ) add(path, prev, next string) {
	if prev != next {
		d.changes = append(d.changes, FieldChange{Field: path, Old: prev, New: next})
	}
}

// value compares a and b, values of one type, at path.
func (d *differ) value(path string, a, b reflect.Value) {
	t := a.Type()
	switch {
	case reflect.PointerTo(t).Implements(marshalerType):
		d.add(path, flow(a), flow(b))
		return
	case t.Kind() == reflect.Struct:
		for _, f := range jsonFields(t) {
			d.value(joinField(path, f.name), a.Field(f.index), b.Field(f.index))
		}
		return
	case t.Kind() == reflect.Map:
		keys := mapKeys(a)
		for _, k := range mapKeys(b) {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			kv := reflect.ValueOf(k).Convert(t.Key())
			d.add(path+"["+k+"]", flowEntry(a.MapIndex(kv)), flowEntry(b.MapIndex(kv)))
		}
		return
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct && !reflect.PointerTo(t.Elem()).Implements(marshalerType):
		for i := range max(a.Len(), b.Len()) {
			p := fmt.Sprintf("%s[%d]", path, i)
			switch {
			case i >= a.Len():
				d.add(p, "", flow(b.Index(i)))
			case i >= b.Len():
				d.add(p, flow(a.Index(i)), "")
			default:
				d.value(p, a.Index(i), b.Index(i))
			}
		}
		return
	}
	d.add(path, flowOrUnset(a), flowOrUnset(b))
}

var marshalerType = reflect.TypeFor[json.Marshaler]()

func mapKeys(m reflect.Value) []string {
	keys := make([]string, 0, m.Len())
	for _, k := range m.MapKeys() {
		keys = append(keys, k.String())
	}
	return keys
}

// flowEntry is flow(v) for a map entry, or "" if there is none: an empty
// value is still set.
func flowEntry(v reflect.Value) string {
	if !v.IsValid() {
		return ""
	}
	return flow(v)
}

// flowOrUnset is flow(v), or "" for what a spec leaves out when writing
// JSON: an empty string, list or map, a nil pointer.
func flowOrUnset(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String, reflect.Slice, reflect.Map:
		if v.Len() == 0 && !reflect.PointerTo(v.Type()).Implements(marshalerType) {
			return ""
		}
	case reflect.Pointer:
		if v.IsNil() {
			return ""
		}
	}
	return flow(v)
}

// flow writes v in a compact, YAML-like flow style: strings bare unless
// they need quotes, lists in brackets, mappings in braces with unset fields
// left out.
func flow(v reflect.Value) string {
	t := v.Type()
	if reflect.PointerTo(t).Implements(marshalerType) {
		p := reflect.New(t)
		p.Elem().Set(v)
		data, err := p.Interface().(json.Marshaler).MarshalJSON()
		if err != nil {
			return "<" + err.Error() + ">"
		}
		var s string
		if json.Unmarshal(data, &s) == nil {
			return flowString(s)
		}
		return string(data)
	}
	switch t.Kind() {
	case reflect.String:
		return flowString(v.String())
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Pointer:
		if v.IsNil() {
			return "null"
		}
		return flow(v.Elem())
	case reflect.Slice:
		items := make([]string, v.Len())
		for i := range items {
			items[i] = flow(v.Index(i))
		}
		return "[" + strings.Join(items, ", ") + "]"
	case reflect.Map:
		keys := mapKeys(v)
		slices.Sort(keys)
		items := make([]string, len(keys))
		for i, k := range keys {
			items[i] = flowString(k) + ": " + flow(v.MapIndex(reflect.ValueOf(k).Convert(t.Key())))
		}
		return "{" + strings.Join(items, ", ") + "}"
	case reflect.Struct:
		var items []string
		for _, f := range jsonFields(t) {
			// Every bool of a spec is omitempty: false is left out.
			if s := flowOrUnset(v.Field(f.index)); s != "" && s != "{}" && s != "false" {
				items = append(items, f.name+": "+s)
			}
		}
		return "{" + strings.Join(items, ", ") + "}"
	}
	return fmt.Sprint(v.Interface())
}

// flowString quotes s when it would otherwise be misread: empty, with
// surrounding space, or with characters that delimit flow values.
func flowString(s string) string {
	if s == "" || strings.TrimSpace(s) != s || strings.ContainsAny(s, ",[]{}\"'\\#") ||
		strings.Contains(s, ": ") || strings.HasSuffix(s, ":") || s == "<none>" || hasControl(s, "") {
		return strconv.Quote(s)
	}
	return s
}

// Sets reports whether o, as decoded from a file (before Validate fills in
// defaults), gives field a value: a path of mapping keys such as
// "spec.mtls.mode" (no list indices). A null or empty value is not one: the
// default applies to it as to a field left out.
func (o *Object) Sets(field string) bool {
	rest, ok := strings.CutPrefix(field, "spec.")
	if !ok || len(o.Spec) == 0 {
		return false
	}
	v, err := parseJSON(o.Spec)
	if err != nil {
		return false
	}
	for name := range strings.SplitSeq(rest, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		v = m[name]
	}
	return v != nil && v != ""
}
