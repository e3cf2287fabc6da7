package resource

import (
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/trellismesh/trellis/internal/names"
)

// Match patterns in policies are exact values or simple globs: "*" alone
// matches anything, "prefix*" and "*suffix" match by prefix or suffix. A
// single '*' at one end is all the syntax there is, so that matching stays a
// string comparison in the proxy.

type patternKind int

const (
	patternExact patternKind = iota
	patternAny
	patternPrefix
	patternSuffix
)

// parsePattern splits p into its kind and its literal part. It returns a
// message when '*' is used any other way.
func parsePattern(p string) (patternKind, string, string) {
	switch n := strings.Count(p, "*"); {
	case n == 0:
		return patternExact, p, ""
	case p == "*":
		return patternAny, "", ""
	case n == 1 && strings.HasSuffix(p, "*"):
		return patternPrefix, p[:len(p)-1], ""
	case n == 1 && strings.HasPrefix(p, "*"):
		return patternSuffix, p[1:], ""
	}
	return 0, "", "'*' may appear only once, at the start or the end (\"*\" alone matches anything)"
}

// checkStrings checks each entry of a list with check, which returns a
// message for a bad entry. Empty entries are always errors.
func checkStrings(errs *errorList, field string, list []string, check func(string) string) {
	for i, s := range list {
		f := field + "[" + strconv.Itoa(i) + "]"
		if s == "" {
			errs.add(f, "must not be empty")
		} else if msg := check(s); msg != "" {
			errs.add(f, "%s", msg)
		}
	}
}

// checkPrincipal accepts a SPIFFE ID or a pattern over SPIFFE IDs.
func checkPrincipal(s string) string {
	kind, lit, msg := parsePattern(s)
	switch {
	case hasSpaceOrControl(s):
		return noSpace(s)
	case msg != "":
		return quote(s) + ": " + msg
	case kind == patternPrefix && !strings.HasPrefix(lit, "spiffe://"):
		return quote(s) + ": a prefix pattern must start with \"spiffe://\", as in \"spiffe://trellis.local/ns/shop/*\""
	case kind == patternExact:
		if _, err := spiffeid.FromString(s); err != nil {
			return quote(s) + " is not a SPIFFE ID (" + err.Error() + "); write spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> or a pattern such as \"spiffe://trellis.local/ns/shop/*\""
		}
	}
	return ""
}

// checkDNSLabelPattern accepts a DNS label (a namespace or service name) or a
// pattern over them.
func checkDNSLabelPattern(s string) string {
	kind, lit, msg := parsePattern(s)
	switch {
	case msg != "":
		return quote(s) + ": " + msg
	case kind == patternExact && !names.IsDNSLabel(s):
		return quote(s) + " " + names.DNSLabelRule
	case kind == patternPrefix && !names.IsDNSLabel(lit+"x"),
		kind == patternSuffix && !names.IsDNSLabel("x"+lit):
		return quote(s) + ": the part besides '*' must be lower-case letters, digits and '-' that can begin or end a DNS label"
	}
	return ""
}

// httpMethods are the methods a policy may name.
var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

func checkMethod(s string) string {
	for _, m := range httpMethods {
		if s == m {
			return ""
		}
		if strings.EqualFold(s, m) {
			return quote(s) + " is not an HTTP method (methods are upper case: " + quote(m) + ")"
		}
	}
	return quote(s) + " is not an HTTP method (use one of " + strings.Join(httpMethods, ", ") + ")"
}

// checkPath accepts an absolute path or a pattern: "/prefix*", "*suffix", "*".
func checkPath(s string) string {
	kind, lit, msg := parsePattern(s)
	switch {
	case hasSpaceOrControl(s):
		return noSpace(s)
	case msg != "":
		return quote(s) + ": " + msg
	case kind == patternExact && !strings.HasPrefix(s, "/"):
		return quote(s) + ": a path must start with \"/\""
	case kind == patternPrefix && !strings.HasPrefix(lit, "/"):
		return quote(s) + ": a prefix pattern must start with \"/\", as in \"/items/*\""
	}
	return ""
}

// checkHost accepts a host (with or without port) or a pattern over hosts.
func checkHost(s string) string {
	if hasSpaceOrControl(s) {
		return noSpace(s)
	}
	if _, _, msg := parsePattern(s); msg != "" {
		return quote(s) + ": " + msg
	}
	return ""
}

// checkHeaderValue accepts what can appear in a header value: anything but
// control characters other than tab. Values are matched as given.
func checkHeaderValue(s string) string {
	if hasControl(s, "\t") {
		return quote(s) + " must not contain control characters"
	}
	return ""
}

func noSpace(s string) string {
	return quote(s) + " must not contain white space or control characters"
}
