package analysis

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// Query is one request to decide, with its caller and the called service
// named as a user names them.
type Query struct {
	// The caller: a workload SPIFFE ID (FromID), a service
	// (FromService, FromNamespace), or a caller without a certificate
	// (Plaintext).
	FromID                     string
	FromService, FromNamespace string
	Plaintext                  bool

	ToService, ToNamespace string
	// Labels of the called workload; nil means those of ToService's
	// registered proxies.
	Labels map[string]string

	// Request is the request but for its caller (Principal,
	// SourceService) and headers, which WhatIf sets. An HTTP path is
	// canonicalized as the mesh's proxies do.
	Request policy.Request
	Header  http.Header
	// RequestPrincipal and Claims simulate an end user's verified token
	// ("ISSUER/SUBJECT" and its claims).
	RequestPrincipal string
	Claims           map[string][]string
}

// Result is what WhatIf decided. Its JSON form is the output of `trellis
// policy check -o json`: Decision, Policy, Rule and Reason are an interface
// scripts rely on.
type Result struct {
	Decision string `json:"decision"` // ALLOW or DENY
	Policy   string `json:"policy"`   // namespace/name, or ""
	Rule     int    `json:"rule"`     // index into the policy's spec.rules, or -1
	// Intent is the Intent (namespace/name) that produced the deciding
	// rule, when the policy was generated from Intents.
	Intent      string         `json:"intent,omitempty"`
	Reason      string         `json:"reason"`
	Cause       string         `json:"cause"` // policy.Cause.String, or CauseMTLSRequired
	Audit       []Audit        `json:"audit"`
	From        string         `json:"from"`                  // the caller's principal; "" for a plaintext caller
	FromService string         `json:"fromService,omitempty"` // service.namespace, when known
	Plaintext   bool           `json:"plaintext,omitempty"`   // a caller without mTLS
	To          string         `json:"to"`                    // service.namespace
	Labels      Labels         `json:"labels"`                // the called workload's labels decided with
	Selecting   []string       `json:"selecting"`             // policies selecting the called workload
	Request     RequestSummary `json:"request"`
	// Custom are the CUSTOM policies whose providers the proxy would ask
	// after the local ALLOW (in order; any denial denies): their answers
	// cannot be simulated offline. Empty when the local decision denies.
	Custom []CustomCheck `json:"custom"`
	// Caveats are the assumptions the decision rests on.
	Caveats Caveats `json:"-"`
}

// CauseMTLSRequired is the cause of a plaintext caller refused under
// STRICT mTLS before any policy, next to the engine's causes
// (policy.Cause.String).
const CauseMTLSRequired = "mtls-required"

// Audit is what one audit-mode policy would have decided.
type Audit struct {
	Policy     string `json:"policy"`
	Action     string `json:"action"` // ALLOW or DENY
	Rule       int    `json:"rule"`
	Intent     string `json:"intent,omitempty"` // as in Result
	Matched    bool   `json:"matched"`
	WouldAllow bool   `json:"wouldAllow"`
	Decision   string `json:"decision"` // would-be decision, ALLOW or DENY
	Reason     string `json:"reason"`
}

// RequestSummary is the request as decided.
type RequestSummary struct {
	Protocol string            `json:"protocol"` // HTTP or TCP
	Port     int               `json:"port,omitempty"`
	Method   string            `json:"method,omitempty"`
	Path     string            `json:"path,omitempty"` // canonical
	Host     string            `json:"host,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"` // lower-case names
	// RequestPrincipal and Claims are the simulated end-user token's.
	RequestPrincipal string              `json:"requestPrincipal,omitempty"`
	Claims           map[string][]string `json:"claims,omitempty"`
}

// Caveats are the assumptions behind a Result that its user may want to
// change. The zero value means none.
type Caveats struct {
	// AssumedPrincipal: no proxy of the caller's service is registered,
	// so From is the identity of the service account named like it.
	AssumedPrincipal bool
	// CallerIdentities, when the caller's service has proxies running as
	// more than one identity: all of them, sorted; From is the first.
	CallerIdentities []string
	// UnknownCallee: no proxy of the called service is registered and the
	// query gave no labels, so the workload was decided without labels.
	UnknownCallee bool
	// PlaintextPermitted: the caller is plaintext and the mesh's mTLS
	// mode PERMISSIVE, so it reached the policies with no identity,
	// namespace or service.
	PlaintextPermitted bool
	// LabelDecisions, when the called service's proxies carry different
	// labels that get different decisions: one per label set, sorted by
	// Labels.String; the Result is the first one's.
	LabelDecisions []LabelDecision
	// PortPolicies: the request has no port, and these selecting policies
	// have port conditions, which never match it.
	PortPolicies []string
}

// LabelDecision is the decision for the called workload with Labels.
type LabelDecision struct {
	Labels   Labels
	Decision policy.Decision
}

// CompileError is a mesh whose policies do not compile.
type CompileError struct{ Err error }

func (e *CompileError) Error() string { return "the policies do not compile: " + e.Err.Error() }

func (e *CompileError) Unwrap() error { return e.Err }

// WhatIf decides q against m, as a proxy of the called service would: it
// resolves the caller's and callee's names against m's proxies,
// canonicalizes the path in m's mode, compiles m's policies with the mesh
// default and trustDomain, and decides, audit-mode policies reported
// apart. A plaintext caller under STRICT mTLS is refused before any
// policy. A path the proxies refuse (400, before any policy) is an error
// wrapping a *policy.PathError; policies that do not compile are a
// *CompileError.
func WhatIf(m *Mesh, q *Query, trustDomain string) (*Result, error) {
	req := q.Request
	req.Principal, req.SourceService, req.Header = "", "", nil
	if req.HTTP {
		req.Header = q.Header.Get
		req.RequestPrincipal = q.RequestPrincipal
		if len(q.Claims) > 0 {
			req.Claim = func(n string) []string { return q.Claims[n] }
		}
	}
	to := q.ToService + "." + q.ToNamespace
	res := &Result{To: to, Audit: []Audit{}}
	if req.HTTP {
		// The proxy's own canonicalization, in the mesh's mode.
		mode, _ := policy.ParsePathMode(m.Spec.HTTP.PathNormalization)
		p, err := policy.CanonicalPath(req.Path, mode)
		if err != nil {
			return nil, fmt.Errorf("path %q: the proxy answers 400 before any policy: %w", req.Path, err)
		}
		req.Path = p
	}

	// The caller.
	idServices := map[string]map[string]bool{} // SPIFFE ID -> service.namespace
	var fromIDs []string
	for _, p := range m.Proxies {
		if idServices[p.SPIFFEID] == nil {
			idServices[p.SPIFFEID] = map[string]bool{}
		}
		idServices[p.SPIFFEID][p.Service+"."+p.Namespace] = true
		if p.Service == q.FromService && p.Namespace == q.FromNamespace && !slices.Contains(fromIDs, p.SPIFFEID) {
			fromIDs = append(fromIDs, p.SPIFFEID)
		}
	}
	slices.Sort(fromIDs)
	switch {
	case q.Plaintext:
		// No certificate: no principal, namespace or service.
		res.Plaintext = true
	case q.FromID != "":
		req.Principal = q.FromID
		// As the proxy does: a caller's service is known when its
		// identity serves exactly one service.
		if svcs := idServices[q.FromID]; len(svcs) == 1 {
			res.FromService = slices.Collect(maps.Keys(svcs))[0]
			req.SourceService, _, _ = strings.Cut(res.FromService, ".")
		}
	case len(fromIDs) == 0:
		req.Principal = fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, q.FromNamespace, q.FromService)
		res.Caveats.AssumedPrincipal = true
	default:
		req.Principal = fromIDs[0]
		if len(fromIDs) > 1 {
			res.Caveats.CallerIdentities = fromIDs
		}
	}
	if q.FromService != "" {
		req.SourceService = q.FromService
		res.FromService = q.FromService + "." + q.FromNamespace
	}
	res.From = req.Principal

	// The called workload: one label set per distinct labeling of its
	// proxies.
	var labelSets []Labels
	if q.Labels != nil {
		labelSets = []Labels{q.Labels}
	} else {
		seen := map[string]bool{}
		for _, p := range m.Proxies {
			if p.Service != q.ToService || p.Namespace != q.ToNamespace {
				continue
			}
			if k := Labels(p.Labels).String(); !seen[k] {
				seen[k] = true
				labelSets = append(labelSets, p.Labels)
			}
		}
		slices.SortFunc(labelSets, func(a, b Labels) int { return strings.Compare(a.String(), b.String()) })
		if len(labelSets) == 0 {
			labelSets = []Labels{nil}
			res.Caveats.UnknownCallee = true
		}
	}

	strict := !strings.EqualFold(m.Spec.MTLS.Mode, resource.MTLSPermissive)
	res.Caveats.PlaintextPermitted = q.Plaintext && !strict

	e, err := policy.Compile(m.Policies, policy.Options{
		DefaultAllow: m.Spec.Authorization.Default == resource.AuthorizationAllow,
		TrustDomain:  trustDomain,
	})
	if err != nil {
		return nil, &CompileError{Err: err}
	}
	w := policy.Workload{Namespace: q.ToNamespace, Service: q.ToService, Labels: labelSets[0]}
	d := e.DecideAudit(&w, &req, func(a policy.AuditResult) {
		action := "ALLOW"
		if a.Deny {
			action = "DENY"
		}
		res.Audit = append(res.Audit, Audit{Policy: a.Policy, Action: action, Rule: a.Rule, Intent: intentOf(m.Policies, a.Policy, a.Rule),
			Matched: a.Matched, WouldAllow: a.WouldAllow, Decision: verdict(a.WouldAllow), Reason: a.Reason})
	})
	res.Decision, res.Policy, res.Rule, res.Reason, res.Cause = verdict(d.Allow), d.Policy, d.Rule, d.Reason, d.Cause.String()
	res.Intent = intentOf(m.Policies, d.Policy, d.Rule)
	mtlsRequired := q.Plaintext && strict
	if mtlsRequired {
		// The proxy closes a plaintext connection under STRICT before any
		// policy (trellis_inbound_rejected_total{reason="plaintext"}).
		res.Decision, res.Policy, res.Rule, res.Cause = "DENY", "", -1, CauseMTLSRequired
		res.Reason = "mTLS required: the mesh's mtls.mode is STRICT, so the proxy refuses a plaintext connection before any policy"
		res.Audit = []Audit{}
	}
	res.Labels = labelSets[0]
	res.Selecting = e.Selecting(&w)
	if res.Selecting == nil {
		res.Selecting = []string{}
	}
	res.Request = RequestSummary{Protocol: "TCP", Port: req.Port}
	if req.HTTP {
		res.Request = RequestSummary{Protocol: "HTTP", Port: req.Port, Method: req.Method, Path: req.Path, Host: req.Host,
			RequestPrincipal: q.RequestPrincipal, Claims: q.Claims}
		for k := range q.Header {
			if res.Request.Headers == nil {
				res.Request.Headers = map[string]string{}
			}
			res.Request.Headers[strings.ToLower(k)] = q.Header.Get(k)
		}
	}

	res.Custom = customChecks(e, m, &w, &req, d.Allow && !mtlsRequired)
	if mtlsRequired {
		return res, nil
	}
	if len(labelSets) > 1 {
		differ := false
		var each []LabelDecision
		for _, ls := range labelSets {
			dd := e.Decide(&policy.Workload{Namespace: q.ToNamespace, Service: q.ToService, Labels: ls}, &req)
			differ = differ || dd != d
			each = append(each, LabelDecision{Labels: ls, Decision: dd})
		}
		if differ {
			res.Caveats.LabelDecisions = each
		}
	}
	if req.Port == 0 {
		res.Caveats.PortPolicies = portPolicies(m.Policies, res.Selecting)
	}
	return res, nil
}

func verdict(allow bool) string {
	if allow {
		return "ALLOW"
	}
	return "DENY"
}

// portPolicies returns those of refs whose rules have port conditions.
func portPolicies(policies []resource.Object, refs []string) []string {
	var out []string
	for i := range policies {
		o := &policies[i]
		if !slices.Contains(refs, o.Metadata.Namespace+"/"+o.Metadata.Name) {
			continue
		}
		spec, err := resource.AuthorizationPolicySpecOf(o)
		if err != nil {
			continue
		}
		if slices.ContainsFunc(spec.Rules, func(r resource.Rule) bool {
			return slices.ContainsFunc(r.To, func(op resource.Operation) bool { return len(op.Ports) > 0 || len(op.NotPorts) > 0 })
		}) {
			out = append(out, o.Metadata.Namespace+"/"+o.Metadata.Name)
		}
	}
	return out
}

// intentOf names the Intent behind rule of the policy called ref
// ("namespace/name"), when that policy was generated from Intents.
func intentOf(policies []resource.Object, ref string, rule int) string {
	if ref == "" || rule < 0 {
		return ""
	}
	for i := range policies {
		o := &policies[i]
		if o.Metadata.Namespace+"/"+o.Metadata.Name != ref {
			continue
		}
		if src := resource.RuleSources(o); rule < len(src) {
			return src[rule]
		}
		return ""
	}
	return ""
}
