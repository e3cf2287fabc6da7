package policy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/trellismesh/trellis/internal/resource"
)

// MeshNamespace is the namespace whose policies with an empty selector
// protect every workload of the mesh: the control plane's own,
// identity.ControlPlaneNamespace (a test keeps the two equal; policy does
// not import identity for one constant).
const MeshNamespace = "trellis-system"

// Workload is the called side of a request: the workload whose inbound
// traffic is being decided.
type Workload struct {
	Namespace string
	Service   string
	Labels    map[string]string
}

// Request is what a decision sees: one HTTP request, or a whole TCP
// connection. An empty string (or port 0) means the request does not carry
// that attribute; see docs/policy.md for how conditions on missing
// attributes evaluate.
type Request struct {
	// Principal is the caller's SPIFFE ID from its verified certificate;
	// "" for a plaintext caller (PERMISSIVE mode).
	Principal string
	// SourceNamespace is the caller's namespace. When empty it is taken
	// from Principal (spiffe://TD/ns/NS/sa/SA), but only when TD is
	// Options.TrustDomain: a namespace of another trust domain is not
	// this mesh's namespace. The proxy leaves it empty.
	SourceNamespace string
	// SourceService is the caller's service; "" when unknown.
	SourceService string
	// HTTP is false for an opaque TCP connection, whose method, path,
	// host and headers are not known.
	HTTP bool
	// Port is the destination port the caller dialed.
	Port int
	// Method, Path and Host are the HTTP request's. Path should be
	// normalized by the caller (dot segments, duplicate slashes); a query
	// or fragment is ignored. Hosts compare case-insensitively, as sent
	// (with any ":port").
	Method, Path, Host string
	// Header returns the value of a request header, "" if absent. It is
	// called with canonical MIME header names ("X-Tenant"), so that
	// http.Header.Get can serve it without allocating. Nil means no
	// headers.
	Header func(name string) string
	// RequestPrincipal is the end user's verified token, "ISSUER/SUBJECT"
	// (JWTAuthentication); "" without one.
	RequestPrincipal string
	// Claim returns the values of a claim of that token (a list claim's
	// elements; a string or number claim as one value), nil when absent.
	// Nil means no claims.
	Claim func(name string) []string
}

// Cause says what decided a request.
type Cause uint8

// Causes. The engine considers them in the order Deny, Allow, NoAllowMatch,
// MeshDefault (see docs/policy.md, "Evaluation order").
const (
	// CauseMeshDefault: no enforced ALLOW policy selects the workload, so
	// the mesh default (Options.DefaultAllow) decided.
	CauseMeshDefault Cause = iota
	// CauseDeny: a rule of an enforced DENY policy matched.
	CauseDeny
	// CauseAllow: a rule of an enforced ALLOW policy matched.
	CauseAllow
	// CauseNoAllowMatch: enforced ALLOW policies select the workload and
	// none of their rules matched.
	CauseNoAllowMatch
)

func (c Cause) String() string {
	switch c {
	case CauseMeshDefault:
		return "mesh-default"
	case CauseDeny:
		return "deny-policy"
	case CauseAllow:
		return "allow-policy"
	case CauseNoAllowMatch:
		return "no-allow-match"
	}
	return fmt.Sprintf("Cause(%d)", uint8(c))
}

// Decision is the outcome of one request.
type Decision struct {
	Allow bool
	Cause Cause
	// Policy is the deciding policy, "namespace/name", when one policy
	// decided (CauseDeny, CauseAllow); "" otherwise.
	Policy string
	// Rule is the index of the matching rule in Policy's spec.rules, or
	// -1.
	Rule int
	// Reason is a short, constant explanation for logs and error bodies.
	Reason string
}

// Decision reasons.
const (
	reasonDeny         = "denied by a DENY policy"
	reasonAllow        = "allowed by an ALLOW policy"
	reasonNoAllowMatch = "no ALLOW policy matched"
	reasonDefaultAllow = "mesh default allow"
	reasonDefaultDeny  = "mesh default deny"
)

// AuditResult is what one audit-mode policy would have done to a request.
type AuditResult struct {
	// Policy is the audit-mode policy, "namespace/name".
	Policy string
	// Deny reports whether it is a DENY policy (else ALLOW).
	Deny bool
	// Matched reports whether one of its rules matched; Rule is that
	// rule's index, or -1. For an ALLOW policy, !Matched means "this
	// policy alone would not let the request in", which is what a
	// tightened ALLOW under trial wants to know.
	Matched bool
	Rule    int
	// WouldAllow is the decision the engine would make were this policy
	// enforced, with the enforced policies as they are. It differs from
	// the real decision only if enforcing the policy would change it.
	WouldAllow bool
	Reason     string
}

// Audit reasons.
const (
	reasonAuditDenyMatched   = "audit DENY policy matched"
	reasonAuditDenyUnmatched = "audit DENY policy did not match"
	reasonAuditAllowMatched  = "audit ALLOW policy matched"
	reasonAuditAllowMissed   = "audit ALLOW policy did not match"
)

// Options are the mesh-wide settings an Engine decides with. The zero
// value denies what no policy allows and trusts namespaces from any trust
// domain.
type Options struct {
	// DefaultAllow is Mesh.spec.authorization.default == allow: a call to
	// a workload that no enforced ALLOW policy selects is allowed.
	DefaultAllow bool
	// TrustDomain is the mesh's trust domain. Caller namespaces are read
	// only from principals in it. Empty trusts every trust domain.
	TrustDomain string
}

// Engine decides requests against a compiled set of policies. It is
// immutable and safe for concurrent use; compile a new one for each
// configuration version.
type Engine struct {
	opts     Options
	policies []*compiled // in evaluation order: namespace, then name
	bySvc    map[svcKey]*bucket
	byNS     map[string]*bucket
	mesh     bucket
	// custom: a CUSTOM policy was compiled (AppendCustom has work).
	custom bool
}

type svcKey struct{ namespace, service string }

// bucket holds the policies that may select the workloads of one
// (namespace, service) or of one namespace, each list in evaluation order.
// Only matchLabels remains to be checked against a workload.
type bucket struct {
	deny, allow, audit, custom []*compiled
}

// compiled is one compiled policy.
type compiled struct {
	ref       string // namespace/name
	namespace string
	name      string
	spec      resource.AuthorizationPolicySpec
	deny      bool
	audit     bool
	// custom: action CUSTOM, which asks provider; it takes no part in
	// the local decision.
	custom   bool
	provider string
	meshWide bool
	service  string
	labels   []label // matchLabels, sorted by key
	rules    []rule
}

type label struct{ key, value string }

// Compile checks and compiles AuthorizationPolicy objects, usually already
// validated by resource.Validate. An object without a namespace is in
// resource.DefaultNamespace. It fails, naming every bad object, if one is
// not an AuthorizationPolicy, has an invalid spec, or has the namespace and
// name of another.
func Compile(policies []resource.Object, opts Options) (*Engine, error) {
	e := &Engine{opts: opts, bySvc: map[svcKey]*bucket{}, byNS: map[string]*bucket{}}
	var errs []error
	seen := map[string]bool{}
	for i := range policies {
		p, err := compilePolicy(&policies[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[p.ref] {
			errs = append(errs, fmt.Errorf("%s: defined twice", policies[i].Ref()))
			continue
		}
		seen[p.ref] = true
		e.policies = append(e.policies, p)
		e.custom = e.custom || p.custom
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("policy.Compile: %w", errors.Join(errs...))
	}
	slices.SortFunc(e.policies, func(a, b *compiled) int {
		return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	e.index()
	return e, nil
}

func compilePolicy(o *resource.Object) (*compiled, error) {
	if o.Metadata.Name == "" {
		return nil, fmt.Errorf("%s: metadata.name is required", o.Ref())
	}
	spec, err := resource.AuthorizationPolicySpecOf(o)
	if err != nil {
		return nil, err
	}
	ns := o.Metadata.Namespace
	if ns == "" {
		ns = resource.DefaultNamespace
	}
	p := &compiled{
		ref:       ns + "/" + o.Metadata.Name,
		namespace: ns,
		name:      o.Metadata.Name,
		spec:      spec,
		deny:      spec.Action == resource.ActionDeny,
		audit:     spec.Enforcement == resource.EnforcementAudit,
		custom:    spec.Action == resource.ActionCustom,
		service:   spec.Selector.Service,
	}
	if p.custom {
		p.provider = spec.Provider.Name
	}
	for k, v := range spec.Selector.MatchLabels {
		p.labels = append(p.labels, label{k, v})
	}
	slices.SortFunc(p.labels, func(a, b label) int { return cmp.Compare(a.key, b.key) })
	p.meshWide = ns == MeshNamespace && p.service == "" && len(p.labels) == 0
	for i := range spec.Rules {
		// A CUSTOM rule matches as a DENY rule does (a not-list on a
		// missing attribute holds): matching asks the provider, so in
		// doubt it is asked.
		p.rules = append(p.rules, compileRule(&spec.Rules[i], p.deny || p.custom))
	}
	return p, nil
}

// index builds the buckets: a workload's bucket holds the policies of its
// service, the namespace-wide and label-selected policies of its namespace,
// and the mesh-wide policies. Policies are in evaluation order, so merging
// keeps that order.
func (e *Engine) index() {
	nsLevel := map[string][]*compiled{}
	svcLevel := map[svcKey][]*compiled{}
	var mesh []*compiled
	for _, p := range e.policies {
		switch {
		case p.meshWide:
			mesh = append(mesh, p)
		case p.service == "":
			nsLevel[p.namespace] = append(nsLevel[p.namespace], p)
		default:
			k := svcKey{p.namespace, p.service}
			svcLevel[k] = append(svcLevel[k], p)
			if _, ok := nsLevel[p.namespace]; !ok {
				nsLevel[p.namespace] = nil
			}
		}
	}
	e.mesh = newBucket(mesh)
	for ns, ps := range nsLevel {
		b := newBucket(merge(ps, mesh))
		e.byNS[ns] = &b
	}
	for k, ps := range svcLevel {
		b := newBucket(merge(merge(ps, nsLevel[k.namespace]), mesh))
		e.bySvc[k] = &b
	}
}

func merge(a, b []*compiled) []*compiled {
	out := make([]*compiled, 0, len(a)+len(b))
	out = append(append(out, a...), b...)
	slices.SortStableFunc(out, func(x, y *compiled) int {
		return cmp.Or(cmp.Compare(x.namespace, y.namespace), cmp.Compare(x.name, y.name))
	})
	return out
}

func newBucket(ps []*compiled) bucket {
	var b bucket
	for _, p := range ps {
		switch {
		case p.custom:
			b.custom = append(b.custom, p)
		case p.audit:
			b.audit = append(b.audit, p)
		case p.deny:
			b.deny = append(b.deny, p)
		default:
			b.allow = append(b.allow, p)
		}
	}
	return b
}

func (e *Engine) bucketFor(w *Workload) *bucket {
	if b := e.bySvc[svcKey{w.Namespace, w.Service}]; b != nil {
		return b
	}
	if b := e.byNS[w.Namespace]; b != nil {
		return b
	}
	return &e.mesh
}

// selects checks what the bucket leaves to check: matchLabels.
func (p *compiled) selects(w *Workload) bool {
	for _, l := range p.labels {
		if v, ok := w.Labels[l.key]; !ok || v != l.value {
			return false
		}
	}
	return true
}

// match returns the index of the first rule matching a, or -1.
func (p *compiled) match(a *attrs) int {
	for i := range p.rules {
		if p.rules[i].match(a) {
			return i
		}
	}
	return -1
}

// Decide decides r, a call to w. It does not allocate.
func (e *Engine) Decide(w *Workload, r *Request) Decision {
	return e.DecideAudit(w, r, nil)
}

// DecideAudit is Decide, and calls audit (when not nil) once for each
// audit-mode policy that selects w, in evaluation order, before returning.
// Audit-mode policies never change the returned decision. It allocates
// nothing itself; what audit does is up to it.
func (e *Engine) DecideAudit(w *Workload, r *Request, audit func(AuditResult)) Decision {
	var zw Workload
	if w == nil {
		w = &zw
	}
	var zr Request
	if r == nil {
		r = &zr
	}
	b := e.bucketFor(w)
	var a attrs
	a.init(r, e.opts.TrustDomain)

	d := e.decide(b, w, &a)
	if d.Allow && !r.HTTP && len(b.custom) > 0 {
		d = customTCP(b, w, &a, d)
	}
	if audit == nil {
		return d
	}
	for _, p := range b.audit {
		if !p.selects(w) {
			continue
		}
		i := p.match(&a)
		res := AuditResult{Policy: p.ref, Deny: p.deny, Matched: i >= 0, Rule: i}
		switch {
		case p.deny && i >= 0:
			res.WouldAllow, res.Reason = false, reasonAuditDenyMatched
		case p.deny:
			res.WouldAllow, res.Reason = d.Allow, reasonAuditDenyUnmatched
		case i >= 0:
			// Enforced, it would join the ALLOW set and match, so
			// only an enforced DENY could still refuse the request.
			res.WouldAllow, res.Reason = d.Cause != CauseDeny, reasonAuditAllowMatched
		default:
			// Enforced, it would select w without matching: only
			// another ALLOW's match could let the request in.
			res.WouldAllow, res.Reason = d.Cause == CauseAllow, reasonAuditAllowMissed
		}
		audit(res)
	}
	return d
}

func (e *Engine) decide(b *bucket, w *Workload, a *attrs) Decision {
	for _, p := range b.deny {
		if !p.selects(w) {
			continue
		}
		if i := p.match(a); i >= 0 {
			return Decision{Allow: false, Cause: CauseDeny, Policy: p.ref, Rule: i, Reason: reasonDeny}
		}
	}
	selected := false
	for _, p := range b.allow {
		if !p.selects(w) {
			continue
		}
		selected = true
		if i := p.match(a); i >= 0 {
			return Decision{Allow: true, Cause: CauseAllow, Policy: p.ref, Rule: i, Reason: reasonAllow}
		}
	}
	switch {
	case selected:
		return Decision{Allow: false, Cause: CauseNoAllowMatch, Rule: -1, Reason: reasonNoAllowMatch}
	case e.opts.DefaultAllow:
		return Decision{Allow: true, Cause: CauseMeshDefault, Rule: -1, Reason: reasonDefaultAllow}
	}
	return Decision{Allow: false, Cause: CauseMeshDefault, Rule: -1, Reason: reasonDefaultDeny}
}

// Selecting returns the policies ("namespace/name") that select w, enforced
// and audit-mode, in evaluation order. The caller owns the slice.
func (e *Engine) Selecting(w *Workload) []string {
	b := e.bucketFor(w)
	var out []*compiled
	for _, list := range [][]*compiled{b.deny, b.allow, b.audit, b.custom} {
		for _, p := range list {
			if p.selects(w) {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(x, y *compiled) int {
		return cmp.Or(cmp.Compare(x.namespace, y.namespace), cmp.Compare(x.name, y.name))
	})
	refs := make([]string, len(out))
	for i, p := range out {
		refs[i] = p.ref
	}
	return refs
}

// Len returns the number of policies compiled into e.
func (e *Engine) Len() int { return len(e.policies) }

// Options returns the options e was compiled with.
func (e *Engine) Options() Options { return e.opts }

// Selects reports whether a policy in namespace ns with selector sel
// protects w: w is in ns, and every selector field set matches (service
// equal, matchLabels a subset of w's labels). A policy with an empty
// selector in MeshNamespace protects every workload of the mesh.
func Selects(ns string, sel resource.Selector, w *Workload) bool {
	if sel.Service == "" && len(sel.MatchLabels) == 0 && ns == MeshNamespace {
		return true
	}
	if ns != w.Namespace || sel.Service != "" && sel.Service != w.Service {
		return false
	}
	for k, v := range sel.MatchLabels {
		if got, ok := w.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
