package shapes

import (
	"strings"

	"github.com/trellismesh/trellis/internal/pathtemplate"
)

// collapse looks, after k was added to ed, for a segment position where
// more than CollapseAt shapes of k's method differ only by a literal
// segment; it merges them into one shape with {id} there and returns it
// (nil when nothing collapsed). So /users/alice, /users/bob, ... become
// /users/{id} once there are enough of them.
func collapse(ed *edge, k shapeKey) *Shape {
	segs := strings.Split(k.template, "/")
	for i, seg := range segs {
		if seg == "" || seg == pathtemplate.ID || seg == pathtemplate.Rest {
			continue
		}
		var siblings []shapeKey
		for o := range ed.shapes {
			if o.method != k.method {
				continue
			}
			os := strings.Split(o.template, "/")
			if len(os) != len(segs) || os[i] == pathtemplate.ID || !sameExcept(os, segs, i) {
				continue
			}
			siblings = append(siblings, o)
		}
		if len(siblings) <= CollapseAt {
			continue
		}
		merged := make([]string, len(segs))
		copy(merged, segs)
		merged[i] = pathtemplate.ID
		mk := shapeKey{k.method, strings.Join(merged, "/")}
		into := ed.shapes[mk]
		if into == nil {
			into = &Shape{Method: k.method, Template: mk.template}
			ed.shapes[mk] = into
		}
		for _, o := range siblings {
			sh := ed.shapes[o]
			into.Requests += sh.Requests
			into.Denied += sh.Denied
			into.Failures += sh.Failures
			if into.FirstSeen.IsZero() || (!sh.FirstSeen.IsZero() && sh.FirstSeen.Before(into.FirstSeen)) {
				into.FirstSeen = sh.FirstSeen
			}
			if sh.LastSeen.After(into.LastSeen) {
				into.LastSeen = sh.LastSeen
			}
			delete(ed.shapes, o)
		}
		return into
	}
	return nil
}

// sameExcept reports whether a and b are equal but at index i.
func sameExcept(a, b []string, i int) bool {
	for j := range a {
		if j != i && a[j] != b[j] {
			return false
		}
	}
	return true
}

// generalized returns the shape of ed that k falls under after a
// collapse: same method and segments, but {id} where k has a literal.
func generalized(ed *edge, k shapeKey) *Shape {
	segs := strings.Split(k.template, "/")
	for o, sh := range ed.shapes {
		if o.method != k.method || !strings.Contains(o.template, pathtemplate.ID) {
			continue
		}
		os := strings.Split(o.template, "/")
		if len(os) != len(segs) {
			continue
		}
		match := true
		for j := range os {
			if os[j] != segs[j] && os[j] != pathtemplate.ID {
				match = false
				break
			}
		}
		if match {
			return sh
		}
	}
	return nil
}
