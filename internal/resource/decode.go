package resource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Decode reads the resources in data, the contents of the file or stream
// named source: YAML documents separated by "---" lines, or JSON values one
// after another. Empty documents are skipped. A document of kind List (as
// kubectl writes) contributes its items. Each object's Source is source#N, N
// counting the non-empty documents from 1, or source#N.items[I] for the items
// of a List.
//
// Decode checks the shape of each envelope: a mapping with apiVersion and
// kind, no unknown fields outside the spec, every field of the right type.
// It does not check values or the spec; call Validate on each object for
// that. If any document is bad, Decode returns no objects and an error
// naming every bad document (each a *ValidationError, joined).
func Decode(data []byte, source string) ([]Object, error) {
	var (
		objs []Object
		errs []error
		n    int
	)
	for _, d := range documents(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))) {
		if d.value == nil && d.err == "" {
			continue
		}
		n++
		src := source + "#" + strconv.Itoa(n)
		if d.err != "" {
			errs = append(errs, documentError(src, d.err))
			continue
		}
		got, err := decodeDocument(d.value, src, true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, got...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return objs, nil
}

// Documents parses data as Decode does, YAML documents or JSON values one
// after another, and returns each non-empty document as encoding/json
// decodes into an any (numbers as json.Number), without interpreting it.
// It is for readers of formats other than Trellis's own, such as the Istio
// importer. If any document does not parse, Documents returns no values and
// an error naming every such document as source#N.
func Documents(data []byte, source string) ([]any, error) {
	var (
		values []any
		errs   []error
		n      int
	)
	for _, d := range documents(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))) {
		if d.value == nil && d.err == "" {
			continue
		}
		n++
		if d.err != "" {
			errs = append(errs, documentError(source+"#"+strconv.Itoa(n), d.err))
			continue
		}
		values = append(values, d.value)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return values, nil
}

// envelope is an Object as it appears in a document.
type envelope struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   Metadata        `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// list is a kubectl-style List as it appears in a document.
type list struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   json.RawMessage `json:"metadata"`
	Items      []any           `json:"items"`
}

// decodeDocument turns one parsed document into objects: one, or the items
// of a List if listOK.
func decodeDocument(v any, src string, listOK bool) ([]Object, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, documentError(src, fmt.Sprintf("the document is %s, not a mapping; a resource is a mapping with apiVersion, kind, metadata and spec", shape(v)))
	}
	if m["kind"] == "List" {
		if !listOK {
			return nil, documentError(src, "kind: a List inside a List is not supported")
		}
		return decodeList(m, src)
	}
	if err := istioDocument(m, src); err != nil {
		return nil, err
	}
	var (
		errs errorList
		env  envelope
	)
	decodeStrict(&errs, "", m, reflect.ValueOf(&env).Elem(), false)
	if env.APIVersion == "" {
		errs.add("apiVersion", "required; set it to %q", APIVersion)
	}
	if env.Kind == "" {
		errs.add("kind", "required; set it to one of %s", kindNames())
	}
	o := Object{APIVersion: env.APIVersion, Kind: env.Kind, Metadata: env.Metadata, Spec: env.Spec, Source: src}
	if err := errs.err(src, resourceRef(&o)); err != nil {
		return nil, err
	}
	return []Object{o}, nil
}

// istioDocument refuses a document of an Istio API group, whose kinds
// share names with Trellis's (AuthorizationPolicy) but not their meaning,
// and says how to convert it. Checked before the envelope, whose metadata
// Istio objects often extend.
func istioDocument(m map[string]any, src string) error {
	av, _ := m["apiVersion"].(string)
	group, _, _ := strings.Cut(av, "/")
	if group != "istio.io" && !strings.HasSuffix(group, ".istio.io") {
		return nil
	}
	o := Object{APIVersion: av}
	o.Kind, _ = m["kind"].(string)
	if md, ok := m["metadata"].(map[string]any); ok {
		o.Metadata.Name, _ = md["name"].(string)
		o.Metadata.Namespace, _ = md["namespace"].(string)
	}
	return &ValidationError{Source: src, Resource: resourceRef(&o), Errors: []FieldError{{
		Field: "apiVersion",
		Message: fmt.Sprintf("%s is an Istio API, not Trellis's (%s): convert Istio AuthorizationPolicy and PeerAuthentication with trellis import istio -f FILE, then apply its output",
			quote(av), APIVersion),
	}}}
}

func decodeList(m map[string]any, src string) ([]Object, error) {
	var (
		errs errorList
		l    list
	)
	decodeStrict(&errs, "", m, reflect.ValueOf(&l).Elem(), false)
	if err := errs.err(src, "List"); err != nil {
		return nil, err
	}
	var (
		objs []Object
		all  []error
	)
	for i, item := range l.Items {
		got, err := decodeDocument(item, src+".items["+strconv.Itoa(i)+"]", false)
		if err != nil {
			all = append(all, err)
			continue
		}
		objs = append(objs, got...)
	}
	if len(all) > 0 {
		return nil, errors.Join(all...)
	}
	return objs, nil
}

// resourceRef is o.Ref() for error messages, or "" if o has no kind and no
// name to show.
func resourceRef(o *Object) string {
	if o.Kind == "" && o.Metadata.Name == "" {
		return ""
	}
	return o.Ref()
}

func documentError(src, msg string) error {
	return &ValidationError{Source: src, Errors: []FieldError{{Message: msg}}}
}

// shape names the JSON type of a document for messages.
func shape(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// document is one parsed document: a value (nil if the document is empty)
// or a message saying why it could not be parsed.
type document struct {
	value any
	err   string
}

// documents splits data into documents and parses them.
func documents(data []byte) []document {
	if !looksLikeJSON(data) {
		return yamlDocuments(data)
	}
	docs, ok := jsonDocuments(data)
	if ok || len(splitYAML(data)) == 1 {
		return docs
	}
	// JSON documents are YAML too, and may be separated by "---" lines.
	if ydocs := yamlDocuments(data); !hasError(ydocs) {
		return ydocs
	}
	return docs
}

// looksLikeJSON reports whether data starts like a JSON object rather than a
// YAML flow mapping, whose keys are usually not quoted.
func looksLikeJSON(data []byte) bool {
	rest, ok := bytes.CutPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{"))
	if !ok {
		return false
	}
	rest = bytes.TrimLeft(rest, " \t\r\n")
	return len(rest) > 0 && (rest[0] == '"' || rest[0] == '}')
}

func hasError(docs []document) bool {
	for _, d := range docs {
		if d.err != "" {
			return true
		}
	}
	return false
}

// jsonDocuments parses a stream of JSON values. On a syntax error it returns
// the values before it, then the error, and false.
func jsonDocuments(data []byte) ([]document, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var docs []document
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			return docs, true
		}
		if err != nil {
			return append(docs, document{err: jsonError(err, data)}), false
		}
		docs = append(docs, document{value: v})
	}
}

func jsonError(err error, data []byte) string {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		before := data[:min(int(se.Offset), len(data))]
		line := bytes.Count(before, []byte("\n")) + 1
		col := len(before) - bytes.LastIndexByte(before, '\n') - 1
		return fmt.Sprintf("invalid JSON at line %d, column %d: %v", line, col, se)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "invalid JSON: unexpected end of input"
	}
	return "invalid JSON: " + err.Error()
}

// yamlDocuments splits data at document markers and parses each document.
func yamlDocuments(data []byte) []document {
	var docs []document
	for _, c := range splitYAML(data) {
		j, err := yaml.YAMLToJSONStrict(c.text)
		if err != nil {
			docs = append(docs, document{err: yamlError(err, c.line)})
			continue
		}
		v, err := parseJSON(j)
		if err != nil {
			docs = append(docs, document{err: "invalid YAML: " + err.Error()})
			continue
		}
		docs = append(docs, document{value: v})
	}
	return docs
}

// chunk is the text of one YAML document.
type chunk struct {
	text []byte
	line int // the line of data on which text starts, from 1
}

// splitYAML splits data at "---" (document start) and "..." (document end)
// lines. YAML forbids those markers at the start of a line inside a
// document, so no parser is needed to find them. Text after "---" on the
// same line belongs to the next document. Directives ("%YAML 1.1") are
// dropped: the parser would want them followed by "---" in the same text.
func splitYAML(data []byte) []chunk {
	var chunks []chunk
	cur := chunk{line: 1}
	for line := 1; len(data) > 0; line++ {
		l := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			l = data[:i+1]
		}
		data = data[len(l):]
		if rest, ok := marker(l, "---"); ok {
			chunks = append(chunks, cur)
			cur = chunk{line: line, text: bytes.Clone(rest)}
			continue
		}
		if _, ok := marker(l, "..."); ok {
			chunks = append(chunks, cur)
			cur = chunk{line: line + 1}
			continue
		}
		if l[0] == '%' {
			// A directive such as "%YAML 1.1"; keep the line count.
			cur.text = append(cur.text, '\n')
			continue
		}
		cur.text = append(cur.text, l...)
	}
	return append(chunks, cur)
}

// marker reports whether line is the document marker m, optionally followed
// by more text, which it returns.
func marker(line []byte, m string) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(m))
	if !ok || len(rest) > 0 && !strings.ContainsRune(" \t\r\n", rune(rest[0])) {
		return nil, false
	}
	return rest, true
}

var yamlLineNumber = regexp.MustCompile(`\bline (\d+)`)

// yamlError rewrites a YAML parser error as one line, with line numbers
// counted in the whole input rather than the document.
func yamlError(err error, firstLine int) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:")
	var parts []string
	for p := range strings.SplitSeq(msg, "\n") {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	msg = strings.Join(parts, "; ")
	msg = yamlLineNumber.ReplaceAllStringFunc(msg, func(s string) string {
		n, err := strconv.Atoi(s[len("line "):])
		if err != nil {
			return s
		}
		return "line " + strconv.Itoa(n+firstLine-1)
	})
	return "invalid YAML: " + msg
}
