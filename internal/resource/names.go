package resource

import (
	"strings"
	"unicode"

	"github.com/trellismesh/trellis/internal/names"
)

// hasSpaceOrControl reports whether s contains white space or control
// characters, which no name, path or host in a policy may contain.
func hasSpaceOrControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
}

// hasControl reports whether s contains control characters other than
// those in allowed. YAML cannot carry some of them faithfully (U+0085 is a
// line break to YAML 1.1), so values with them would not survive
// "get -o yaml" and apply.
func hasControl(s, allowed string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) && !strings.ContainsRune(allowed, r) })
}

// checkLabels checks a map of labels, reporting each bad key or value at
// field[key].
func checkLabels(errs *errorList, field string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		f := field + "[" + k + "]"
		if !names.IsLabelKey(k) {
			errs.add(f, "invalid label key %s: %s", quote(k), names.LabelKeyRule)
		}
		if v := labels[k]; !names.IsLabelValue(v) {
			errs.add(f, "invalid label value %s: %s", quote(v), names.LabelValueRule)
		}
	}
}
