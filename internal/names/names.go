// Package names is the one place for the syntax of the names Trellis takes
// from users and peers: DNS labels (namespaces, services, service
// accounts), DNS subdomains (object names), Kubernetes label keys and
// values, and HTTP tokens (header names, methods). Resource validation,
// the admin API's token creation, the control plane's Hello check, the
// CLI's flags and the proxy's configuration all check here, so a name one
// of them accepts the others accept too. The shape of a workload SPIFFE ID
// (/ns/NAMESPACE/sa/ACCOUNT) is internal/identity's (identity.WorkloadPath).
//
// The rules follow Kubernetes, so that the same files work as CRDs. Any
// package may import it; it must not import other internal packages.
package names

import "strings"

// What each rule demands, for error messages: "<value> " + rule.
const (
	DNSLabelRule     = "must be a DNS label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
	DNSSubdomainRule = "must be a DNS subdomain: at most 253 lower-case letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit"
	LabelKeyRule     = "must be a name of at most 63 letters, digits, '-', '_' and '.' starting and ending with a letter or digit, optionally after a DNS subdomain prefix and '/' (as in \"app.example.com/tier\")"
	LabelValueRule   = "must be empty or at most 63 letters, digits, '-', '_' and '.' starting and ending with a letter or digit"
)

// IsDNSLabel reports whether s is an RFC 1123 label as Kubernetes uses for
// namespaces and service names.
func IsDNSLabel(s string) bool {
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

// IsDNSSubdomain reports whether s is an RFC 1123 subdomain as Kubernetes
// uses for object names: dot-separated labels, at most 253 bytes.
func IsDNSSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for part := range strings.SplitSeq(s, ".") {
		if !IsDNSLabel(part) {
			return false
		}
	}
	return true
}

// IsLabelKey reports whether s is a Kubernetes qualified name: an optional
// DNS subdomain prefix and '/', then a name.
func IsLabelKey(s string) bool {
	name := s
	if prefix, rest, ok := strings.Cut(s, "/"); ok {
		if !IsDNSSubdomain(prefix) {
			return false
		}
		name = rest
	}
	return name != "" && IsLabelValue(name)
}

// IsLabelValue reports whether s is a valid Kubernetes label value.
func IsLabelValue(s string) bool {
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

// IsHTTPToken reports whether s is an RFC 9110 token, the syntax of header
// names and methods.
func IsHTTPToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !isAlnum(c) && !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }
