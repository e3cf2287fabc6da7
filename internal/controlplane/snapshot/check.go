package snapshot

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	authz "github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// The consistency check runs before a snapshot is published, as
// go-control-plane's Snapshot.Consistent does: a snapshot whose parts
// disagree is never sent. Its proxies keep their last config (as after a
// NACK), the problems are logged, and trellis_control_inconsistent_snapshots_total
// counts it. The shared part is checked once per view (newMeshView), each
// proxy's own part (its policies) when its snapshot is built; every policy
// is checked once, when it is decoded (policyFromObject).

// maxListedProblems bounds how many problems one error names.
const maxListedProblems = 10

// InconsistentError says why a snapshot was not published.
type InconsistentError struct {
	// Problems lists what is wrong, one finding each.
	Problems []string
}

func (e *InconsistentError) Error() string {
	shown := e.Problems[:min(len(e.Problems), maxListedProblems)]
	msg := "inconsistent snapshot: " + strings.Join(shown, "; ")
	if n := len(e.Problems) - len(shown); n > 0 {
		msg += fmt.Sprintf("; and %d more", n)
	}
	return msg
}

// Consistent reports what is wrong with the part of snapshots every proxy
// shares; nil means it may be published.
func (v *View) Consistent() error {
	if len(v.problems) == 0 {
		return nil
	}
	return &InconsistentError{Problems: v.problems}
}

// The consistency checks list what is wrong with a view, built from in: an empty trust
// bundle; a service without a name, or listed twice; an endpoint without an
// address, listed twice, or whose SPIFFE ID (or a client-only proxy's) is
// not one in in.TrustDomain; a virtual IP that is not an address, is given
// to two services, or names a service the snapshot does not list; a policy
// listed twice. All of these make a proxy NACK or misroute, and none can
// come from the builder's inputs when they agree.
//
// servicesProblems checks the services (built from the workloads and
// VIPs, so reused with them); otherProblems the rest.
func servicesProblems(in *Input, services []*pb.Service) []string {
	var out []string
	listed := make(map[ServiceKey]bool, len(services))
	vipOwner := map[netip.Addr]ServiceKey{}
	for _, svc := range services {
		k := ServiceKey{svc.GetNamespace(), svc.GetName()}
		if k.Namespace == "" || k.Name == "" {
			out = append(out, fmt.Sprintf("service %q without a name or namespace", k.String()))
		}
		if listed[k] {
			out = append(out, fmt.Sprintf("service %s listed twice", k))
		}
		listed[k] = true
		addrs := make(map[string]bool, len(svc.GetEndpoints()))
		for _, ep := range svc.GetEndpoints() {
			switch {
			case ep.GetAddress() == "":
				out = append(out, fmt.Sprintf("service %s: endpoint %s without an address", k, ep.GetSpiffeId()))
			case addrs[ep.GetAddress()]:
				out = append(out, fmt.Sprintf("service %s: endpoint %s listed twice", k, ep.GetAddress()))
			}
			addrs[ep.GetAddress()] = true
			if p := idProblem(ep.GetSpiffeId(), in.TrustDomain); p != "" {
				out = append(out, fmt.Sprintf("service %s: endpoint %s: %s", k, ep.GetAddress(), p))
			}
		}
		for _, id := range svc.GetClientIds() {
			if p := idProblem(id, in.TrustDomain); p != "" {
				out = append(out, fmt.Sprintf("service %s: client-only proxy: %s", k, p))
			}
		}
		if svc.GetVirtualIp() != "" {
			ip, err := netip.ParseAddr(svc.GetVirtualIp())
			switch {
			case err != nil || ip.Zone() != "":
				out = append(out, fmt.Sprintf("service %s: virtual IP %q is not an IP address", k, svc.GetVirtualIp()))
			case vipOwner[ip.Unmap()] != ServiceKey{}:
				out = append(out, fmt.Sprintf("virtual IP %s given to both %s and %s", ip, vipOwner[ip.Unmap()], k))
			default:
				vipOwner[ip.Unmap()] = k
			}
		}
	}
	for k, ip := range in.VIPs {
		if !listed[k] {
			out = append(out, fmt.Sprintf("virtual IP %s given to service %s, which the snapshot does not list", ip, k))
		}
	}
	return out
}

func otherProblems(v *View) []string {
	var out []string
	if len(v.trustBundle) == 0 {
		out = append(out, "empty trust bundle")
	}
	for i := 1; i < len(v.policies); i++ {
		if a, b := &v.policies[i-1], &v.policies[i]; a.Namespace == b.Namespace && a.Name == b.Name {
			out = append(out, fmt.Sprintf("policy %s/%s listed twice", b.Namespace, b.Name))
		}
	}
	return out
}

// idProblem says what is wrong with a workload's SPIFFE ID in a snapshot
// ("" when it parses and is in td).
func idProblem(id string, td spiffeid.TrustDomain) string {
	parsed, err := spiffeid.FromString(id)
	if err != nil {
		return fmt.Sprintf("SPIFFE ID %q: %v", id, err)
	}
	if parsed.TrustDomain() != td {
		return fmt.Sprintf("SPIFFE ID %s is not in trust domain %q", id, td.Name())
	}
	return ""
}

// policyProblem says why a proxy would refuse a policy's JSON ("" when it
// would not): it is checked the way the proxy compiles it.
func policyProblem(js []byte) string {
	var o resource.Object
	if err := json.Unmarshal(js, &o); err != nil {
		return err.Error()
	}
	if err := resource.Validate(&o); err != nil {
		return err.Error()
	}
	if _, err := authz.Compile([]resource.Object{o}, authz.Options{}); err != nil {
		return err.Error()
	}
	return ""
}
