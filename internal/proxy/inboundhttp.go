package proxy

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"path"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
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
	o := in.serveHTTP(w, r, p, snap)
	src := p.sourceFor(snap, in.cfg.Metrics, in.cfg.Service, in.cfg.Namespace)
	in.dest.request(src, o.code, o.authorized && !o.dec.Allow, start)
	// Off (rate 0, the default), this is one predictable branch.
	if in.accessRate > 0 && (in.accessRate >= 1 || rand.Float64() < in.accessRate) {
		in.accessEvent(r.Method, r.URL.Path, traceID(r.Header), p, snap, &o, start)
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
	dec        Decision
}

// accessEvent emits an "access" event for one finished request.
func (in *Inbound) accessEvent(method, path, trace string, p *peer, snap *Snapshot, o *outcome, start time.Time) {
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

// Status codes recorded for requests that got no upstream response.
const statusClientClosed = 499

func (in *Inbound) serveHTTP(w http.ResponseWriter, r *http.Request, p *peer, snap *Snapshot) outcome {
	if snap == nil {
		plainError(w, http.StatusServiceUnavailable, "trellis: inbound has no configuration yet\n")
		return outcome{code: http.StatusServiceUnavailable}
	}
	if !p.mtls && snap.MTLSMode != "PERMISSIVE" {
		// A plaintext connection accepted while PERMISSIVE outlives a
		// switch to STRICT; its requests stop here.
		w.Header()["Connection"] = []string{"close"}
		plainError(w, http.StatusForbidden, "trellis: mutual TLS required\n")
		return outcome{code: http.StatusForbidden}
	}
	// Only the proxy may speak for the caller: whatever a caller sent is
	// replaced by what its certificate proved (and policies never see it).
	stripCallerXFCC(r.Header)
	// An encoded '?' or '#' inside the path would let the path a policy
	// sees (cut there) differ from the one the app serves: refuse it.
	if strings.ContainsAny(r.URL.Path, "?#") {
		plainError(w, http.StatusBadRequest, "trellis: encoded '?' or '#' in the request path\n")
		return outcome{code: http.StatusBadRequest}
	}
	// Policies see, and the app receives, one canonical path: no dot
	// segments or doubled slashes that could dodge a path rule.
	if clean := normalizePath(r.URL.Path); clean != r.URL.Path {
		r.URL.Path, r.URL.RawPath = clean, ""
	}
	dec := in.cfg.Authorizer.Authorize(snap, &Request{
		Source: p.id, Principal: p.principal, Protocol: in.cfg.Protocol,
		Method: r.Method, Path: r.URL.Path, Host: r.Host, Header: r.Header,
	})
	in.cfg.Metrics.decision(dec)
	if !dec.Allow {
		if in.log.Enabled(r.Context(), slog.LevelDebug) {
			in.log.Debug("request denied", "source", p.principal, "method", r.Method, "path", r.URL.Path, "policy", dec.Policy, "reason", dec.Reason)
		}
		if dec.Policy != "" && !snap.HidePolicy {
			w.Header()[deniedByHeader] = []string{dec.Policy}
		}
		plainError(w, http.StatusForbidden, "RBAC: access denied\n")
		return outcome{code: http.StatusForbidden, authorized: true, dec: dec}
	}
	o := outcome{authorized: true, dec: dec}
	if p.xfcc != nil {
		r.Header[xfccHeader] = p.xfcc
	}
	if up := upgradeType(r); up != "" {
		code, err := forwardUpgrade(w, r, in.appH1, "http", in.cfg.AppAddr, up, &in.conns)
		if err != nil {
			code = in.appFailed(w, r, err)
		}
		o.code = code
		return o
	}
	enableFullDuplex(w, r)
	var rt http.RoundTripper = in.app
	if in.cfg.Protocol == ProtocolHTTP2 || in.cfg.Protocol == ProtocolGRPC {
		rt = in.appH2
	}
	resp, err := rt.RoundTrip(newOutRequest(r, "http", in.cfg.AppAddr))
	if err != nil {
		o.code = in.appFailed(w, r, err)
		return o
	}
	defer resp.Body.Close()
	o.code = resp.StatusCode
	if err := copyResponse(w, resp); err != nil {
		var ue *upstreamBodyError
		o.abort = errors.As(err, &ue)
	}
	return o
}

// appFailed answers a request the app could not take: 503 when it is not
// listening, 502 when it broke the exchange.
func (in *Inbound) appFailed(w http.ResponseWriter, r *http.Request, err error) int {
	if r.Context().Err() != nil {
		return statusClientClosed
	}
	return in.appFailedFor(w, r.Method, r.URL.Path, err)
}

// appFailedFor is appFailed for a request that is still wanted.
func (in *Inbound) appFailedFor(w http.ResponseWriter, method, path string, err error) int {
	code := http.StatusBadGateway
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		code = http.StatusServiceUnavailable
	}
	if in.logs.allow("app") {
		in.log.Warn("app request failed", "app", in.cfg.AppAddr, "method", method, "path", path, "err", err.Error())
	}
	plainError(w, code, "trellis: local app unavailable\n")
	return code
}

// normalizePath resolves dot segments and merges doubled slashes (the path
// is already percent-decoded, so %2e%2e is a dot segment here too). A
// trailing slash is kept; an empty or relative path becomes absolute.
func normalizePath(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") && p[0] == '/' {
		return p // the common case allocates nothing
	}
	clean := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean
}

// stripCallerXFCC removes every caller-supplied copy of the client-cert
// header: the header itself, look-alikes that frameworks fold onto it
// (x_forwarded_client_cert), and a Connection token naming it (which would
// make the hop-by-hop pass delete the proxy's own header after it is set).
func stripCallerXFCC(h http.Header) {
	delete(h, xfccHeader)
	for k := range h {
		if len(k) == len(xfccHeader) && strings.EqualFold(strings.ReplaceAll(k, "_", "-"), xfccHeader) {
			delete(h, k)
		}
	}
	if conn, ok := h["Connection"]; ok {
		kept := conn[:0:0]
		for _, v := range conn {
			var tokens []string
			for _, tok := range strings.Split(v, ",") {
				if !strings.EqualFold(strings.TrimSpace(tok), xfccHeader) {
					tokens = append(tokens, tok)
				}
			}
			if len(tokens) > 0 {
				kept = append(kept, strings.Join(tokens, ","))
			}
		}
		if len(kept) == 0 {
			delete(h, "Connection")
		} else {
			h["Connection"] = kept
		}
	}
}
