package resource

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"

	"github.com/trellismesh/trellis/internal/names"
)

// KindEgressPolicy lists the hosts outside the mesh the selected workloads
// may reach in transparent mode (docs/egress.md).
const KindEgressPolicy = "EgressPolicy"

// EgressPolicySpec allows the selected workloads' captured connections to
// the listed external hosts. Every EgressPolicy that selects a workload
// adds to its allow list; a workload no EgressPolicy selects is left to the
// Mesh's spec.outbound.mode.
type EgressPolicySpec struct {
	// Selector picks the workloads in the policy's namespace; empty means
	// all of them (every workload of the mesh in trellis-system).
	Selector Selector `json:"selector"`
	// Principals, when set, narrow the policy to workloads whose SPIFFE ID
	// matches one of these (exact, "prefix*", "*suffix" or "*").
	Principals []string `json:"principals,omitempty"`
	// Hosts are the allowed destinations; at least one.
	Hosts []EgressHost `json:"hosts"`
}

// EgressHost is one allowed external host.
type EgressHost struct {
	// Name is an exact DNS name ("api.psp.example"), "*.domain" (any name
	// under domain, not domain itself), "*" (any host) or an IP address
	// (a connection that names no host: no SNI, no Host header). Stored in
	// lower case.
	Name string `json:"name"`
	// Ports are the allowed destination ports; empty means any.
	Ports []int `json:"ports,omitempty"`
}

// EgressPolicySpecOf decodes, defaults and checks the spec of an
// EgressPolicy.
func EgressPolicySpecOf(o *Object) (EgressPolicySpec, error) {
	var errs errorList
	spec := egressPolicySpec(&errs, o.Spec)
	if err := errs.err(o.Source, o.Ref()); err != nil {
		return EgressPolicySpec{}, err
	}
	return spec, nil
}

func egressPolicySpec(errs *errorList, raw json.RawMessage) EgressPolicySpec {
	var s EgressPolicySpec
	decodeSpec(errs, raw, &s)
	if sv := s.Selector.Service; sv != "" && !names.IsDNSLabel(sv) {
		errs.add("spec.selector.service", "%s %s", quote(sv), names.DNSLabelRule)
	}
	checkLabels(errs, "spec.selector.matchLabels", s.Selector.MatchLabels)
	checkStrings(errs, "spec.principals", s.Principals, checkPrincipal)
	if len(s.Hosts) == 0 && !errs.failedAt("spec.hosts") {
		errs.add("spec.hosts", "required: list at least one host, e.g. [{name: api.example.com, ports: [443]}]")
	}
	for i := range s.Hosts {
		h := &s.Hosts[i]
		f := "spec.hosts[" + strconv.Itoa(i) + "]"
		h.Name = strings.ToLower(h.Name)
		if msg := checkEgressHostName(h.Name); msg != "" {
			errs.add(f+".name", "%s", msg)
		}
		for j, p := range h.Ports {
			if p < 1 || p > 65535 {
				errs.add(f+".ports["+strconv.Itoa(j)+"]", "must be a port from 1 to 65535, got %d", p)
			}
		}
	}
	return s
}

// checkEgressHostName accepts what EgressHost.Name documents.
func checkEgressHostName(n string) string {
	const forms = "write a DNS name (api.example.com), *.domain (any name under domain), * (any host) or an IP address"
	switch {
	case n == "":
		return "required; " + forms
	case n == "*":
		return ""
	case strings.HasSuffix(n, "."):
		return quote(n) + ": drop the trailing dot (names are matched as clients send them in SNI and Host, without it)"
	}
	if ip, err := netip.ParseAddr(n); err == nil {
		if ip.Zone() != "" {
			return quote(n) + ": an IP address without a zone"
		}
		return ""
	}
	name := strings.TrimPrefix(n, "*.")
	if strings.Contains(name, "*") {
		return quote(n) + ": '*' may only start the name, as a whole label (*.example.com); " + forms
	}
	if !names.IsDNSSubdomain(name) {
		return quote(n) + " is not a DNS name; " + forms
	}
	return ""
}
