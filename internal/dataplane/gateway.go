package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/connset"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/tracing"
)

// The ingress gateway (`trellis gateway`): clients outside the mesh
// connect over TLS (operator certificates, chosen by SNI) or plain HTTP;
// each request is routed by its Host and path (GatewayRoutes), passes the
// same admission chain as a sidecar's inbound (end-user JWT,
// authorization, rate limits; mTLS is not asked of clients), then the
// route's own rate limit, and is forwarded by the Outbound over mTLS, so
// services see the gateway's SPIFFE ID. HTTP/1.1 takes the fast path; h2
// (ALPN) and what the fast path leaves go to net/http.

// GatewayConfig configures a Gateway.
type GatewayConfig struct {
	// TLS serves the HTTPS listener (certificates by SNI, ALPN h2 and
	// http/1.1); nil when there is none.
	TLS *tls.Config
	// RedirectHTTP answers every plain-HTTP request with a 308 to https.
	RedirectHTTP bool
	// HTTPSPort is the port in redirects' Location; 0 and 443 are left
	// out.
	HTTPSPort int
	// Authorizer decides requests for the gateway's workload (a
	// PolicyAuthorizer with Ingress set); nil means the DataPlaneConfig's.
	Authorizer admission.Authorizer
}

// Gateway is the ingress data path on top of an Outbound. Create with
// NewGateway; the Outbound's Shutdown drains it.
type Gateway struct {
	o     *Outbound
	cfg   GatewayConfig
	chain admission.Chain
	fast  *fastServer
	srv   *http.Server
	lis   *connset.ChanListener
}

// NewGateway prepares the gateway's listeners' handling; ServeTLS and
// ServePlain start them.
func NewGateway(o *Outbound, cfg GatewayConfig) *Gateway {
	g := &Gateway{o: o, cfg: cfg, lis: connset.NewChanListener(&net.TCPAddr{})}
	authz := cfg.Authorizer
	if authz == nil {
		authz = o.cfg.Authorizer
	}
	// CUSTOM policies selecting the gateway ask their providers through
	// the proxy's pool (DataPlaneConfig.ExtAuthz; nil fails them closed).
	g.chain = admission.Chain{Authorizer: authz, Protocol: meshconfig.ProtocolHTTP, Recorder: o.cfg.Metrics, Log: o.log, Ingress: true,
		ExtAuthz: o.cfg.ExtAuthz, Self: idString(o.cfg.Identity.ID())}
	g.fast = &fastServer{
		accept:      g.fastAccepts,
		handle:      g.serveFast,
		idleTimeout: o.cfg.IdleTimeout,
		bodyIdle:    o.cfg.Limits.BodyIdleTimeout,
		refusals:    o.cfg.Metrics,
		conns:       &o.conns,
		handoff:     func(c net.Conn, _ *peer) bool { return g.lis.Deliver(c) },
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	g.srv = newHTTPServer(gatewayHandler{g}, o.cfg, false, o.cfg.Metrics)
	g.srv.Protocols = &p
	g.srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, gatewayConnKey{}, gatewayConnOf(c))
	}
	return g
}

type gatewayConnKey struct{}

// gatewayConn is what the net/http side knows of a client connection.
type gatewayConn struct {
	tls  bool
	addr string
}

func gatewayConnOf(c net.Conn) gatewayConn {
	if rc, ok := c.(*replayConn); ok {
		c = rc.Conn
	}
	_, isTLS := c.(*tls.Conn)
	return gatewayConn{tls: isTLS, addr: hostOf(c.RemoteAddr())}
}

func hostOf(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	h, _, _ := net.SplitHostPort(a.String())
	return h
}

// ServeTLS serves the HTTPS listener until the Outbound shuts down.
func (g *Gateway) ServeTLS(l net.Listener) error { return g.serve(l, true) }

// ServePlain serves the plain-HTTP listener (routes, or redirects to
// https with RedirectHTTP).
func (g *Gateway) ServePlain(l net.Listener) error { return g.serve(l, false) }

func (g *Gateway) serve(l net.Listener, useTLS bool) error {
	if useTLS && g.cfg.TLS == nil {
		closeQuietly(l)
		return errors.New("gateway: an HTTPS listener without certificates")
	}
	if !g.o.trackServer(g.srv) {
		closeQuietly(l)
		return http.ErrServerClosed
	}
	go func() { _ = g.srv.Serve(g.lis) }()
	err := connset.AcceptLoop(l, func(c net.Conn) {
		if !g.o.conns.Add(c) {
			closeQuietly(c)
			return
		}
		go func() {
			defer g.o.conns.Remove(c)
			g.handleConn(c, useTLS)
		}()
	})
	if g.o.conns.IsClosed() {
		return http.ErrServerClosed
	}
	return err
}

func (g *Gateway) handleConn(c net.Conn, useTLS bool) {
	p := &peer{addr: hostOf(c.RemoteAddr())}
	if !useTLS {
		g.fast.serve(rawIO(c), p)
		return
	}
	tc := tls.Server(c, g.cfg.TLS)
	ctx, cancel := context.WithTimeout(context.Background(), g.o.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		if g.o.logs.allow("gateway handshake") {
			g.o.log.Debug("gateway TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		}
		closeQuietly(tc)
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		// net/http serves h2 on a *tls.Conn it is given as is.
		if !g.lis.Deliver(tc) {
			closeQuietly(tc)
		}
		return
	}
	g.fast.serve(tc, p)
}

// fastAccepts leaves to net/http what the inbound's fast path does:
// heads over the limits and paths that are not canonical.
func (g *Gateway) fastAccepts(req *h1.Head) bool {
	if len(req.Fields) > g.o.cfg.Limits.MaxHeaderFields || len(req.Raw) > g.o.cfg.Limits.MaxHeaderBytes {
		return false
	}
	path, _, _ := strings.Cut(req.Target, "?")
	mode := policy.PathStrict
	if snap := g.o.cfg.Snapshot(); snap != nil {
		mode = snap.PathMode
	}
	canon, err := policy.CanonicalPath(path, mode)
	if err != nil || canon != path {
		return false
	}
	// A Route that rewrites response headers leaves the requests of its
	// service to net/http, as on the outbound side.
	if snap := g.o.cfg.Snapshot(); snap != nil && len(snap.Routes) > 0 {
		if rule := snap.Gateway.Match(req.Host, path); rule != nil && g.o.rewritesResponses(rule.Service) {
			return false
		}
	}
	return true
}

// serveFast serves one HTTP/1.1 request on the fast path.
func (g *Gateway) serveFast(fc *fastConn, req *h1.Head) bool {
	start := time.Now()
	answer := func(ew *errorResponse, forceClose bool) bool { return fc.answer(req, ew, forceClose) }
	snap := g.o.cfg.Snapshot()
	if !fc.isTLS && g.cfg.RedirectHTTP {
		ew := newErrorResponse()
		g.redirect(ew, req.Host, req.Target)
		return answer(ew, false)
	}
	path, _, _ := strings.Cut(req.Target, "?") // canonical: fastAccepts
	rule, ew := g.route(snap, req.Host, path)
	if ew != nil {
		return answer(ew, false)
	}
	fc.view.Req = req
	v := &fc.verdict
	ap := fc.peer.admission()
	g.chain.Admit(&fc.view, ap, snap, v)
	if v.Refused == nil && rule.Limiter != nil {
		v.Refused = g.takeRoute(rule, v, ap)
	}
	if rf := v.Refused; rf != nil {
		fc.view.Req = nil
		ew := newErrorResponse()
		writeRefusal(ew, rf)
		return answer(ew, rf.Close)
	}
	g.forwardedFor(&fc.view, fc.peer.addr, fc.isTLS)
	fc.view.Req = nil
	svc, rd := g.o.routeRequest(rule.Service, req.Method, req.Target, req)
	if rd.rule != nil {
		rewriteH1(req, rd.rule.Request)
		if answered, keep := g.o.faultFast(fc, req, rd); answered {
			return keep
		}
		g.o.mirrorFast(fc, req, rd)
	}
	t, rt := g.o.lookup(svc)
	if t == nil || rt == nil || rt.tcp {
		ew := newErrorResponse()
		g.unroutable(ew, rule, rt)
		return answer(ew, false)
	}
	sp := traceH1(g.o.cfg.tracer(), tracing.Server, "gateway", rt.key, req, start)
	if limit := rt.brk.acquire(nil); limit != "" {
		ew := newErrorResponse()
		g.o.overflow(ew, rt, limit)
		rt.dest.OutboundRequest(http.StatusServiceUnavailable, start)
		g.endSpan(sp, rt, rd.rule, v, req.Method, path, http.StatusServiceUnavailable)
		return answer(ew, false)
	}
	code, keep := g.o.forwardFast(fc, req, rt, answer)
	rt.brk.release()
	rt.dest.OutboundRequest(code, start)
	g.endSpan(sp, rt, rd.rule, v, req.Method, path, code)
	return keep
}

// endSpan ends a gateway request's span, if it has one: the gateway's
// authorization and the Route rule that took the request.
func (g *Gateway) endSpan(sp tracing.Span, rt *route, rule *meshconfig.RouteRule, v *admission.Verdict, method, path string, code int) {
	if !sp.Recording() {
		return
	}
	a := g.o.outboundAttrs(rt, rule, method, path, code)
	a.Source = ""
	if v.Authorized {
		a.Authorized, a.Allow, a.Policy, a.AuditDenied = true, v.Decision.Allow, v.Decision.Policy, v.Decision.AuditDenied
	}
	sp.End(a, time.Now())
}

// route finds the request's rule, or the answer without one.
func (g *Gateway) route(snap *meshconfig.Snapshot, host, path string) (*meshconfig.GatewayRule, *errorResponse) {
	if snap == nil {
		ew := newErrorResponse()
		g.o.refuse(ew, "", nil, failNoConfig, http.StatusServiceUnavailable, "no mesh configuration yet")
		return nil, ew
	}
	rule := snap.Gateway.Match(host, path)
	if rule == nil {
		g.o.cfg.Metrics.UpstreamFailure("", "", failUnknown)
		ew := newErrorResponse()
		relay.PlainError(ew, http.StatusNotFound, "trellis gateway: no GatewayRoute for host \""+host+"\" and path \""+path+"\"\n")
		return nil, ew
	}
	return rule, nil
}

// takeRoute takes a token from the rule's own bucket.
func (g *Gateway) takeRoute(rule *meshconfig.GatewayRule, v *admission.Verdict, p admission.Peer) *admission.Refusal {
	key := ""
	if rule.PerCaller {
		key = v.CallerKey(p)
	}
	return g.chain.Take(rule.Limiter, key, rule.Ref, time.Now())
}

// unroutable answers a rule whose service the gateway cannot reach.
func (g *Gateway) unroutable(w http.ResponseWriter, rule *meshconfig.GatewayRule, rt *route) {
	if rt != nil && rt.tcp {
		g.o.refuse(w, rule.Service, rt, failWrongProtocol, http.StatusBadGateway, "is a tcp service; a gateway routes HTTP ("+rule.Ref+")")
		return
	}
	g.o.refuse(w, rule.Service, nil, failUnknown, http.StatusServiceUnavailable, unknownMessage+" ("+rule.Ref+")")
}

// forwardedFor tells the service who called and how: X-Forwarded-For
// gets the client's address appended, X-Forwarded-Proto is replaced.
func (g *Gateway) forwardedFor(v admission.View, addr string, isTLS bool) {
	if prev := v.Get("X-Forwarded-For"); prev != "" {
		addr = prev + ", " + addr
	}
	v.SetHeader("X-Forwarded-For", addr)
	proto := "http"
	if isTLS {
		proto = "https"
	}
	v.SetHeader("X-Forwarded-Proto", proto)
}

// redirect answers 308 to the same host and target over https.
func (g *Gateway) redirect(w http.ResponseWriter, host, target string) {
	h := host
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	if h == "" || strings.ContainsAny(h, "/\\@?# ") {
		relay.PlainError(w, http.StatusBadRequest, "trellis gateway: a Host header is required\n")
		return
	}
	if p := g.cfg.HTTPSPort; p != 0 && p != 443 {
		h = net.JoinHostPort(h, strconv.Itoa(p))
	}
	if !strings.HasPrefix(target, "/") {
		target = "/"
	}
	w.Header()["Location"] = []string{"https://" + h + target}
	relay.PlainError(w, http.StatusPermanentRedirect, "trellis gateway: use https://"+h+target+"\n")
}

// gatewayHandler serves what the fast path does not: h2 clients,
// Upgrades, odd framing, paths to normalize.
type gatewayHandler struct{ g *Gateway }

func (h gatewayHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := h.g
	start := time.Now()
	gc, _ := r.Context().Value(gatewayConnKey{}).(gatewayConn)
	if !gc.tls && g.cfg.RedirectHTTP {
		g.redirect(w, r.Host, r.URL.RequestURI())
		return
	}
	snap := g.o.cfg.Snapshot()
	mode := policy.PathStrict
	if snap != nil {
		mode = snap.PathMode
	}
	path, err := policy.CanonicalPath(admission.RequestPath(r), mode)
	if err != nil {
		writeRefusal(w, admission.BadRequest(err.Error()))
		return
	}
	rule, ew := g.route(snap, r.Host, path)
	if ew != nil {
		copyErrorResponse(w, ew)
		return
	}
	view := admission.HTTPView{R: r}
	ap := admission.Peer{Addr: gc.addr}
	var v admission.Verdict
	g.chain.Admit(view, ap, snap, &v)
	if v.Refused == nil && rule.Limiter != nil {
		v.Refused = g.takeRoute(rule, &v, ap)
	}
	if rf := v.Refused; rf != nil {
		if rf.Close {
			w.Header()["Connection"] = []string{"close"}
		}
		writeRefusal(w, rf)
		return
	}
	g.forwardedFor(view, gc.addr, gc.tls)
	svc, w, rrule, done := g.o.routeHTTP(w, r, rule.Service)
	if done {
		return
	}
	t, rt := g.o.lookup(svc)
	if t == nil || rt == nil || rt.tcp {
		g.unroutable(w, rule, rt)
		return
	}
	sp := traceHTTP(g.o.cfg.tracer(), tracing.Server, "gateway", rt.key, r.Header, start)
	if limit := rt.brk.acquire(r.Context().Done()); limit != "" {
		g.o.overflow(w, rt, limit)
		rt.dest.OutboundRequest(http.StatusServiceUnavailable, start)
		g.endSpan(sp, rt, rrule, &v, r.Method, path, http.StatusServiceUnavailable)
		return
	}
	code, abort := g.o.forwardHTTP(w, r, rt)
	rt.brk.release()
	rt.dest.OutboundRequest(code, start)
	g.endSpan(sp, rt, rrule, &v, r.Method, path, code)
	if abort {
		panic(http.ErrAbortHandler)
	}
}

// copyErrorResponse writes an answer made for the fast path to w.
func copyErrorResponse(w http.ResponseWriter, ew *errorResponse) {
	for k, vv := range ew.h {
		w.Header()[k] = vv
	}
	w.WriteHeader(cmpCode(ew.code))
	_, _ = w.Write(ew.body.Bytes())
}

func cmpCode(c int) int {
	if c == 0 {
		return http.StatusOK
	}
	return c
}
