package policy

// CustomMatch is a CUSTOM policy whose rules match a request: its
// provider is to be asked.
type CustomMatch struct {
	// Policy is "namespace/name"; Rule the index of its matching rule.
	Policy string
	Rule   int
	// Provider names the Mesh's extension provider (spec.provider.name).
	Provider string
}

// HasCustom reports whether any CUSTOM policy was compiled into e: when
// not, AppendCustom never appends and the caller can skip it.
func (e *Engine) HasCustom() bool { return e.custom }

// AppendCustom appends to dst every enforced CUSTOM policy that selects
// w and has a rule matching r, in evaluation order (namespace, then
// name), and returns the extended slice. The local decision (Decide) is
// separate: the caller asks these policies' providers only for a request
// the local policies allow (docs/policy.md, "External authorization").
// It allocates only to grow dst.
func (e *Engine) AppendCustom(dst []CustomMatch, w *Workload, r *Request) []CustomMatch {
	if !e.custom {
		return dst
	}
	var zw Workload
	if w == nil {
		w = &zw
	}
	var zr Request
	if r == nil {
		r = &zr
	}
	b := e.bucketFor(w)
	if len(b.custom) == 0 {
		return dst
	}
	var a attrs
	a.init(r, e.opts.TrustDomain)
	for _, p := range b.custom {
		if !p.selects(w) {
			continue
		}
		if i := p.match(&a); i >= 0 {
			dst = append(dst, CustomMatch{Policy: p.ref, Rule: i, Provider: p.provider})
		}
	}
	return dst
}

// reasonCustomTCP: external authorization decides HTTP requests; a TCP
// connection that a CUSTOM policy matches is denied rather than let in
// unasked.
const reasonCustomTCP = "a CUSTOM policy matches a TCP connection, and external authorization decides HTTP requests only"

// customTCP denies an allowed TCP connection that a CUSTOM policy
// matches (as a DENY rule would: HTTP conditions hold on TCP).
func customTCP(b *bucket, w *Workload, a *attrs, d Decision) Decision {
	for _, p := range b.custom {
		if !p.selects(w) {
			continue
		}
		if i := p.match(a); i >= 0 {
			return Decision{Allow: false, Cause: CauseDeny, Policy: p.ref, Rule: i, Reason: reasonCustomTCP}
		}
	}
	return d
}
