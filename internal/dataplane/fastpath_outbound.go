package dataplane

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/dataplane/upstream"
	"github.com/trellismesh/trellis/internal/h1"
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
	code, keep := o.forwardFast(fc, req, rt, answer)
	rt.dest.OutboundRequest(code, start)
	return keep
}

// forwardFast is forwardHTTP for the fast path.
func (o *Outbound) forwardFast(fc *fastConn, req *h1.Head, rt *route, answer func(*errorResponse, bool) bool) (int, bool) {
	e := rt.bal.Pick(nil)
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
	// An exchange that sent nothing the endpoint acted on moves, once, to
	// another endpoint: its proxy may be down or draining (it closes its
	// idle connections, and a request can meet one closing).
	switched := false
	moveOn := func(err error) bool {
		if switched {
			return false
		}
		e2 := rt.bal.Pick(e)
		if e2 == nil {
			return false
		}
		o.logFailure(rt, e, err)
		e.inflight.Add(-1)
		e, switched = e2, true
		e.inflight.Add(1)
		return true
	}
	for attempt := 0; ; attempt++ {
		uc, reused, err := e.fast.Get(context.Background())
		if err != nil {
			// Nothing reached this endpoint; another may be up.
			if bodyless && attempt < maxFastAttempts && moveOn(err) {
				continue
			}
			ew := newErrorResponse()
			code := o.upstreamFailedFor(ew, rt, e, err)
			return code, answer(ew, false)
		}
		res := forwardH1(fc, req, uc, nil, resp)
		switch res.stage {
		case fwdDone:
			if res.upReusable {
				e.fast.Put(uc)
			} else {
				closeQuietly(uc.C)
			}
			return res.code, res.downKeep
		case fwdNoResponse:
			closeQuietly(uc.C)
			// No answer, nothing read: a pooled connection may have been
			// closed under the request (try again, elsewhere when there
			// is another endpoint); a new one closing at once is an
			// endpoint going away (only elsewhere). Only requests safe to
			// send twice.
			if res.nothingRead && attempt < maxFastAttempts && replayableH1(req) && (moveOn(res.err) || reused) {
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
