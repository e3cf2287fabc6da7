package policy

import (
	"errors"
	"path"
	"strings"
)

// PathMode says how a request path with ambiguous encodings is treated
// before policies see it. The path a policy matched is the path the app
// receives, so every form an app might read differently from the proxy is
// either rejected or rewritten into one canonical form.
type PathMode uint8

const (
	// PathStrict (the default) rejects backslashes, encoded slashes and
	// backslashes, double-encoded dots, slashes and backslashes, NUL, and
	// ';' parameters on dot segments; it decodes the other escapes,
	// resolves dot segments and merges doubled slashes.
	PathStrict PathMode = iota
	// PathDecodeSlashes is PathStrict, except that '\', %5C and %2F become
	// '/' before dot segments are resolved (Envoy's UNESCAPE_AND_FORWARD
	// for slashes, Istio's DECODE_AND_MERGE_SLASHES), for apps whose
	// clients send them.
	PathDecodeSlashes
)

// Path mode names as written in the Mesh resource.
const (
	PathModeStrict        = "strict"
	PathModeDecodeSlashes = "decodeSlashes"
)

// ParsePathMode returns the mode named s ("" is PathStrict).
func ParsePathMode(s string) (PathMode, bool) {
	switch {
	case s == "", strings.EqualFold(s, PathModeStrict):
		return PathStrict, true
	case strings.EqualFold(s, PathModeDecodeSlashes):
		return PathDecodeSlashes, true
	}
	return PathStrict, false
}

// PathError says why a request path was refused; the proxy answers 400
// with it.
type PathError struct{ Reason string }

func (e *PathError) Error() string { return "request path refused: " + e.Reason }

// IsPathError reports whether err is a *PathError.
func IsPathError(err error) bool {
	var pe *PathError
	return errors.As(err, &pe)
}

func refuse(reason string) (string, error) { return "", &PathError{Reason: reason} }

// CanonicalPath turns the path of a request target as received (still
// percent-encoded, without the query) into the one path policies match
// and the app receives: decoded, dot segments resolved, doubled slashes
// merged, a trailing slash kept; an empty or relative path becomes
// absolute. It fails with a *PathError for the forms mode refuses (see
// PathMode). The proxy and `trellis policy check` both use it.
func CanonicalPath(raw string, mode PathMode) (string, error) {
	if raw == "" {
		return "/", nil
	}
	if isPlainPath(raw) {
		return raw, nil // the common case allocates nothing
	}
	var b strings.Builder
	b.Grow(len(raw) + 1)
	if raw[0] != '/' {
		b.WriteByte('/')
	}
	for i := 0; i < len(raw); i++ {
		c, encoded := raw[i], false
		if c == '%' {
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return refuse("malformed percent-encoding")
			}
			c, encoded = unhex(raw[i+1])<<4|unhex(raw[i+2]), true
			i += 2
		}
		switch c {
		case '/':
			if encoded && mode == PathStrict {
				return refuse("encoded slash (%2F); the mesh's path mode rejects it (Mesh spec.http.pathNormalization: decodeSlashes turns it into '/')")
			}
		case '\\':
			if mode == PathStrict {
				return refuse("backslash (raw or %5C) in the path; the mesh's path mode rejects it (Mesh spec.http.pathNormalization: decodeSlashes turns it into '/')")
			}
			c = '/'
		case 0:
			return refuse("NUL in the path")
		case '?':
			return refuse("'?' (encoded) in the path")
		case '#':
			return refuse("'#' in the path")
		}
		b.WriteByte(c)
	}
	p := b.String()
	// Any '%' left came from %25: one more decoding (by an app or a
	// framework) must not make a dot or a separator appear.
	for j := strings.IndexByte(p, '%'); j >= 0 && j+2 < len(p); j = nextPercent(p, j) {
		if isHex(p[j+1]) && isHex(p[j+2]) {
			switch unhex(p[j+1])<<4 | unhex(p[j+2]) {
			case '.', '/', '\\':
				return refuse("double-encoded dot, slash or backslash (%25 followed by one)")
			}
		}
	}
	if err := checkSegmentParams(p); err != nil {
		return "", err
	}
	return normalize(p), nil
}

// isPlainPath: absolute, nothing to decode, no separator look-alikes, no
// dot segments or doubled slashes.
func isPlainPath(p string) bool {
	if p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%', '\\', '#', '?', 0:
			return false
		case '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return false
			}
		}
	}
	return true
}

// checkSegmentParams refuses a ';' parameter on a dot segment ("..;x",
// ".;"): Tomcat and Spring drop the parameter and then resolve the dot
// segment, so "/public/..;/admin" is "/admin" to them and a path under
// "/public" to anyone else.
func checkSegmentParams(p string) error {
	if strings.IndexByte(p, ';') < 0 {
		return nil
	}
	for seg := range strings.SplitSeq(p, "/") {
		name, _, ok := strings.Cut(seg, ";")
		if ok && (name == "." || name == "..") {
			_, err := refuse("';' parameter on a dot segment (" + seg + ")")
			return err
		}
	}
	return nil
}

// normalize resolves dot segments and merges doubled slashes in an
// absolute decoded path, keeping a trailing slash.
func normalize(p string) string {
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return p
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean
}

func nextPercent(p string, j int) int {
	k := strings.IndexByte(p[j+1:], '%')
	if k < 0 {
		return -1
	}
	return j + 1 + k
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
