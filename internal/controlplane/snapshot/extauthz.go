package snapshot

import (
	"cmp"
	"net"
	"slices"
	"strconv"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/resource"
)

// extAuthzProviders is the Mesh's ext_authz providers as proxies receive
// them, sorted by name so that the hash does not depend on the order
// they were written in.
func extAuthzProviders(ps []resource.ExtensionProvider) []*pb.ExtAuthzProvider {
	var out []*pb.ExtAuthzProvider
	for _, p := range ps {
		g := p.EnvoyExtAuthzGrpc
		if g == nil {
			continue
		}
		out = append(out, &pb.ExtAuthzProvider{
			Name:                         p.Name,
			Address:                      net.JoinHostPort(g.Service, strconv.Itoa(g.Port)),
			TimeoutMs:                    uint32(g.Timeout.Milliseconds()),
			FailOpen:                     g.FailOpen,
			IncludeRequestHeadersInCheck: g.IncludeRequestHeadersInCheck,
			HeadersToUpstreamOnAllow:     g.HeadersToUpstreamOnAllow,
			HeadersToDownstreamOnDeny:    g.HeadersToDownstreamOnDeny,
		})
	}
	slices.SortFunc(out, func(a, b *pb.ExtAuthzProvider) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// tracingConfig is the Mesh's spec.tracing as proxies receive it, with
// the address of the opentelemetry provider it names; nil without one.
func tracingConfig(t *resource.MeshTracing, ps []resource.ExtensionProvider) *pb.Tracing {
	if t == nil {
		return nil
	}
	i := slices.IndexFunc(ps, func(p resource.ExtensionProvider) bool { return p.Name == t.Provider })
	if i < 0 || ps[i].Opentelemetry == nil {
		return nil // the validator refuses such a Mesh
	}
	o := ps[i].Opentelemetry
	pct := resource.DefaultSamplingPercentage
	if t.RandomSamplingPercentage != nil {
		pct = *t.RandomSamplingPercentage
	}
	return &pb.Tracing{Provider: t.Provider, Address: net.JoinHostPort(o.Service, strconv.Itoa(o.Port)), RandomSamplingPercentage: pct}
}
