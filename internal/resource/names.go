package resource

import (
	"strings"
	"unicode"
)

// Name rules follow Kubernetes, so that the same files work as CRDs.

const (
	dnsLabelRule     = "must be a DNS label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
	dnsSubdomainRule = "must be a DNS subdomain: at most 253 lower-case letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit"
	labelKeyRule     = "must be a name of at most 63 letters, digits, '-', '_' and '.' starting and ending with a letter or digit, optionally after a DNS subdomain prefix and '/' (as in \"app.example.com/tier\")"
	labelValueRule   = "must be empty or at most 63 letters, digits, '-', '_' and '.' starting and ending with a letter or digit"
)

// isDNSLabel reports whether s is an RFC 1123 label as Kubernetes uses for
// namespaces and service names.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := range len(s) {
		if !isLowerAlnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// isDNSSubdomain reports whether s is an RFC 1123 subdomain as Kubernetes
// uses for object names: dot-separated labels, at most 253 bytes.
func isDNSSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for part := range strings.SplitSeq(s, ".") {
		if !isDNSLabel(part) {
			return false
		}
	}
	return true
}

// isLabelKey reports whether s is a Kubernetes qualified name: an optional
// DNS subdomain prefix and '/', then a name.
func isLabelKey(s string) bool {
	name := s
	if prefix, rest, ok := strings.Cut(s, "/"); ok {
		if !isDNSSubdomain(prefix) {
			return false
		}
		name = rest
	}
	return name != "" && isLabelValue(name)
}

// isLabelValue reports whether s is a valid Kubernetes label value.
func isLabelValue(s string) bool {
	if s == "" {
		return true
	}
	if len(s) > 63 || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// isHTTPToken reports whether s is an RFC 9110 token, the syntax of header
// names.
func isHTTPToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !isAlnum(c) && !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }

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
		if !isLabelKey(k) {
			errs.add(f, "invalid label key %s: %s", quote(k), labelKeyRule)
		}
		if v := labels[k]; !isLabelValue(v) {
			errs.add(f, "invalid label value %s: %s", quote(v), labelValueRule)
		}
	}
}
