package dataplane

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/policy"
)

// The inbound admission chain: the checks every inbound HTTP request
// passes before the app, whatever carries it (the HTTP/1.1 fast path or
// net/http over HTTP/1.x or HTTP/2). Each transport wraps its request in a
// requestView, runs admit, and writes the verdict its own way. A new
// inbound step (end-user JWT, external authorization, rate limits) is one
// more entry in admissionSteps, so no path can miss it.

// requestView is what admission sees of a request: read access to the
// request line and fields, and the removal of fields only the proxy may
// set. Values are valid during admit only.
type requestView interface {
	Method() string
	// RawPath is the request target's path as received, still
	// percent-encoded, without the query.
	RawPath() string
	Host() string
	// HTTP11 is true for an HTTP/1.1 request (false for HTTP/1.0 and
	// HTTP/2), the only version an Upgrade is taken on.
	HTTP11() bool
	// Get returns the first value of a field, case-insensitively.
	Get(name string) string
	// Values returns every value of a field, case-insensitively.
	Values(name string) []string
	// Filter runs screenField on every field name, removing the fields
	// it drops; it stops at the first refusal.
	Filter(strip *meshconfig.HeaderStrip) *refusal
	// SetPath replaces the path the app receives (the query stays).
	SetPath(path string)
	// header is the view for the authorizer.
	header() (http.Header, func(string) string)
}

// verdict is how admission ended.
type verdict struct {
	// refused is the answer when the request does not reach the app.
	refused *refusal
	// path is the canonical path (policy.CanonicalPath), what policies
	// matched and the app receives.
	path string
	// upgrade is the protocol an admitted Upgrade switches to, or "".
	upgrade string
	// authorized says authorization ran; dec is then its decision.
	authorized bool
	dec        Decision
}

// admissionStep is one check; false stops the chain with v.refused set.
type admissionStep func(in *Inbound, r requestView, p *peer, snap *meshconfig.Snapshot, v *verdict) bool

// admissionSteps run in this order; the first refusal wins.
var admissionSteps = []admissionStep{
	requireSnapshot,
	requireMTLS,
	screenMethod,
	screenFields,
	canonicalizePath,
	screenUpgrade,
	authorize,
}

// admit runs the admission chain for one request into v. The caller owns
// v: the fast path keeps one per connection, so the steps (called through
// function values, which makes v escape) allocate nothing per request.
func (in *Inbound) admit(r requestView, p *peer, snap *meshconfig.Snapshot, v *verdict) {
	*v = verdict{}
	for _, step := range admissionSteps {
		if !step(in, r, p, snap, v) {
			return
		}
	}
}

// refuse ends the chain with rf.
func (v *verdict) refuse(rf *refusal) bool {
	v.refused = rf
	return false
}

// requireSnapshot: nothing is admitted before the first configuration.
func requireSnapshot(_ *Inbound, _ requestView, _ *peer, snap *meshconfig.Snapshot, v *verdict) bool {
	if snap == nil {
		return v.refuse(&refusal{code: http.StatusServiceUnavailable, msg: "trellis: inbound has no configuration yet\n"})
	}
	return true
}

// requireMTLS: a plaintext connection accepted while PERMISSIVE outlives
// a switch to STRICT; its requests stop here, and the connection closes.
func requireMTLS(_ *Inbound, _ requestView, p *peer, snap *meshconfig.Snapshot, v *verdict) bool {
	if !p.mtls && snap.MTLSMode != "PERMISSIVE" {
		return v.refuse(&refusal{code: http.StatusForbidden, msg: "trellis: mutual TLS required\n", close: true})
	}
	return true
}

// screenMethod refuses standard methods in another case (checkMethod).
func screenMethod(in *Inbound, r requestView, _ *peer, _ *meshconfig.Snapshot, v *verdict) bool {
	if rf := checkMethod(r.Method()); rf != nil {
		in.cfg.Metrics.refuseRequest(refuseBadRequest)
		return v.refuse(rf)
	}
	return true
}

// screenFields removes what only the proxy may say for the caller (every
// spelling of X-Forwarded-Client-Cert, the mesh's strip list) before any
// policy sees the request, and refuses framing look-alikes.
func screenFields(in *Inbound, r requestView, _ *peer, snap *meshconfig.Snapshot, v *verdict) bool {
	if rf := r.Filter(snap.HeaderStrip()); rf != nil {
		in.cfg.Metrics.refuseRequest(refuseBadRequest)
		return v.refuse(rf)
	}
	return true
}

// canonicalizePath: policies see, and the app receives, one canonical
// path; forms the mesh's path mode refuses get 400.
func canonicalizePath(in *Inbound, r requestView, _ *peer, snap *meshconfig.Snapshot, v *verdict) bool {
	raw := r.RawPath()
	canon, err := policy.CanonicalPath(raw, snap.PathMode)
	if err != nil {
		in.cfg.Metrics.refuseRequest(refuseBadRequest)
		return v.refuse(badRequest(err.Error()))
	}
	if canon != raw {
		r.SetPath(canon)
	}
	v.path = canon
	return true
}

// screenUpgrade admits an Upgrade only to an allowed protocol on an
// HTTP/1.1 GET (checkUpgrade).
func screenUpgrade(in *Inbound, r requestView, _ *peer, snap *meshconfig.Snapshot, v *verdict) bool {
	up, rf := checkUpgrade(r, snap.AllowedUpgrades)
	if rf != nil {
		in.cfg.Metrics.refuseRequest(refuseBadRequest)
		return v.refuse(rf)
	}
	v.upgrade = up
	return true
}

// authorize asks the Authorizer and records its decision; a denial is 403
// naming the policy unless the mesh hides it.
func authorize(in *Inbound, r requestView, p *peer, snap *meshconfig.Snapshot, v *verdict) bool {
	h, get := r.header()
	dec := in.cfg.Authorizer.Authorize(snap, &Request{
		Source: p.id, Principal: p.principal, Protocol: in.cfg.Protocol,
		Method: r.Method(), Path: v.path, Host: r.Host(), Header: h, GetHeader: get,
	})
	in.cfg.Metrics.decision(dec)
	v.authorized, v.dec = true, dec
	if dec.Allow {
		return true
	}
	if in.log.Enabled(context.Background(), slog.LevelDebug) {
		in.log.Debug("request denied", "source", p.principal, "method", r.Method(), "path", v.path, "policy", dec.Policy, "reason", dec.Reason)
	}
	rf := &refusal{code: http.StatusForbidden, msg: "RBAC: access denied\n"}
	if dec.Policy != "" && !snap.HidePolicy {
		rf.deniedBy = dec.Policy
	}
	return v.refuse(rf)
}

// screenField decides one caller-supplied field: refused (a framing
// look-alike), dropped (X-Forwarded-Client-Cert in any spelling, or on the
// strip list), or kept.
func screenField(name string, strip *meshconfig.HeaderStrip) (keep bool, rf *refusal) {
	if rf := checkFieldName(name); rf != nil {
		return false, rf
	}
	return !isXFCC(name) && !strip.Match(name), nil
}
