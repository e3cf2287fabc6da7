package dataplane

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/dataplane/limits"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/tracing"
)

// The HTTP/2 path. HTTP/2 callers of HTTP/2 and gRPC services (prior
// knowledge h2c on an explicit upstream listener; h2 over mTLS from peer
// proxies to an h2c or gRPC app) are relayed frame by frame by
// internal/dataplane/h2relay, the way the HTTP/1.1 fast path relays
// HTTP/1.1: the connection's own goroutine reads, authorizes and writes,
// with pooled multiplexed connections to the peer proxies and to the app.
// Everything else over HTTP/2 (an HTTP/1.1 app behind the inbound, the
// HTTP proxy port, transparent capture, plaintext callers) stays on
// net/http.

// h2Config are the relay's limits on both sides.
func h2Config(cfg DataPlaneConfig) *h2relay.Config {
	c := h2relay.Config{
		MaxHeaderListSize: uint32(cfg.Limits.MaxHeaderBytes),
		IdleTimeout:       cfg.IdleTimeout,
	}
	return c.WithDefaults()
}

// h2Conns are the downstream relay connections of one side, drained with
// a GOAWAY on shutdown.
type h2Conns struct {
	mu     sync.Mutex
	conns  map[*h2relay.Conn]struct{}
	closed bool
}

func (s *h2Conns) add(c *h2relay.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*h2relay.Conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *h2Conns) remove(c *h2relay.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// drain sends every connection a GOAWAY; each closes when its streams
// end (the side's connset waits for that, up to the drain timeout).
func (s *h2Conns) drain() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*h2relay.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Drain()
	}
}

// serveRelay runs one downstream relay connection, tracked in set. Its
// writes go to w: a Spill that sp enables, or (under TLS) nc writing into
// that Spill.
func serveRelay(set *h2Conns, nc net.Conn, w io.Writer, sp *h2relay.Spill, cfg *h2relay.Config, h h2relay.Handler) {
	sp.Enable(cfg.MaxSpill, cfg.WriteTimeout)
	c := h2relay.NewServerConn(nc, w, cfg, h)
	c.UseSpill(sp)
	if !set.add(c) {
		closeQuietly(nc)
		return
	}
	defer set.remove(c)
	_ = c.Run()
}

// isH2Preface reports whether a handed-off connection starts with the
// HTTP/2 client preface (a prior-knowledge h2c caller).
func isH2Preface(br *bufio.Reader) bool {
	b, err := br.Peek(len(http2.ClientPreface))
	return err == nil && string(b) == http2.ClientPreface
}

// localResponse turns a proxy-made answer into the relay's form.
func localResponse(ew *errorResponse) *h2relay.Response {
	r := &h2relay.Response{Status: ew.code, Body: ew.body.String()}
	if r.Status == 0 {
		r.Status = http.StatusOK
	}
	for k, vv := range ew.h {
		k = strings.ToLower(k)
		if k == "connection" || k == "content-type" || k == "content-length" {
			continue
		}
		for _, v := range vv {
			r.Header = append(r.Header, hpack.HeaderField{Name: k, Value: v})
		}
	}
	return r
}

// outboundH2 routes the streams of one app connection on an upstream
// listener for key.
type outboundH2 struct {
	o   *Outbound
	key string
}

type outboundCall struct {
	rt *route
	e  *PeerEndpoint
	// tr is the TrafficPolicy's state (h2path_tries.go), unused without
	// one; grpc: the call is gRPC.
	tr   tries
	grpc bool
	// held: the call holds a slot of rt's circuit breaker.
	held bool
	rw   *meshconfig.HeaderRewrite // a Route's response rewrite (route.go)
	// mirror waits for the request's body (route.go), with o to send it.
	mirror *h2Mirror
	o      *Outbound
	// span is the call's client span (zero when not traced), rule the
	// Route rule that took it.
	span tracing.Span
	rule *meshconfig.RouteRule
}

func (h *outboundH2) Route(req *h2relay.Request) (*h2relay.Conn, *h2relay.Response, any) {
	o := h.o
	start := time.Now()
	key, local, rule, mirror := o.routeH2(req, h.key)
	if local != nil {
		return nil, local, nil
	}
	var rw *meshconfig.HeaderRewrite
	if rule != nil {
		rw = rule.Response
	}
	t, rt := o.lookup(key)
	var ew *errorResponse
	if t == nil || rt == nil || rt.tcp {
		ew = newErrorResponse()
	}
	switch {
	case t == nil:
		o.refuse(ew, key, nil, failNoConfig, http.StatusServiceUnavailable, "no mesh configuration yet")
		return nil, localResponse(ew), nil
	case rt == nil:
		o.refuse(ew, key, nil, failUnknown, http.StatusServiceUnavailable, unknownMessage)
		return nil, localResponse(ew), nil
	case rt.tcp:
		o.refuse(ew, key, rt, failWrongProtocol, http.StatusBadGateway, "is a tcp service; use CONNECT or a tcp upstream listener")
		return nil, localResponse(ew), nil
	}
	call := &outboundCall{rt: rt, rw: rw, mirror: mirror, o: o, rule: rule}
	call.span = traceH2(o.cfg.tracer(), tracing.Client, "outbound", rt.key, req, start)
	if limit := rt.brk.tryAcquire(); limit != "" {
		ew = newErrorResponse()
		o.overflow(ew, rt, limit)
		return nil, localResponse(ew), call
	}
	call.held = true
	e := rt.pickH2(req)
	if e == nil {
		ew = newErrorResponse()
		o.noEndpoints(ew, rt)
		return nil, localResponse(ew), call
	}
	if rt.traffic != nil {
		h.startTries(call, req, time.Now())
	}
	up, err := e.h2p.Get(context.Background())
	if err != nil {
		// Nothing reached this endpoint; another may be up.
		if e2 := rt.bal.Pick(e); e2 != nil {
			o.logFailure(rt, e, err)
			e = e2
			up, err = e.h2p.Get(context.Background())
		}
		// A TrafficPolicy may try more (connect-failure: nothing sent).
		for err != nil && call.tr.retryUnsent() {
			if e2 := rt.bal.Pick(e); e2 != nil {
				e = e2
			}
			up, err = e.h2p.Get(context.Background())
		}
	}
	if err != nil {
		ew = newErrorResponse()
		o.upstreamFailedFor(ew, rt, e, err)
		return nil, localResponse(ew), call
	}
	e.inflight.Add(1)
	call.e = e
	req.Scheme = "https"
	return up, nil, call
}

func (h *outboundH2) Done(r *h2relay.Result) {
	call, _ := r.Tag.(*outboundCall)
	if call == nil {
		return
	}
	if call.e != nil {
		call.e.inflight.Add(-1)
	}
	if call.held {
		call.rt.brk.release()
	}
	code := r.Status
	if r.TimedOut {
		call.rt.dest.Timeout(metrics.TimeoutRequest)
		if code == 0 || r.Reset {
			code = http.StatusGatewayTimeout
		}
	}
	if r.Reset && !r.Local && code == 0 {
		code = statusClientClosed
		if !r.ResetByCaller {
			code = http.StatusBadGateway
			call.rt.dest.UpstreamFailure(failUpstream)
		}
	}
	if !r.Local {
		// Latency to the response head: a stream's length says nothing
		// of the endpoint.
		call.rt.observeTook(call.e, grpcAsHTTP(code, r.GRPCStatus), nil, r.Head.Sub(r.Start))
	}
	call.rt.dest.OutboundRequest(code, r.Start)
	if r.GRPCStatus >= 0 {
		call.rt.dest.GRPCStatus(r.GRPCStatus)
	}
	if call.span.Recording() {
		path, _, _ := strings.Cut(r.Path, "?")
		a := call.o.outboundAttrs(call.rt, call.rule, r.Method, path, code)
		a.GRPCStatus = r.GRPCStatus
		call.span.End(a, time.Now())
	}
}

// inboundH2 admits and routes the streams of one peer connection to an
// HTTP/2 or gRPC app.
type inboundH2 struct {
	in   *Inbound
	p    *peer
	view admission.H2View // Route's, for every stream of the connection
}

// inboundCalls recycles the records of inbound streams: Done is the last
// to use one.
var inboundCalls = sync.Pool{New: func() any { return new(inboundCall) }}

type inboundCall struct {
	snap  *meshconfig.Snapshot
	v     admission.Verdict
	gated bool
	trace string // the trace id, when access events are sampled
	span  tracing.Span
}

// noWait makes the app gate answer at once instead of queueing: a queued
// stream would hold up every stream of its connection.
var noWait = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func (h *inboundH2) Route(req *h2relay.Request) (*h2relay.Conn, *h2relay.Response, any) {
	in, p := h.in, h.p
	call := inboundCalls.Get().(*inboundCall)
	call.snap = in.cfg.Snapshot()
	if in.accessRate > 0 {
		call.trace = admission.TraceID(req.Get)
	}
	h.view.Req = req
	in.chain.Admit(&h.view, p.admission(), call.snap, &call.v)
	call.span = traceH2(in.cfg.tracer(), tracing.Server, "inbound", in.svcKey, req, time.Now())
	if rf := call.v.Refused; rf != nil {
		r := &h2relay.Response{Status: rf.Code, Body: rf.Msg}
		if rf.DeniedBy != "" {
			r.Header = append(r.Header, hpack.HeaderField{Name: "x-trellis-denied-by", Value: rf.DeniedBy})
		}
		if rf.Challenge != "" {
			r.Header = append(r.Header, hpack.HeaderField{Name: "www-authenticate", Value: rf.Challenge})
		}
		if rf.RetryAfter > 0 {
			r.Header = append(r.Header, hpack.HeaderField{Name: "retry-after", Value: strconv.Itoa(rf.RetryAfter)})
		}
		for _, f := range rf.Header {
			r.Header = append(r.Header, hpack.HeaderField{Name: strings.ToLower(f.Name), Value: f.Value})
		}
		return nil, r, call
	}
	if len(p.xfcc) > 0 {
		req.Fields = append(req.Fields, hpack.HeaderField{Name: "x-forwarded-client-cert", Value: p.xfcc[0]})
	}
	if rf := in.gate.Acquire(noWait, p.principal); rf != nil {
		return nil, &h2relay.Response{Status: rf.Code, Body: rf.Msg}, call
	}
	call.gated = true
	up, err := in.h2app.Get(context.Background())
	if err != nil {
		ew := newErrorResponse()
		in.appFailedFor(ew, req.Method, call.v.Path, &net.OpError{Op: "dial", Net: "tcp", Err: err})
		return nil, localResponse(ew), call
	}
	req.Scheme = "http"
	return up, nil, call
}

func (h *inboundH2) Done(r *h2relay.Result) {
	in, p := h.in, h.p
	call, _ := r.Tag.(*inboundCall)
	if call == nil {
		// Refused by the relay before admission (a malformed head).
		in.dest.Request(p.sourceFor(in.cfg.Snapshot(), in.cfg.Metrics, in.cfg.Service, in.cfg.Namespace), "", "", r.Status, false, r.Start)
		return
	}
	if call.gated {
		in.gate.Release(p.principal)
	}
	code := r.Status
	switch {
	case r.BodyIdle:
		code = http.StatusRequestTimeout
		in.cfg.Metrics.RefusedRequest(limits.ReasonBodyIdle)
	case r.Reset && !r.Local && code == 0:
		code = statusClientClosed
		if !r.ResetByCaller {
			code = http.StatusBadGateway
		}
	}
	o := outcome{code: code, authorized: call.v.Authorized, dec: call.v.Decision}
	src := p.sourceFor(call.snap, in.cfg.Metrics, in.cfg.Service, in.cfg.Namespace)
	path := call.v.Path
	if path == "" {
		path, _, _ = strings.Cut(r.Path, "?")
	}
	in.dest.Request(src, r.Method, path, code, o.authorized && !o.dec.Allow, r.Start)
	if r.GRPCStatus >= 0 {
		in.dest.GRPCStatus(r.GRPCStatus)
	}
	if in.accessRate > 0 && (in.accessRate >= 1 || rand.Float64() < in.accessRate) {
		in.accessEvent(r.Method, path, call.trace, p, call.snap, &o, r.Start)
	}
	if call.span.Recording() {
		a := in.inboundAttrs(p, &o, r.Method, path)
		a.GRPCStatus = r.GRPCStatus
		call.span.End(a, time.Now())
	}
	*call = inboundCall{}
	inboundCalls.Put(call)
}

// dialApp opens a connection to the local app (HTTP/1.1 for the fast
// path, h2c for the HTTP/2 relay), within the dial timeout.
func (in *Inbound) dialApp(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.DialTimeout)
	defer cancel()
	c, err := in.dialer.DialContext(ctx, "tcp", in.cfg.AppAddr)
	if err != nil {
		return nil, err
	}
	return rawIO(c), nil
}

// relaysH2 says whether the inbound relays h2 callers frame by frame.
func (in *Inbound) relaysH2() bool {
	return in.cfg.Protocol == meshconfig.ProtocolHTTP2 || in.cfg.Protocol == meshconfig.ProtocolGRPC
}
