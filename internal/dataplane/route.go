package dataplane

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"golang.org/x/net/http2/hpack"
)

// Routes (kind Route, docs/traffic.md) act at the outbound entry
// points, before the forward loops: match the request, choose a backend
// by weight, rewrite request headers, inject faults, mirror a copy, then
// forward to the backend's route as if the app had called it.

// Bounds of mirroring: copies in flight per Outbound (more are skipped,
// never queued), the largest body copied, and how long a copy may take.
const (
	maxMirrorsInFlight = 64
	maxMirrorBody      = 64 << 10
	mirrorTimeout      = 10 * time.Second
)

// routeRequest applies the Route of the addressed service key, if any:
// the rule that takes the request (nil: none) and the service key to
// send it to.
func (o *Outbound) routeRequest(key, method, path string, h meshconfig.Headers) (string, routed) {
	t := o.routes()
	if t == nil {
		return key, routed{}
	}
	r := t.snap.Routes[key]
	if r == nil {
		return key, routed{}
	}
	rule := r.Match(method, path, h)
	if rule == nil {
		return key, routed{}
	}
	rd := routed{rule: rule, c: o.cfg.Metrics.Route(r.Name, r.Namespace, rule.Ref, rule.Index)}
	rd.c.Inc(metrics.RouteHit)
	if b := rule.Pick(); b != "" {
		return b, rd
	}
	return key, rd
}

// routed is the rule of a Route that took a request, and its counters;
// rule is nil when none did.
type routed struct {
	rule *meshconfig.RouteRule
	c    *metrics.RouteCounters
}

// abortMessage is the body of an injected fault's answer.
const abortMessage = "trellis: fault injected by a Route\n"

// unmatchedMessage is the body of the answer to a request no rule of a
// Route took, when the Route says so (spec.unmatched: Gateway API
// routes answer 404).
const unmatchedMessage = "trellis: no rule of the Route matches the request\n"

// abortMarks are how an abort's answer says what it is: the header
// field (lower case), its value, the body and the grpc-message.
func abortMarks(a *meshconfig.RouteAbort) (field, value, body, grpcMessage string) {
	if a.Unmatched {
		return "x-trellis-route", "unmatched", unmatchedMessage, "no rule of the Route matches the method"
	}
	return "x-trellis-fault", "abort", abortMessage, "fault injected by a Route"
}

// faultFast applies rule's fault to a fast-path request: true with the
// answer already written when it aborts.
func (o *Outbound) faultFast(fc *fastConn, req *h1.Head, rd routed) (answered, keep bool) {
	rule := rd.rule
	if rule.Delay.Delays() {
		rd.c.Inc(metrics.RouteDelayed)
		if !delayFast(fc, rule.Delay.Fixed) {
			return true, false // the caller left: no answer, close
		}
	}
	if rule.Abort.Aborts() {
		rd.c.Inc(metrics.RouteAborted)
		field, value, body, _ := abortMarks(rule.Abort)
		ew := newErrorResponse()
		ew.Header().Set(field, value)
		ew.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ew.WriteHeader(rule.Abort.Status)
		_, _ = io.WriteString(ew, body)
		return true, fc.answer(req, ew, false)
	}
	return false, false
}

// delayStep is how often a delayed fast-path request looks whether its
// caller is still there (the fast path has no request context).
const delayStep = 20 * time.Millisecond

// delayFast waits d, or less when the caller goes away (then false).
func delayFast(fc *fastConn, d time.Duration) bool {
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 {
			return true
		}
		time.Sleep(min(left, delayStep))
		if fc.Gone() {
			return false
		}
	}
}

// rewriteH1 applies a request header rewrite to a fast-path head.
func rewriteH1(req *h1.Head, w *meshconfig.HeaderRewrite) {
	if w == nil {
		return
	}
	drop := func(name string) {
		for i := range req.Fields {
			if f := &req.Fields[i]; strings.EqualFold(f.Name, name) {
				f.Drop = true
			}
		}
	}
	for _, k := range w.Remove {
		drop(k)
	}
	for _, f := range w.Set {
		drop(f.Name)
		req.Fields = append(req.Fields, h1.Field{Name: f.Name, Value: f.Value})
	}
	for _, f := range w.Add {
		req.Fields = append(req.Fields, h1.Field{Name: f.Name, Value: f.Value})
	}
}

// mirrorFast copies a fast-path request to the rule's mirror: bodyless
// ones, and small bodies already buffered.
func (o *Outbound) mirrorFast(fc *fastConn, req *h1.Head, rd routed) {
	rule := rd.rule
	if !rule.Mirror.Mirrors() {
		return
	}
	var body []byte
	switch req.RequestBody() {
	case h1.BodyNone:
	case h1.BodyLength:
		n := int(req.ContentLength)
		if n > maxMirrorBody || fc.br.Buffered() < n {
			rd.c.Inc(metrics.RouteMirrorSkipped)
			return
		}
		b, _ := fc.br.Peek(n)
		body = bytes.Clone(b)
	default:
		rd.c.Inc(metrics.RouteMirrorSkipped)
		return
	}
	h := make(http.Header, len(req.Fields))
	for _, f := range req.Fields {
		if !f.Drop {
			h.Add(f.Name, f.Value)
		}
	}
	o.mirror(rd.c, rule.Mirror.Key, req.Method, req.Target, req.Host, h, body)
}

// mirror sends a copy of a request to the service key in the background
// and drops the answer; it skips the copy when maxMirrorsInFlight are
// out.
func (o *Outbound) mirror(c *metrics.RouteCounters, key, method, target, host string, h http.Header, body []byte) {
	if o.mirrorsInFlight.Add(1) > maxMirrorsInFlight {
		o.mirrorsInFlight.Add(-1)
		c.Inc(metrics.RouteMirrorSkipped)
		return
	}
	c.Inc(metrics.RouteMirrored)
	go func() {
		defer o.mirrorsInFlight.Add(-1)
		ctx, cancel := context.WithTimeout(context.Background(), mirrorTimeout)
		defer cancel()
		r, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
		if err != nil {
			return
		}
		if len(body) == 0 {
			r.Body = http.NoBody
		}
		r.ContentLength = int64(len(body))
		r.Header, r.Host = h, host
		h.Del("Content-Length")
		h.Del("Transfer-Encoding")
		_, rt := o.lookup(key)
		if rt == nil || rt.tcp {
			return
		}
		code, _ := o.forwardHTTP(discardWriter{h: http.Header{}}, r, rt)
		rt.dest.OutboundRequest(code, time.Now())
	}()
}

// discardWriter is the ResponseWriter of a mirrored copy.
type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// routeHTTP applies a Route on the net/http path: it returns the service
// key to forward to, the writer to answer with (response rewrites), and
// the rule that took it (nil: none), and done when the request was
// answered (a fault) or ended.
func (o *Outbound) routeHTTP(w http.ResponseWriter, r *http.Request, key string) (string, http.ResponseWriter, *meshconfig.RouteRule, bool) {
	target, rd := o.routeRequest(key, r.Method, r.URL.Path, r.Header)
	rule := rd.rule
	if rule == nil {
		return target, w, nil, false
	}
	rule.Request.Apply(r.Header)
	if rule.Delay.Delays() {
		rd.c.Inc(metrics.RouteDelayed)
		t := time.NewTimer(rule.Delay.Fixed)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return target, w, rule, true
		}
	}
	if rule.Abort.Aborts() {
		rd.c.Inc(metrics.RouteAborted)
		abortHTTP(w, r, rule.Abort)
		return target, w, rule, true
	}
	if rule.Mirror.Mirrors() {
		o.mirrorHTTP(rd.c, r, rule.Mirror.Key)
	}
	if rule.Response != nil {
		w = &rewriteWriter{ResponseWriter: w, rw: rule.Response}
	}
	return target, w, rule, false
}

// mirrorHTTP copies a net/http request, buffering a small body (the
// caller's body is replaced by the buffer).
func (o *Outbound) mirrorHTTP(c *metrics.RouteCounters, r *http.Request, key string) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength < 0 || r.ContentLength > maxMirrorBody {
			c.Inc(metrics.RouteMirrorSkipped)
			return
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, maxMirrorBody+1))
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
		if err != nil || len(b) > maxMirrorBody {
			c.Inc(metrics.RouteMirrorSkipped)
			return
		}
		body = b
	}
	o.mirror(c, key, r.Method, r.URL.RequestURI(), r.Host, r.Header.Clone(), body)
}

// abortHTTP answers an injected abort (or an unmatched request): a gRPC
// call with a trailers-only status, anything else with the HTTP status.
func abortHTTP(w http.ResponseWriter, r *http.Request, a *meshconfig.RouteAbort) {
	field, value, body, grpcMessage := abortMarks(a)
	w.Header().Set(field, value)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", strconv.Itoa(grpcCodeOf(a)))
		w.Header().Set("Grpc-Message", grpcMessage)
		w.WriteHeader(http.StatusOK)
		return
	}
	http.Error(w, strings.TrimSuffix(body, "\n"), a.Status)
}

// grpcCodeOf is the gRPC status of an abort.
func grpcCodeOf(a *meshconfig.RouteAbort) int { return a.GRPCCode() }

// rewriteWriter applies a response header rewrite as the head is
// written.
type rewriteWriter struct {
	http.ResponseWriter
	rw   *meshconfig.HeaderRewrite
	done bool
}

func (w *rewriteWriter) WriteHeader(code int) {
	if !w.done {
		w.done = true
		if code >= 200 {
			w.rw.Apply(w.ResponseWriter.Header())
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *rewriteWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *rewriteWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes flushes on (streaming responses).
func (w *rewriteWriter) Flush() {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// routeH2 applies a Route on the HTTP/2 relay: the service key to send
// the stream to, the rule that took it (its response rewrite is
// outboundCall.RewriteResponse's), and
// the mirror a body is copied for (outboundCall.Copied), or the answer of
// an injected abort. A delay is the relay's (Request.Delay): the stream
// waits, not the connection's reader.
func (o *Outbound) routeH2(req *h2relay.Request, key string) (string, *h2relay.Response, *meshconfig.RouteRule, *h2Mirror) {
	target, rd := o.routeRequest(key, req.Method, req.Path, req)
	rule := rd.rule
	if rule == nil {
		return target, nil, nil, nil
	}
	if w := rule.Request; w != nil {
		for _, k := range w.RemoveLower {
			req.Del(k)
		}
		for _, f := range w.Set {
			req.Set(f.Lower, f.Value)
		}
		for _, f := range w.Add {
			req.Fields = append(req.Fields, hpack.HeaderField{Name: f.Lower, Value: f.Value})
		}
	}
	if rule.Abort.Aborts() {
		rd.c.Inc(metrics.RouteAborted)
		field, value, body, grpcMessage := abortMarks(rule.Abort)
		if strings.HasPrefix(req.Get("content-type"), "application/grpc") {
			return target, &h2relay.Response{Status: http.StatusOK, Header: []hpack.HeaderField{
				{Name: "content-type", Value: "application/grpc"},
				{Name: "grpc-status", Value: strconv.Itoa(grpcCodeOf(rule.Abort))},
				{Name: "grpc-message", Value: grpcMessage},
				{Name: field, Value: value},
			}}, nil, nil
		}
		return target, &h2relay.Response{Status: rule.Abort.Status, Body: body,
			Header: []hpack.HeaderField{{Name: field, Value: value}}}, nil, nil
	}
	if rule.Delay.Delays() {
		rd.c.Inc(metrics.RouteDelayed)
		req.Delay = rule.Delay.Fixed
	}
	if !rule.Mirror.Mirrors() {
		return target, nil, rule, nil
	}
	h := make(http.Header, len(req.Fields))
	for _, f := range req.Fields {
		h.Add(f.Name, f.Value)
	}
	if req.EndStream {
		o.mirror(rd.c, rule.Mirror.Key, req.Method, req.Path, req.Authority, h, nil)
		return target, nil, rule, nil
	}
	// The body is copied as it passes (h2relay.Request.Copy) and the copy
	// goes once the request has ended.
	req.Copy = true
	return target, nil, rule, &h2Mirror{c: rd.c, key: rule.Mirror.Key, method: req.Method, path: req.Path, host: req.Authority, h: h}
}

// h2Mirror is a mirror copy on the HTTP/2 relay waiting for the request's
// body.
type h2Mirror struct {
	c                       *metrics.RouteCounters
	key, method, path, host string
	h                       http.Header
}

// Copied is h2relay.Copier: the body of a request to mirror has all come
// (the copy goes, with its trailers dropped), or was too large or had
// trailers (skipped).
func (call *outboundCall) Copied(body []byte, ok bool) {
	m := call.mirror
	if m == nil {
		return
	}
	call.mirror = nil
	if !ok {
		m.c.Inc(metrics.RouteMirrorSkipped)
		return
	}
	call.o.mirror(m.c, m.key, m.method, m.path, m.host, m.h, bytes.Clone(body))
}

// RewriteResponse applies the call's Route response rewrite to a
// response head on the HTTP/2 relay (h2relay.ResponseRewriter).
func (call *outboundCall) RewriteResponse(fields []hpack.HeaderField) []hpack.HeaderField {
	w := call.rw
	if w == nil {
		return fields
	}
	out := make([]hpack.HeaderField, 0, len(fields)+len(w.Set)+len(w.Add))
	for _, f := range fields {
		if slices.Contains(w.RemoveLower, f.Name) || slices.ContainsFunc(w.Set, func(s meshconfig.HeaderValue) bool { return s.Lower == f.Name }) {
			continue
		}
		out = append(out, f)
	}
	for _, f := range w.Set {
		out = append(out, hpack.HeaderField{Name: f.Lower, Value: f.Value})
	}
	for _, f := range w.Add {
		out = append(out, hpack.HeaderField{Name: f.Lower, Value: f.Value})
	}
	return out
}

// rewritesResponses reports whether key's Route rewrites response
// headers.
func (o *Outbound) rewritesResponses(key string) bool {
	if t := o.routes(); t != nil {
		if r := t.snap.Routes[key]; r != nil {
			return r.ResponseRewrites
		}
	}
	return false
}
