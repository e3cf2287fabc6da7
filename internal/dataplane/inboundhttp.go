package dataplane

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/limits"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/tracing"
)

// inboundHandler is the per-request chain of the inbound side: caller
// identity (from the connection) -> authorization -> X-Forwarded-Client-Cert
// -> forward to the app -> telemetry (metrics, edge stats, sampled access
// events).
type inboundHandler struct{ in *Inbound }

func (h inboundHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	in := h.in
	p, _ := r.Context().Value(peerKey{}).(*peer)
	if p == nil {
		p = in.plainPeer
	}
	snap := in.cfg.Snapshot()
	o := in.serveHTTP(w, r, p, snap, start)
	src := p.sourceFor(snap, in.cfg.Metrics, in.cfg.Service, in.cfg.Namespace)
	in.dest.Request(src, r.Method, r.URL.Path, o.code, o.authorized && !o.dec.Allow, start)
	if o.span.Recording() {
		o.span.End(in.inboundAttrs(p, &o, r.Method, r.URL.Path), time.Now())
	}
	// Off (rate 0, the default), this is one predictable branch.
	if in.accessRate > 0 && (in.accessRate >= 1 || rand.Float64() < in.accessRate) {
		in.accessEvent(r.Method, r.URL.Path, admission.TraceID(r.Header.Get), p, snap, &o, start)
	}
	if o.abort {
		// The response is already under way: abort it so the caller sees a
		// broken stream, not a short but well-formed body.
		panic(http.ErrAbortHandler)
	}
}

// outcome is how one inbound request ended.
type outcome struct {
	code int
	// abort says the response broke off after it started.
	abort bool
	// authorized says authorization ran (the request got past the mTLS
	// and path checks); dec is then its decision.
	authorized bool
	dec        admission.Decision
	// span is the request's server span (zero when not traced).
	span tracing.Span
}

// accessEvent emits an "access" event for one finished request.
func (in *Inbound) accessEvent(method, path, trace string, p *peer, snap *meshconfig.Snapshot, o *outcome, start time.Time) {
	ev := &pb.Event{
		Time:                 timestamppb.New(start),
		Kind:                 "access",
		SourceId:             p.principal,
		SourceService:        p.serviceIn(snap),
		SourceNamespace:      p.namespace,
		DestinationId:        in.cfg.Identity.ID().String(),
		DestinationService:   in.cfg.Service,
		DestinationNamespace: in.cfg.Namespace,
		Protocol:             in.cfg.Protocol,
		Method:               method,
		Path:                 path,
		ResponseCode:         uint32(o.code),
		DurationMicros:       uint64(time.Since(start).Microseconds()),
		TraceId:              trace,
		Rule:                 -1,
	}
	if o.authorized {
		ev.Decision = "allow"
		if !o.dec.Allow {
			ev.Decision, ev.Reason = "deny", o.dec.Reason
		}
		if o.dec.Policy != "" {
			ev.Policy, ev.Rule = o.dec.Policy, int32(o.dec.Rule)
		}
	}
	in.cfg.Events(ev)
}

// deniedByHeader names the denying policy on a 403, unless the mesh hides
// it (Mesh.spec.authorization.hidePolicy).
const deniedByHeader = "X-Trellis-Denied-By"

// writeRefusal answers with rf; closing is left to the caller (a
// Connection field on net/http, the fast path's own close).
func writeRefusal(w http.ResponseWriter, rf *admission.Refusal) int {
	if rf.DeniedBy != "" {
		w.Header()[deniedByHeader] = []string{rf.DeniedBy}
	}
	if rf.Challenge != "" {
		w.Header()["Www-Authenticate"] = []string{rf.Challenge}
	}
	if rf.RetryAfter > 0 {
		w.Header()["Retry-After"] = []string{strconv.Itoa(rf.RetryAfter)}
	}
	for _, f := range rf.Header {
		w.Header().Set(f.Name, f.Value)
	}
	relay.PlainError(w, rf.Code, rf.Msg)
	return rf.Code
}

// Status codes recorded for requests that got no upstream response.
const statusClientClosed = 499

func (in *Inbound) serveHTTP(w http.ResponseWriter, r *http.Request, p *peer, snap *meshconfig.Snapshot, start time.Time) outcome {
	v := new(admission.Verdict)
	in.chain.Admit(admission.HTTPView{R: r}, p.admission(), snap, v)
	o := outcome{authorized: v.Authorized, dec: v.Decision}
	o.span = traceHTTP(in.cfg.tracer(), tracing.Server, "inbound", in.svcKey, r.Header, start)
	if rf := v.Refused; rf != nil {
		if rf.Close {
			w.Header()["Connection"] = []string{"close"}
		}
		o.code = writeRefusal(w, rf)
		return o
	}
	if p.xfcc != nil {
		r.Header[xfccHeader] = p.xfcc
	}
	if rf := in.gate.Acquire(r.Context(), p.principal); rf != nil {
		o.code = writeRefusal(w, rf)
		return o
	}
	defer in.gate.Release(p.principal)
	if v.Upgrade != "" {
		code, err := relay.ForwardUpgrade(w, r, in.appH1, "http", in.cfg.AppAddr, v.Upgrade, &in.conns)
		if err != nil {
			code = in.appFailed(w, r, err)
		}
		o.code = code
		return o
	}
	var body *idleBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &idleBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: in.cfg.Limits.BodyIdleTimeout}
		r.Body = body
	}
	relay.EnableFullDuplex(w, r)
	var rt http.RoundTripper = in.app
	if in.cfg.Protocol == meshconfig.ProtocolHTTP2 || in.cfg.Protocol == meshconfig.ProtocolGRPC {
		rt = in.appH2
	}
	resp, err := rt.RoundTrip(relay.NewOutRequest(r, "http", in.cfg.AppAddr))
	if err != nil {
		if body != nil && body.timedOut.Load() {
			o.code = in.bodyIdle(w)
			return o
		}
		o.code = in.appFailed(w, r, err)
		return o
	}
	defer resp.Body.Close()
	o.code = resp.StatusCode
	if err := relay.CopyResponse(w, r, resp); err != nil {
		var ue *relay.UpstreamBodyError
		o.abort = errors.As(err, &ue)
	}
	return o
}

// idleBody is a request body on the net/http path whose reads wait at
// most idle each (limits.Limits.BodyIdleTimeout).
type idleBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	idle     time.Duration
	timedOut atomic.Bool
}

func (b *idleBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		b.timedOut.Store(true)
	}
	return n, err
}

// bodyIdle answers a request whose body stopped making progress: 408,
// and the connection closes.
func (in *Inbound) bodyIdle(w http.ResponseWriter) int {
	in.cfg.Metrics.RefusedRequest(limits.ReasonBodyIdle)
	w.Header()["Connection"] = []string{"close"}
	relay.PlainError(w, http.StatusRequestTimeout, bodyIdleMessage(in.cfg.Limits.BodyIdleTimeout))
	return http.StatusRequestTimeout
}

// bodyIdleMessage is the body of every path's 408 for a stalled request
// body.
func bodyIdleMessage(d time.Duration) string {
	return "trellis: the request body made no progress for " + d.String() + " (--body-idle-timeout)\n"
}

// appFailed answers a request the app could not take: 503 "local app
// unavailable" when it is not listening, 502 "local app broke the
// exchange" when it was reached (it may have run the request).
func (in *Inbound) appFailed(w http.ResponseWriter, r *http.Request, err error) int {
	if r.Context().Err() != nil {
		return statusClientClosed
	}
	return in.appFailedFor(w, r.Method, r.URL.Path, err)
}

// appFailedFor is appFailed for a request that is still wanted.
func (in *Inbound) appFailedFor(w http.ResponseWriter, method, path string, err error) int {
	code, body := http.StatusBadGateway, "trellis: local app broke the exchange\n"
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		code, body = http.StatusServiceUnavailable, "trellis: local app unavailable\n"
	}
	if in.logs.allow("app") {
		in.log.Warn("app request failed", "app", in.cfg.AppAddr, "method", method, "path", path, "err", err.Error())
	}
	relay.PlainError(w, code, body)
	return code
}
