package dataplane

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/upstream"
	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/tracing"
)

// newInboundFast sets up the pool of HTTP/1.1 connections to the app and
// the inbound side's HTTP/1.1 fast path (HTTP/1.1 apps only; http2 and
// grpc apps take net/http, which speaks h2c to them).
func (in *Inbound) newInboundFast() {
	in.fastApp = upstream.NewPool(in.dialApp, 256, 30*time.Second)
	if in.cfg.Protocol != meshconfig.ProtocolHTTP {
		return
	}
	in.fast = &fastServer{
		accept:      in.fastAccepts,
		handle:      in.serveFast,
		idleTimeout: in.cfg.IdleTimeout,
		bodyIdle:    in.cfg.Limits.BodyIdleTimeout,
		refusals:    in.cfg.Metrics,
		conns:       &in.conns,
		handoff: func(c net.Conn, p *peer) bool {
			return in.httpLis.Deliver(&inboundConn{Conn: c, peer: p})
		},
	}
}

// fastAccepts leaves to net/http heads over the configured limits, and
// the requests whose path it would
// rewrite or refuse before authorization: percent-encoded ones (decoded
// first), ones with dot segments or doubled slashes (normalized), and the
// ones policy.CanonicalPath refuses, so policies see exactly what the app
// will and both paths answer the same.
func (in *Inbound) fastAccepts(req *h1.Head) bool {
	// Heads over lower configured limits go to net/http, which enforces
	// them (431).
	if len(req.Fields) > in.cfg.Limits.MaxHeaderFields || len(req.Raw) > in.cfg.Limits.MaxHeaderBytes {
		return false
	}
	path, _, _ := strings.Cut(req.Target, "?")
	mode := policy.PathStrict
	if snap := in.cfg.Snapshot(); snap != nil {
		mode = snap.PathMode
	}
	canon, err := policy.CanonicalPath(path, mode)
	return err == nil && canon == path
}

// serveFast is inboundHandler.ServeHTTP for the fast path.
func (in *Inbound) serveFast(fc *fastConn, req *h1.Head) bool {
	start := time.Now()
	p := fc.peer
	snap := in.cfg.Snapshot()
	resp := fastHeads.Get().(*h1.Head)
	o, keep := in.exchangeFast(fc, req, p, snap, resp, start)
	fastHeads.Put(resp)
	src := p.sourceFor(snap, in.cfg.Metrics, in.cfg.Service, in.cfg.Namespace)
	path, _, _ := strings.Cut(req.Target, "?") // canonical: fastAccepts
	in.dest.Request(src, req.Method, path, o.code, o.authorized && !o.dec.Allow, start)
	if o.span.Recording() {
		o.span.End(in.inboundAttrs(p, &o, req.Method, path), time.Now())
	}
	if in.accessRate > 0 && (in.accessRate >= 1 || rand.Float64() < in.accessRate) {
		in.accessEvent(req.Method, path, admission.TraceID(req.Get), p, snap, &o, start)
	}
	return keep
}

func (in *Inbound) exchangeFast(fc *fastConn, req *h1.Head, p *peer, snap *meshconfig.Snapshot, resp *h1.Head, start time.Time) (outcome, bool) {
	answer := func(ew *errorResponse, forceClose bool) bool { return fc.answer(req, ew, forceClose) }
	fc.view.Req = req
	v := &fc.verdict
	in.chain.Admit(&fc.view, p.admission(), snap, v)
	fc.view.Req = nil
	o := outcome{authorized: v.Authorized, dec: v.Decision}
	o.span = traceH1(in.cfg.tracer(), tracing.Server, "inbound", in.svcKey, req, start)
	if rf := v.Refused; rf != nil {
		ew := newErrorResponse()
		o.code = writeRefusal(ew, rf)
		return o, answer(ew, rf.Close)
	}
	path := v.Path
	var extra []h1.Field
	var xf [1]h1.Field
	if len(p.xfcc) > 0 {
		xf[0] = h1.Field{Name: xfccHeader, Value: p.xfcc[0]}
		extra = xf[:]
	}
	if rf := in.gate.Acquire(context.Background(), p.principal); rf != nil {
		ew := newErrorResponse()
		o.code = writeRefusal(ew, rf)
		return o, answer(ew, false)
	}
	defer in.gate.Release(p.principal)
	for attempt := 0; ; attempt++ {
		uc, reused, err := in.fastApp.Get(context.Background())
		if err != nil {
			ew := newErrorResponse()
			o.code = in.appFailedFor(ew, req.Method, path, err)
			return o, answer(ew, false)
		}
		res := forwardH1(fc, req, uc, extra, resp, nil)
		switch res.stage {
		case fwdDone:
			if res.upReusable {
				in.fastApp.Put(uc)
			} else {
				closeQuietly(uc.C)
			}
			o.code = res.code
			return o, res.downKeep
		case fwdNoResponse:
			closeQuietly(uc.C)
			if reused && res.nothingRead && attempt < 2 && replayableH1(req) {
				continue
			}
			ew := newErrorResponse()
			if errors.Is(res.err, errBodyIdle) {
				o.code = in.bodyIdle(ew)
				return o, answer(ew, true)
			}
			o.code = in.appFailedFor(ew, req.Method, path, res.err)
			return o, answer(ew, !res.downKeep && req.RequestBody() != h1.BodyNone)
		case fwdUpstreamBroke:
			closeQuietly(uc.C)
			o.code, o.abort = res.code, true
			return o, false
		default: // the caller went away
			closeQuietly(uc.C)
			o.code = res.code
			return o, false
		}
	}
}
