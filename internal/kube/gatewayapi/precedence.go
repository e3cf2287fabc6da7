package gatewayapi

import (
	"slices"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

// byPrecedence gives each match its own rule and orders them as the
// Gateway API orders matches across a route's rules (ties keep the
// route's order), since Trellis takes the first rule that matches. A rule
// without matches matches everything and comes last. The proxies order
// the rules of several routes of one Service the same way
// (meshconfig.CompileRoutes).
func byPrecedence(rules []resource.RouteRule, compare func(a, b resource.RouteMatch) int) []resource.RouteRule {
	var out []resource.RouteRule
	for _, r := range rules {
		out = append(out, meshconfig.SplitMatches(r)...)
	}
	slices.SortStableFunc(out, func(a, b resource.RouteRule) int { return meshconfig.RulePrecedence(a, b, compare) })
	return out
}

// The Gateway API's orders of matches within a route's rules.
var (
	httpPrecedence = meshconfig.MatchPrecedence
	grpcPrecedence = meshconfig.GRPCMatchPrecedence
)
