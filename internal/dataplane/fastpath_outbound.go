package dataplane

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/upstream"
	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/tracing"
)

// newUpstreamFast is the fast path of one explicit upstream listener.
func (o *Outbound) newUpstreamFast(key string, ul *upstreamListener) *fastServer {
	return &fastServer{
		// A Route that rewrites response headers leaves its requests to
		// net/http (forwardH1 writes response heads as they come).
		accept:      func(*h1.Head) bool { return !o.rewritesResponses(key) },
		handle:      func(fc *fastConn, req *h1.Head) bool { return o.serveFast(fc, req, key) },
		idleTimeout: o.cfg.IdleTimeout,
		conns:       &o.conns,
		handoff: func(c net.Conn, _ *peer) bool {
			// A prior-knowledge h2c caller goes to the HTTP/2 relay;
			// anything else the fast path does not take, to net/http.
			if rc, ok := c.(*replayConn); ok && isH2Preface(rc.r) {
				_ = c.SetReadDeadline(time.Time{})
				sp := h2relay.NewSpill(rc.Conn)
				serveRelay(&o.h2conns, c, sp, sp, o.h2cfg, &outboundH2{o: o, key: key})
				return false
			}
			return ul.deliver(c)
		},
	}
}

// fastPool is the endpoint's pool of HTTP/1.1-over-mTLS connections for
// the fast path.
func newFastPeerPool(e *PeerEndpoint) *upstream.Pool {
	return upstream.NewPool(func(ctx context.Context) (net.Conn, error) {
		return e.dialTLS(ctx, e.h1Conf)
	}, 256, 2*time.Minute)
}

// maxFastAttempts bounds the tries of one request on the outbound fast
// path (see forwardFast).
const maxFastAttempts = 3

// serveFast is Outbound.serveHTTP for the fast path.
func (o *Outbound) serveFast(fc *fastConn, req *h1.Head, key string) bool {
	start := time.Now()
	answer := func(ew *errorResponse, forceClose bool) bool { return fc.answer(req, ew, forceClose) }
	key, rd := o.routeRequest(key, req.Method, req.Target, req)
	if rd.rule != nil {
		rewriteH1(req, rd.rule.Request)
		if answered, keep := o.faultFast(fc, req, rd); answered {
			return keep
		}
		o.mirrorFast(fc, req, rd)
	}
	t, rt := o.lookup(key)
	if t == nil {
		ew := newErrorResponse()
		o.refuse(ew, key, nil, failNoConfig, http.StatusServiceUnavailable, "no mesh configuration yet")
		return answer(ew, false)
	}
	switch {
	case rt == nil:
		ew := newErrorResponse()
		o.refuse(ew, key, nil, failUnknown, http.StatusServiceUnavailable, unknownMessage)
		return answer(ew, false)
	case rt.tcp:
		ew := newErrorResponse()
		o.refuse(ew, key, rt, failWrongProtocol, http.StatusBadGateway, "is a tcp service; use CONNECT or a tcp upstream listener")
		return answer(ew, false)
	}
	sp := traceH1(o.cfg.tracer(), tracing.Client, "outbound", rt.key, req, start)
	if limit := rt.brk.acquire(nil); limit != "" {
		ew := newErrorResponse()
		o.overflow(ew, rt, limit)
		rt.dest.OutboundRequest(http.StatusServiceUnavailable, start)
		o.endSpanH1(sp, rt, rd.rule, req, http.StatusServiceUnavailable)
		return answer(ew, false)
	}
	code, keep := o.forwardFast(fc, req, rt, answer)
	rt.brk.release()
	rt.dest.OutboundRequest(code, start)
	o.endSpanH1(sp, rt, rd.rule, req, code)
	return keep
}

// endSpanH1 ends a fast-path request's client span, if it has one.
func (o *Outbound) endSpanH1(sp tracing.Span, rt *route, rule *meshconfig.RouteRule, req *h1.Head, code int) {
	if sp.Recording() {
		path, _, _ := strings.Cut(req.Target, "?")
		sp.End(o.outboundAttrs(rt, rule, req.Method, path, code), time.Now())
	}
}

// forwardFast is forwardHTTP for the fast path. Each pass of its loop is
// one try: pick (the first, or another endpoint), exchange, then either
// return or decide to try again.
func (o *Outbound) forwardFast(fc *fastConn, req *h1.Head, rt *route, answer func(*errorResponse, bool) bool) (int, bool) {
	e := rt.pickH1(req)
	if e == nil {
		ew := newErrorResponse()
		o.noEndpoints(ew, rt)
		return http.StatusServiceUnavailable, answer(ew, false)
	}
	e.inflight.Add(1)
	defer func() { e.inflight.Add(-1) }()
	bodyless := req.RequestBody() == h1.BodyNone
	resp := fastHeads.Get().(*h1.Head)
	defer fastHeads.Put(resp)
	// tr is the TrafficPolicy's state; trp is nil without a policy, so
	// that the exchange costs nothing more.
	var tr tries
	var trp *tries
	if rt.traffic != nil {
		trp = &tr
		tr.start(rt, req.Method, bodyless || inlineReplay(fc, req), time.Now())
	}
	// moveOn switches to another endpoint, when there is one.
	moveOn := func(err error) bool {
		e2 := rt.bal.Pick(e)
		if e2 == nil {
			return false
		}
		if err != nil {
			o.logFailure(rt, e, err)
		}
		e.inflight.Add(-1)
		e = e2
		e.inflight.Add(1)
		return true
	}
	// An exchange that sent nothing the endpoint acted on moves, once, to
	// another endpoint: its proxy may be down or draining (it closes its
	// idle connections, and a request can meet one closing). That needs
	// no TrafficPolicy and takes nothing from a retry budget.
	switched := false
	for attempt := 0; ; attempt++ {
		try := time.Now()
		if trp != nil {
			if tr.overdue(try) {
				return http.StatusGatewayTimeout, o.answerTimeout(answer, &tr, false, !bodyless)
			}
			tr.next(try)
		}
		uc, reused, err := e.fast.Get(context.Background())
		if err != nil {
			// Nothing reached this endpoint; another may be up.
			if bodyless && attempt < maxFastAttempts && !switched && moveOn(err) {
				switched = true
				continue
			}
			if tr.retryUnsent() {
				moveOn(err)
				continue
			}
			ew := newErrorResponse()
			code := o.upstreamFailedFor(ew, rt, e, err)
			return code, answer(ew, false)
		}
		res := forwardH1(fc, req, uc, nil, resp, trp)
		rt.observe(e, res.code, res.err, try)
		switch res.stage {
		case fwdDone:
			if res.upReusable {
				e.fast.Put(uc)
			} else {
				closeQuietly(uc.C)
			}
			if tr.replayable && !bodyless && res.downKeep {
				res.downKeep = discardBody(fc, req)
			}
			return res.code, res.downKeep
		case fwdRetry:
			if res.upReusable {
				e.fast.Put(uc)
			} else {
				closeQuietly(uc.C)
			}
			moveOn(nil)
			continue
		case fwdNoResponse:
			closeQuietly(uc.C)
			if errors.Is(res.err, upstream.ErrTimeout) {
				perTry := tr.perTryExpired(time.Now())
				if perTry && tr.retry(timeoutCondition) {
					rt.dest.Timeout(metrics.TimeoutPerTry)
					moveOn(nil)
					continue
				}
				return http.StatusGatewayTimeout, o.answerTimeout(answer, &tr, perTry, !bodyless)
			}
			// No answer, nothing read: a pooled connection may have been
			// closed under the request (try again, elsewhere when there
			// is another endpoint); a new one closing at once is an
			// endpoint going away (only elsewhere). Only requests safe to
			// send twice.
			if res.nothingRead && attempt < maxFastAttempts && !switched && replayableH1(req) {
				if moveOn(res.err) {
					switched = true
					continue
				}
				if reused {
					continue
				}
			}
			if tr.retry(meshconfig.RetryReset) {
				moveOn(res.err)
				continue
			}
			ew := newErrorResponse()
			code := o.upstreamFailedFor(ew, rt, e, res.err)
			return code, answer(ew, !bodyless)
		case fwdUpstreamBroke:
			closeQuietly(uc.C)
			rt.dest.UpstreamFailure(failUpstream)
			return res.code, false
		default:
			closeQuietly(uc.C)
			return res.code, false
		}
	}
}

// answerTimeout answers a request whose timeout expired; a body that was
// not kept for a retry is gone, so the connection closes after it.
func (o *Outbound) answerTimeout(answer func(*errorResponse, bool) bool, tr *tries, perTry, hasBody bool) bool {
	ew := newErrorResponse()
	o.timedOut(ew, tr, perTry)
	return answer(ew, hasBody && !tr.replayable)
}

// inlineReplay: req's body is small and arrived whole with its head, so
// forwardH1 writes it in one piece and it can be sent again.
func inlineReplay(fc *fastConn, req *h1.Head) bool {
	return req.RequestBody() == h1.BodyLength && req.ContentLength <= inlineBody && int64(fc.br.Buffered()) >= req.ContentLength
}
