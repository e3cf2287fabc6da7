package proxy

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"time"
)

// inboundHandler is the per-request chain of the inbound side: caller
// identity (from the connection) -> authorization -> X-Forwarded-Client-Cert
// -> forward to the app -> telemetry.
type inboundHandler struct{ in *Inbound }

func (h inboundHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	in := h.in
	p, _ := r.Context().Value(peerKey{}).(*peer)
	if p == nil {
		p = in.plainPeer
	}
	code, abort := in.serveHTTP(w, r, p)
	in.dest.request(p.requests, code, start)
	if abort {
		// The response is already under way: abort it so the caller sees a
		// broken stream, not a short but well-formed body.
		panic(http.ErrAbortHandler)
	}
}

// deniedByHeader names the denying policy on a 403, unless the mesh hides
// it (Mesh.spec.authorization.hidePolicy).
const deniedByHeader = "X-Trellis-Denied-By"

// Status codes recorded for requests that got no upstream response.
const statusClientClosed = 499

func (in *Inbound) serveHTTP(w http.ResponseWriter, r *http.Request, p *peer) (code int, abort bool) {
	snap := in.cfg.Snapshot()
	if snap == nil {
		plainError(w, http.StatusServiceUnavailable, "trellis: inbound has no configuration yet\n")
		return http.StatusServiceUnavailable, false
	}
	if !p.mtls && snap.MTLSMode != "PERMISSIVE" {
		// A plaintext connection accepted while PERMISSIVE outlives a
		// switch to STRICT; its requests stop here.
		w.Header()["Connection"] = []string{"close"}
		plainError(w, http.StatusForbidden, "trellis: mutual TLS required\n")
		return http.StatusForbidden, false
	}
	// Only the proxy may speak for the caller: whatever a caller sent is
	// replaced by what its certificate proved (and policies never see it).
	stripCallerXFCC(r.Header)
	// An encoded '?' or '#' inside the path would let the path a policy
	// sees (cut there) differ from the one the app serves: refuse it.
	if strings.ContainsAny(r.URL.Path, "?#") {
		plainError(w, http.StatusBadRequest, "trellis: encoded '?' or '#' in the request path\n")
		return http.StatusBadRequest, false
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
		return http.StatusForbidden, false
	}
	if p.xfcc != nil {
		r.Header[xfccHeader] = p.xfcc
	}
	if up := upgradeType(r); up != "" {
		code, err := forwardUpgrade(w, r, in.appH1, "http", in.cfg.AppAddr, up, &in.conns)
		if err != nil {
			return in.appFailed(w, r, err), false
		}
		return code, false
	}
	enableFullDuplex(w, r)
	var rt http.RoundTripper = in.app
	if in.cfg.Protocol == ProtocolHTTP2 || in.cfg.Protocol == ProtocolGRPC {
		rt = in.appH2
	}
	resp, err := rt.RoundTrip(newOutRequest(r, "http", in.cfg.AppAddr))
	if err != nil {
		return in.appFailed(w, r, err), false
	}
	defer resp.Body.Close()
	if err := copyResponse(w, resp); err != nil {
		var ue *upstreamBodyError
		return resp.StatusCode, errors.As(err, &ue)
	}
	return resp.StatusCode, false
}

// appFailed answers a request the app could not take: 503 when it is not
// listening, 502 when it broke the exchange.
func (in *Inbound) appFailed(w http.ResponseWriter, r *http.Request, err error) int {
	if r.Context().Err() != nil {
		return statusClientClosed
	}
	code := http.StatusBadGateway
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		code = http.StatusServiceUnavailable
	}
	if in.logs.allow("app") {
		in.log.Warn("app request failed", "app", in.cfg.AppAddr, "method", r.Method, "path", r.URL.Path, "err", err.Error())
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
