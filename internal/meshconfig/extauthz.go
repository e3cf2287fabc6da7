package meshconfig

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// DefaultExtAuthzTimeout bounds a Check when the provider sets no
// timeout.
const DefaultExtAuthzTimeout = 200 * time.Millisecond

// ExtAuthzProvider is one Mesh extension provider speaking Envoy's
// ext_authz gRPC API, which AuthorizationPolicies with action CUSTOM
// name. Header names are lower case.
type ExtAuthzProvider struct {
	Name string
	// Address is host:port, dialed over plaintext gRPC.
	Address  string
	Timeout  time.Duration
	FailOpen bool
	// IncludeHeaders are the request headers sent in the check.
	IncludeHeaders []string
	// UpstreamHeaders are the OK answer's headers set on the request.
	UpstreamHeaders []string
	// DownstreamHeaders are the denied answer's headers sent to the
	// caller.
	DownstreamHeaders []string
}

// compileExtAuthz turns MeshConfig.ext_authz_providers into a map by
// name.
func compileExtAuthz(ps []*pb.ExtAuthzProvider) (map[string]*ExtAuthzProvider, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	out := make(map[string]*ExtAuthzProvider, len(ps))
	for i, p := range ps {
		if p.GetName() == "" {
			return nil, fmt.Errorf("mesh.ext_authz_providers[%d]: empty name", i)
		}
		if _, dup := out[p.GetName()]; dup {
			return nil, fmt.Errorf("mesh.ext_authz_providers[%d]: %q is listed twice", i, p.GetName())
		}
		if _, _, err := net.SplitHostPort(p.GetAddress()); err != nil {
			return nil, fmt.Errorf("mesh.ext_authz_providers[%d] %s: address: %w", i, p.GetName(), err)
		}
		t := time.Duration(p.GetTimeoutMs()) * time.Millisecond
		if t == 0 {
			t = DefaultExtAuthzTimeout
		}
		out[p.GetName()] = &ExtAuthzProvider{
			Name:              p.GetName(),
			Address:           p.GetAddress(),
			Timeout:           t,
			FailOpen:          p.GetFailOpen(),
			IncludeHeaders:    p.GetIncludeRequestHeadersInCheck(),
			UpstreamHeaders:   p.GetHeadersToUpstreamOnAllow(),
			DownstreamHeaders: p.GetHeadersToDownstreamOnDeny(),
		}
	}
	return out, nil
}

// extAuthzUpstreamHeaders are the headers providers may set on allowed
// requests, sorted: the inbound strips callers' values of them.
func extAuthzUpstreamHeaders(ps map[string]*ExtAuthzProvider) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(ps)) {
		out = append(out, ps[name].UpstreamHeaders...)
	}
	return out
}
