package resource

import (
	"fmt"
	"strings"
)

// FieldError is one problem with one field of a resource.
type FieldError struct {
	// Field is the path of the field, such as "spec.rules[0].to[0].methods[1]";
	// empty when the problem is with the document as a whole.
	Field   string
	Message string
}

// ValidationError reports every problem found in one resource or document.
type ValidationError struct {
	Source   string // where the resource came from, such as "policies.yaml#2"; may be empty
	Resource string // the resource's Ref, such as "AuthorizationPolicy shop/x"; may be empty
	Errors   []FieldError
}

// Error returns one line per field error, such as
//
//	policies.yaml#2: AuthorizationPolicy shop/x: spec.rules[0].to[0].methods[1]: "GTE" is not an HTTP method
func (e *ValidationError) Error() string {
	var prefix string
	if e.Source != "" {
		prefix = e.Source + ": "
	}
	if e.Resource != "" {
		prefix += e.Resource + ": "
	}
	if len(e.Errors) == 0 {
		return prefix + "invalid"
	}
	var b strings.Builder
	for i, fe := range e.Errors {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(prefix)
		if fe.Field != "" {
			b.WriteString(fe.Field)
			b.WriteString(": ")
		}
		b.WriteString(fe.Message)
	}
	return b.String()
}

// errorList collects field errors while an object is checked.
type errorList struct {
	errs []FieldError
	// failed holds the fields that could not be decoded. Later checks skip
	// them and everything under them: a value left at its zero value by a
	// decoding error would only produce a second, misleading error.
	failed []string
}

// add records a problem with field unless decoding that field already failed.
func (l *errorList) add(field, format string, args ...any) {
	if l.failedAt(field) {
		return
	}
	l.errs = append(l.errs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// failedAt reports whether decoding field, or a field it is part of, failed.
func (l *errorList) failedAt(field string) bool {
	for _, f := range l.failed {
		if within(field, f) {
			return true
		}
	}
	return false
}

// decodeFailed records that field could not be decoded.
func (l *errorList) decodeFailed(field, format string, args ...any) {
	l.add(field, format, args...)
	l.failed = append(l.failed, field)
}

// err returns the collected problems as a *ValidationError, or nil.
func (l *errorList) err(source, resource string) error {
	if len(l.errs) == 0 {
		return nil
	}
	return &ValidationError{Source: source, Resource: resource, Errors: l.errs}
}

// within reports whether field is parent or a field under it.
func within(field, parent string) bool {
	if !strings.HasPrefix(field, parent) {
		return false
	}
	if len(field) == len(parent) || parent == "" {
		return true
	}
	c := field[len(parent)]
	return c == '.' || c == '['
}
