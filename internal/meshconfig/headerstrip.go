package meshconfig

import "strings"

// DefaultStripHeaders are the caller-supplied headers the inbound removes
// when the Mesh lists none (Mesh spec.http.stripHeaders): identity claims
// only the proxy may make. X-Forwarded-Client-Cert is always replaced.
var DefaultStripHeaders = []string{"x-spiffe-id", "x-trellis-*", "x-envoy-peer-metadata", "x-envoy-peer-metadata-id", "x-client-cert", "x-ssl-client-cert"}

// HeaderStrip matches header names to remove: exact names and "prefix*",
// compared case-insensitively with '_' read as '-'. A nil *HeaderStrip is
// the default list.
type HeaderStrip struct{ pats []stripPattern }

type stripPattern struct {
	s      string // lower case, '-' for '_'
	prefix bool
}

func NewHeaderStrip(list []string) *HeaderStrip {
	s := &HeaderStrip{}
	for _, p := range list {
		p = strings.ToLower(strings.ReplaceAll(p, "_", "-"))
		pre, ok := strings.CutSuffix(p, "*")
		s.pats = append(s.pats, stripPattern{s: pre, prefix: ok})
	}
	return s
}

var defaultHeaderStrip = NewHeaderStrip(DefaultStripHeaders)

// Match reports whether the caller's header name must be removed. It
// allocates nothing: it runs for every field of every request.
func (s *HeaderStrip) Match(name string) bool {
	if s == nil {
		s = defaultHeaderStrip
	}
	for _, p := range s.pats {
		if len(name) == len(p.s) || (p.prefix && len(name) > len(p.s)) {
			if FoldedEqual(name[:len(p.s)], p.s) {
				return true
			}
		}
	}
	return false
}

// FoldedEqual compares a header name with a lower-case pattern, reading
// '_' as '-'.
func FoldedEqual(name, pat string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != pat[i] {
			return false
		}
	}
	return true
}
