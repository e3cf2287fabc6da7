package dataplane

import (
	"net/http"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/tracing"
)

// Tracing (docs/tracing.md). Each side starts its span where it has the
// request's head: the outbound (and the gateway) a client span once the
// request is routed, the inbound a server span once it is admitted or
// refused. A request the tracer does not sample costs a header scan
// (tracing.Extract) and, when no caller decided, one traceparent carrying
// "not sampled" to the next hop; a sampled one gets a span whose
// traceparent (and b3, for B3 callers) replaces the caller's.

// tracer is the current tracer, nil when tracing is off.
func (c *DataPlaneConfig) tracer() *tracing.Tracer { return c.Tracing.Tracer() }

// spanName is a span's name: side (outbound, inbound, gateway) and the
// service.
func spanName(side, svc string) string { return side + " " + svc }

// traceH1 decides whether an HTTP/1.1 request is traced and sets the
// trace fields the next hop gets.
func traceH1(t *tracing.Tracer, kind tracing.Kind, side, svc string, req *h1.Head, start time.Time) tracing.Span {
	if t == nil {
		return tracing.Span{}
	}
	p := tracing.Extract(req)
	if !t.Sample(&p) {
		if !p.Decided {
			req.Fields = append(req.Fields, h1.Field{Name: "traceparent", Value: tracing.Unsampled(&p)})
		}
		return tracing.Span{}
	}
	sp := t.Start(kind, spanName(side, svc), &p, req, start)
	for i := range req.Fields {
		if f := &req.Fields[i]; tracing.IsField(f.Name) {
			f.Drop = true
		}
	}
	req.Fields = append(req.Fields, h1.Field{Name: "traceparent", Value: sp.Traceparent()})
	if b := sp.B3(); b != "" {
		req.Fields = append(req.Fields, h1.Field{Name: "b3", Value: b})
	}
	return sp
}

// traceHTTP is traceH1 for net/http's requests.
func traceHTTP(t *tracing.Tracer, kind tracing.Kind, side, svc string, h http.Header, start time.Time) tracing.Span {
	if t == nil {
		return tracing.Span{}
	}
	p := tracing.Extract(h)
	if !t.Sample(&p) {
		if !p.Decided {
			h.Set("Traceparent", tracing.Unsampled(&p))
		}
		return tracing.Span{}
	}
	sp := t.Start(kind, spanName(side, svc), &p, h, start)
	for _, f := range tracing.Fields {
		h.Del(f)
	}
	h.Set("Traceparent", sp.Traceparent())
	if b := sp.B3(); b != "" {
		h.Set("B3", b)
	}
	return sp
}

// traceH2 is traceH1 for the HTTP/2 relay's requests (in Route).
func traceH2(t *tracing.Tracer, kind tracing.Kind, side, svc string, req *h2relay.Request, start time.Time) tracing.Span {
	if t == nil {
		return tracing.Span{}
	}
	p := tracing.Extract(req)
	if !t.Sample(&p) {
		if !p.Decided {
			req.Fields = append(req.Fields, hpack.HeaderField{Name: "traceparent", Value: tracing.Unsampled(&p)})
		}
		return tracing.Span{}
	}
	sp := t.Start(kind, spanName(side, svc), &p, req, start)
	for _, f := range tracing.Fields {
		req.Del(f)
	}
	req.Fields = append(req.Fields, hpack.HeaderField{Name: "traceparent", Value: sp.Traceparent()})
	if b := sp.B3(); b != "" {
		req.Fields = append(req.Fields, hpack.HeaderField{Name: "b3", Value: b})
	}
	return sp
}

// destID is the identity rt's endpoints present (the first endpoint's
// first expected SPIFFE ID): the client span's destination. The inbound's
// server span has the verified one.
func (rt *route) destID() string {
	if rt == nil || len(rt.eps) == 0 || len(rt.eps[0].wantList) == 0 {
		return ""
	}
	return rt.eps[0].wantList[0].String()
}

// outboundAttrs are a client span's attributes.
func (o *Outbound) outboundAttrs(rt *route, rule *meshconfig.RouteRule, method, path string, code int) *tracing.Attrs {
	a := &tracing.Attrs{Source: o.principal, Method: method, Path: path, Status: code, GRPCStatus: -1}
	if rt != nil {
		a.Destination, a.Service = rt.destID(), rt.key
	}
	if rule != nil {
		a.Route, a.RouteRule = rule.Ref, rule.Index
	}
	return a
}

// inboundAttrs are a server span's attributes.
func (in *Inbound) inboundAttrs(p *peer, o *outcome, method, path string) *tracing.Attrs {
	a := &tracing.Attrs{Source: p.principal, Destination: in.chain.Self, Service: in.svcKey,
		Method: method, Path: path, Status: o.code, GRPCStatus: -1}
	if o.authorized {
		a.Authorized, a.Allow, a.Policy, a.AuditDenied = true, o.dec.Allow, o.dec.Policy, o.dec.AuditDenied
	}
	return a
}
