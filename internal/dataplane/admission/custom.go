package admission

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/trellismesh/trellis/internal/extauthz"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/policy"
)

// Recorder reasons of external authorization (action CUSTOM).
const (
	// ReasonExtAuthzDenied: the provider answered with a denial.
	ReasonExtAuthzDenied = "ext_authz_denied"
	// ReasonExtAuthzError: the provider could not answer (unreachable,
	// timed out, unknown) and fails closed.
	ReasonExtAuthzError = "ext_authz_error"
)

// CustomLister is an Authorizer that also knows the CUSTOM policies
// (PolicyAuthorizer): AppendCustom appends to dst those selecting the
// workload whose rules match req, in evaluation order, allocating only
// to grow dst; CustomDenied records a request a provider denied (or
// failed closed on), as Authorize records its denials. Same concurrency
// rules as Authorize.
type CustomLister interface {
	AppendCustom(dst []policy.CustomMatch, snap *meshconfig.Snapshot, req *Request) []policy.CustomMatch
	CustomDenied(req *Request, d Decision)
}

// custom asks the provider of every CUSTOM policy matching a request
// the local policies allowed; the first denial (or failure, unless the
// provider fails open) refuses it. An allowing answer's listed headers
// are set on the request the app receives. Requests no CUSTOM policy
// can select pass at the cost of one check: HasCustom is false.
func custom(c *Chain, r View, p Peer, snap *meshconfig.Snapshot, v *Verdict) bool {
	if snap.Engine == nil || !snap.Engine.HasCustom() {
		return true
	}
	cl, ok := c.Authorizer.(CustomLister)
	if !ok {
		return true
	}
	// v.authz, not a local: the interface call would make a local
	// escape, an allocation per request.
	h, get := r.Header()
	v.authz = Request{Source: p.ID, Principal: p.Principal, Protocol: c.Protocol,
		Method: r.Method(), Path: v.Path, Host: r.Host(), Header: h, GetHeader: get}
	if v.User != nil {
		v.authz.RequestPrincipal, v.authz.Claim = v.User.Principal, v.User.Values
	}
	matches := cl.AppendCustom(v.custom[:0], snap, &v.authz)
	if len(matches) == 0 {
		v.authz = Request{}
		return true
	}
	defer func() { v.authz = Request{} }()
	if h != nil {
		get = h.Get
	}
	check := extauthz.Request{
		Source: p.Principal, Destination: c.Self, Method: r.Method(), Path: v.Path, Query: r.RawQuery(),
		Host: r.Host(), Protocol: r.Proto(), Header: get,
	}
	if v.User != nil {
		check.RequestPrincipal = v.User.Principal
	}
	for _, m := range matches {
		res := c.checkExternal(m.Provider, snap.ExtAuthz[m.Provider], &check)
		if c.Recorder != nil {
			c.Recorder.Decided(Decision{Allow: res.Allow, Policy: m.Policy, Rule: m.Rule})
		}
		if !res.Allow {
			rf := c.customRefusal(snap, p, r, v, m, &res)
			cl.CustomDenied(&v.authz, v.Decision)
			return v.refuse(rf)
		}
		if res.Err != nil {
			c.log().Debug("external authorization failed open", "provider", m.Provider, "policy", m.Policy, "err", res.Err)
		}
		for _, u := range res.Upstream {
			r.SetHeader(u.Name, u.Value)
		}
	}
	return true
}

func (c *Chain) checkExternal(name string, prov *meshconfig.ExtAuthzProvider, req *extauthz.Request) extauthz.Result {
	if c.ExtAuthz == nil {
		return extauthz.Result{Status: http.StatusForbidden, Err: errNoPool}
	}
	return c.ExtAuthz.Check(context.Background(), name, prov, req)
}

// customRefusal is a CUSTOM denial: the provider's status, body and
// listed headers; or, when it could not answer, 403 saying the
// authorization service is unavailable. The local decision becomes this
// denial, for access events and denial metrics.
func (c *Chain) customRefusal(snap *meshconfig.Snapshot, p Peer, r View, v *Verdict, m policy.CustomMatch, res *extauthz.Result) *Refusal {
	rf := &Refusal{Code: res.Status, Msg: res.Body}
	reason := "denied by external authorization " + m.Provider
	if res.Err != nil {
		c.refused(ReasonExtAuthzError)
		reason = "external authorization service " + m.Provider + " unavailable: " + res.Err.Error()
		rf.Msg = "trellis: " + reason + "\n"
	} else {
		c.refused(ReasonExtAuthzDenied)
		if rf.Msg == "" {
			rf.Msg = "trellis: " + reason + "\n"
		}
		for _, d := range res.Downstream {
			rf.Header = append(rf.Header, Field(d))
		}
	}
	if !snap.HidePolicy {
		rf.DeniedBy = m.Policy
	}
	v.Decision = Decision{Allow: false, Policy: m.Policy, Rule: m.Rule, Reason: reason}
	if log := c.log(); log.Enabled(context.Background(), slog.LevelDebug) {
		log.Debug("request denied", "source", p.Principal, "method", r.Method(), "path", v.Path, "policy", m.Policy, "reason", reason)
	}
	return rf
}

func (c *Chain) log() *slog.Logger { return cmp.Or(c.Log, slog.Default()) }

var errNoPool = errors.New("the inbound has no external authorization client")
