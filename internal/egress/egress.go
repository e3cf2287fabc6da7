// Package egress decides which hosts outside the mesh a workload may
// reach: the EgressPolicy resources that select it, compiled into Rules
// (docs/egress.md). The proxy's capture listener asks Rules about every
// captured connection to a destination that is no mesh service; the
// snapshot builder and `trellis policy check --to-host` use the same
// selection and matching, so the three never disagree.
//
// It depends on internal/resource and internal/policy (for selection) and
// the standard library; any role may import it.
package egress

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// Policy is one EgressPolicy, decoded.
type Policy struct {
	Namespace, Name string
	Spec            resource.EgressPolicySpec
}

// Ref is "namespace/name".
func (p *Policy) Ref() string { return p.Namespace + "/" + p.Name }

// FromObject decodes and checks an EgressPolicy.
func FromObject(o *resource.Object) (Policy, error) {
	if o.Kind != resource.KindEgressPolicy {
		return Policy{}, fmt.Errorf("egress policy %s: kind is %q", o.Ref(), o.Kind)
	}
	spec, err := resource.EgressPolicySpecOf(o)
	if err != nil {
		return Policy{}, err
	}
	return Policy{Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Spec: spec}, nil
}

// Selects reports whether p applies to the workload w whose proxy has the
// SPIFFE ID id: its selector picks w (policy.Selects: in p's namespace, or
// every workload for an empty selector in trellis-system), and, when p
// lists principals, id matches one of them.
func Selects(p *Policy, w *policy.Workload, id string) bool {
	if !policy.Selects(p.Namespace, p.Spec.Selector, w) {
		return false
	}
	return MatchPrincipals(p.Spec.Principals, id)
}

// MatchPrincipals reports whether id matches one of an EgressPolicy's
// principals, or the policy lists none.
func MatchPrincipals(pats []string, id string) bool {
	return len(pats) == 0 || slices.ContainsFunc(pats, func(pat string) bool { return matchGlob(pat, id) })
}

// matchGlob matches the principal patterns of resource (exact, "*",
// "prefix*", "*suffix").
func matchGlob(pat, s string) bool {
	switch {
	case pat == "*":
		return true
	case strings.HasSuffix(pat, "*"):
		return strings.HasPrefix(s, pat[:len(pat)-1])
	case strings.HasPrefix(pat, "*"):
		return strings.HasSuffix(s, pat[1:])
	}
	return pat == s
}

// Rules are the EgressPolicies that select one workload. Immutable; safe
// for concurrent use. A nil or empty Rules selects nothing: the caller
// then falls back to the mesh's outbound mode.
type Rules struct {
	policies []Policy
}

// NewRules compiles the policies that select a workload (the caller
// selected them). It keeps its own copy.
func NewRules(ps []Policy) *Rules {
	return &Rules{policies: slices.Clone(ps)}
}

// Empty reports whether no policy selects the workload.
func (r *Rules) Empty() bool { return r == nil || len(r.policies) == 0 }

// Refs are the policies' "namespace/name", in order.
func (r *Rules) Refs() []string {
	if r == nil {
		return nil
	}
	out := make([]string, len(r.policies))
	for i := range r.policies {
		out[i] = r.policies[i].Ref()
	}
	return out
}

// Decision is the answer for one connection.
type Decision struct {
	Allow bool
	// Policy is the allowing policy's "namespace/name" ("" when denied).
	Policy string
	// Entry is the host entry that matched, as written in the policy.
	Entry string
	// Host is what was matched: the name the connection carried, or the
	// destination address when it carried none.
	Host string
}

// Decide answers for a connection to dst that named host (a TLS SNI or
// HTTP Host, normalized by NormalizeHost; "" when it named none). A name
// entry matches host; an IP entry matches dst's address, whatever name
// the connection carried. The first policy (in the order given) with a
// matching entry and port allows.
func (r *Rules) Decide(host string, dst netip.AddrPort) Decision {
	d := Decision{Host: host}
	if host == "" {
		d.Host = dst.Addr().Unmap().String()
	}
	if r == nil {
		return d
	}
	for i := range r.policies {
		p := &r.policies[i]
		for _, h := range p.Spec.Hosts {
			if (len(h.Ports) == 0 || slices.Contains(h.Ports, int(dst.Port()))) && MatchHost(h.Name, host, dst.Addr()) {
				d.Allow, d.Policy, d.Entry = true, p.Ref(), h.Name
				return d
			}
		}
	}
	return d
}

// MatchHost reports whether the entry name (as EgressHost.Name documents
// it, lower case) matches a connection to addr that named host
// (normalized; "" for none): "*" matches anything; an IP entry matches
// addr; "*.domain" matches any name ending in ".domain" (one or more
// labels before it), never domain itself; any other name matches host
// exactly.
func MatchHost(name, host string, addr netip.Addr) bool {
	if name == "*" {
		return true
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		return addr.IsValid() && ip.Unmap() == addr.Unmap()
	}
	if host == "" {
		return false
	}
	if suffix, ok := strings.CutPrefix(name, "*"); ok {
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix) && host[len(host)-len(suffix)-1] != '.'
	}
	return host == name
}

// NormalizeHost turns a TLS SNI or an HTTP Host (with or without a port,
// an IPv6 literal in brackets) into the form entries are matched against:
// lower case, no port, no trailing dot, an IP address in its canonical
// form. It returns "" for a value that is no host name or address.
func NormalizeHost(s string) string {
	if s == "" || len(s) > 255 {
		return ""
	}
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return ""
		}
		if rest := s[end+1:]; rest != "" && !validPort(rest) {
			return ""
		}
		ip, err := netip.ParseAddr(s[1:end])
		if err != nil || ip.Zone() != "" {
			return ""
		}
		return ip.String()
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		if ip.Zone() != "" {
			return ""
		}
		return ip.Unmap().String()
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if !validPort(s[i:]) {
			return ""
		}
		s = s[:i]
	}
	s = strings.TrimSuffix(strings.ToLower(s), ".")
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.Unmap().String()
	}
	if s == "" {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return ""
		}
	}
	if strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return ""
	}
	return s
}

// validPort: ":" followed by 0 to 5 digits (an empty port is allowed in
// a Host header).
func validPort(s string) bool {
	if s == "" || s[0] != ':' || len(s) > 6 {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
