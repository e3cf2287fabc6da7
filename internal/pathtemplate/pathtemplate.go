// Package pathtemplate turns request paths into templates for the mesh's
// learning (docs/learning.md): segments that look like identifiers become
// {id}, so /items/42 and /items/43 are one shape, /items/{id}. The
// proxies apply it to every request they count (Append allocates nothing
// when dst has room) and the collector to every shape it keeps; the
// collector also collapses high-cardinality literal segments, which one
// request cannot reveal.
//
// It depends on the standard library only.
package pathtemplate

// ID is what an identifier-like segment becomes.
const ID = "{id}"

// Rest ends a template cut short: past MaxSegments segments or MaxLen
// bytes, the rest of the path is this one segment (so a template is at
// most MaxLen+1+len(Rest) bytes, one more for a path without a leading
// slash).
const Rest = "{...}"

// Limits of a template.
const (
	MaxSegments = 12
	MaxLen      = 160
)

// Append appends the template of path (a path without its query) to dst
// and returns it. A segment becomes ID when it is all decimal digits, a
// UUID, a hex string of 8 or more characters with a digit, or a token of
// 16 or more letters, digits, '-' and '_' with both letters and digits.
// Other segments stay as they are. An empty path is "/".
func Append(dst []byte, path string) []byte {
	start := len(dst)
	if path == "" || path[0] != '/' {
		dst = append(dst, '/')
		if path == "" {
			return dst
		}
	}
	segs := 0
	for i := 0; i < len(path); {
		if path[i] == '/' {
			if len(dst)-start >= MaxLen {
				return append(append(dst, '/'), Rest...)
			}
			dst = append(dst, '/')
			i++
			continue
		}
		j := i
		for j < len(path) && path[j] != '/' {
			j++
		}
		seg := path[i:j]
		if IsID(seg) {
			seg = ID
		}
		segs++
		if segs > MaxSegments || len(dst)-start+len(seg) > MaxLen {
			return append(dst, Rest...)
		}
		dst = append(dst, seg...)
		i = j
	}
	return dst
}

// Of is Append to a new string, for callers off the hot path.
func Of(path string) string {
	var buf [MaxLen + 16]byte
	return string(Append(buf[:0], path))
}

// IsID reports whether a path segment looks like an identifier.
func IsID(seg string) bool {
	if seg == "" {
		return false
	}
	digits, hex, letters, other := 0, 0, 0, 0
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F':
			hex++
			letters++
		case c >= 'g' && c <= 'z' || c >= 'G' && c <= 'Z':
			letters++
		case c == '-' || c == '_':
			other++
		default:
			return false
		}
	}
	switch {
	case digits == len(seg):
		return true
	case isUUID(seg):
		return true
	case digits > 0 && digits+hex == len(seg) && len(seg) >= 8:
		return true
	case len(seg) >= 16 && digits > 0 && letters > 0:
		return true
	}
	return false
}

// isUUID reports whether s is 8-4-4-4-12 hex digits.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
