package analysis

import (
	"slices"

	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// CustomCheck is a CUSTOM policy that would hand the request to its
// external authorization provider.
type CustomCheck struct {
	Policy   string `json:"policy"`
	Rule     int    `json:"rule"`
	Provider string `json:"provider"`
	// Defined: the Mesh defines the provider; the proxy denies a request
	// for one it does not.
	Defined bool `json:"defined"`
}

// customChecks lists the CUSTOM policies that would ask their provider
// about req: only HTTP requests the local policies allow reach them.
func customChecks(e *policy.Engine, m *Mesh, w *policy.Workload, req *policy.Request, allowed bool) []CustomCheck {
	out := []CustomCheck{}
	if !allowed || !req.HTTP {
		return out
	}
	for _, c := range e.AppendCustom(nil, w, req) {
		defined := slices.ContainsFunc(m.Spec.ExtensionProviders, func(p resource.ExtensionProvider) bool { return p.Name == c.Provider && p.EnvoyExtAuthzGrpc != nil })
		out = append(out, CustomCheck{Policy: c.Policy, Rule: c.Rule, Provider: c.Provider, Defined: defined})
	}
	return out
}
