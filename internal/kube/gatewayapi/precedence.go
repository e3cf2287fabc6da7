package gatewayapi

import (
	"cmp"
	"slices"

	"github.com/trellismesh/trellis/internal/resource"
)

// byPrecedence gives each match its own rule and orders them as the
// Gateway API orders matches across a route's rules (ties keep the
// route's order), since Trellis takes the first rule that matches. A rule
// without matches matches everything and comes last.
func byPrecedence(rules []resource.RouteRule, compare func(a, b resource.RouteMatch) int) []resource.RouteRule {
	var out []resource.RouteRule
	for _, r := range rules {
		if len(r.Matches) <= 1 {
			out = append(out, r)
			continue
		}
		for _, m := range r.Matches {
			c := r
			c.Matches = []resource.RouteMatch{m}
			out = append(out, c)
		}
	}
	slices.SortStableFunc(out, func(a, b resource.RouteRule) int {
		if len(a.Matches) == 0 || len(b.Matches) == 0 {
			return cmp.Compare(len(b.Matches), len(a.Matches))
		}
		return compare(a.Matches[0], b.Matches[0])
	})
	return out
}

// httpPrecedence: an exact path, then the longest prefix, then a regular
// expression, then no path; then a method; then the most headers.
func httpPrecedence(a, b resource.RouteMatch) int {
	class := func(m resource.RouteMatch) (int, int) {
		switch {
		case m.Path == nil:
			return 3, 0
		case m.Path.Exact != "":
			return 0, len(m.Path.Exact)
		case m.Path.Prefix != "":
			return 1, len(m.Path.Prefix)
		}
		return 2, 0
	}
	ca, la := class(a)
	cb, lb := class(b)
	return cmp.Or(cmp.Compare(ca, cb), cmp.Compare(lb, la), cmp.Compare(hasMethod(b), hasMethod(a)), cmp.Compare(len(b.Headers), len(a.Headers)))
}

// grpcPrecedence: the longest service, then the longest method, then the
// most headers.
func grpcPrecedence(a, b resource.RouteMatch) int {
	svc := func(m resource.RouteMatch) (int, int) {
		if m.GRPC == nil {
			return 0, 0
		}
		return len(m.GRPC.Service), len(m.GRPC.Method)
	}
	sa, ma := svc(a)
	sb, mb := svc(b)
	return cmp.Or(cmp.Compare(sb, sa), cmp.Compare(mb, ma), cmp.Compare(len(b.Headers), len(a.Headers)))
}

func hasMethod(m resource.RouteMatch) int {
	if m.Method != "" {
		return 1
	}
	return 0
}
