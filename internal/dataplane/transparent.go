package dataplane

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellismesh/trellis/internal/dataplane/capture"
	"github.com/trellismesh/trellis/internal/dataplane/connset"
	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// Transparent mode: iptables rules (internal/iptables) redirect the
// workload's outbound TCP to the capture listener; internal/dataplane/
// capture recovers each connection's original destination and detects its
// protocol, and the outbound routes it:
//
//	original destination is a service VIP -> that service, as an explicit
//	    upstream listener would (HTTP detected from the first bytes, else
//	    an opaque tunnel)
//	anything else, when EgressPolicies select the workload -> passed
//	    through only to a host they allow (egress.go)
//	anything else -> MeshConfig.outbound_mode: passthrough (dial the
//	    original destination) or block (reset)
//
// Every socket the proxy opens carries SO_MARK netcap.ProxyMark, which the
// rules let through: without it the proxy would capture its own traffic.

// ServeCapture serves the transparent mode's outbound capture listener:
// connections the iptables rules redirected there are routed by their
// original destination (see the top of transparent.go). A connection
// whose original destination is the listener itself (dialed directly, not
// redirected) is refused. Passthrough connections are dialed with the data
// path's Control (DataPlaneConfig.Control), which must set the proxy's
// mark, or the rules capture them again. It returns http.ErrServerClosed
// after Shutdown.
func (o *Outbound) ServeCapture(l net.Listener, cfg capture.Config) error {
	var reg prometheus.Registerer
	if o.cfg.Metrics != nil {
		reg = o.cfg.Metrics.Registry()
	}
	cp := &captureLoop{
		o: o, l: l, cfg: cfg.WithDefaults(),
		metrics: capture.NewMetrics(reg),
		httpLis: connset.NewChanListener(l.Addr()),
		dialer:  &net.Dialer{Timeout: capture.PassthroughDialTimeout, Control: o.cfg.Control},
	}
	srv := newHTTPServer(http.HandlerFunc(cp.serveHTTP), o.cfg, true, nil)
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if cc, ok := c.(*capturedConn); ok {
			return context.WithValue(ctx, captureKey{}, cc.key)
		}
		return ctx
	}
	srv.RegisterOnShutdown(func() { closeQuietly(l) })
	if !o.trackServer(srv) {
		closeQuietly(l)
		return http.ErrServerClosed
	}
	var served sync.WaitGroup
	served.Go(func() { _ = srv.Serve(cp.httpLis) })
	err := connset.AcceptLoop(l, func(c net.Conn) { go cp.handle(c) })
	closeQuietly(cp.httpLis)
	served.Wait()
	if errors.Is(err, net.ErrClosed) {
		return http.ErrServerClosed
	}
	return err
}

// captureLoop is one ServeCapture loop.
type captureLoop struct {
	o       *Outbound
	l       net.Listener
	cfg     capture.Config
	metrics *capture.Metrics
	httpLis *connset.ChanListener // HTTP connections, with their service key
	dialer  *net.Dialer           // passthrough
}

type captureKey struct{}

// capturedConn is a connection detected as HTTP, handed to the capture's
// HTTP server with the service its original destination named.
type capturedConn struct {
	net.Conn
	key string
}

// NetConn exposes the socket for half-closing (upgraded connections).
func (c *capturedConn) NetConn() net.Conn { return c.Conn }

func (cp *captureLoop) serveHTTP(w http.ResponseWriter, r *http.Request) {
	key, _ := r.Context().Value(captureKey{}).(string)
	cp.o.serveHTTP(w, r, key, http.StatusServiceUnavailable)
}

// handle routes one captured connection.
func (cp *captureLoop) handle(c net.Conn) {
	o := cp.o
	if !o.conns.Add(c) {
		closeQuietly(c)
		return
	}
	defer o.conns.Remove(c)
	dst, err := cp.cfg.OriginalDst(c)
	if err != nil {
		cp.refuse(c, capture.ResultError, "original destination unknown: only connections the iptables rules redirect belong here", dst, err)
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if capture.IsSelf(cp.l, c, dst) {
		cp.refuse(c, capture.ResultError, "connection to the capture listener itself: it only takes redirected connections", dst, nil)
		return
	}
	t := o.routes()
	if t == nil {
		cp.refuse(c, capture.ResultError, "no mesh configuration yet", dst, nil)
		return
	}
	key, ok := t.snap.ServiceByVIP[dst.Addr()]
	if !ok && o.cfg.Discover != nil && t.snap.InVIPRange(dst.Addr()) && o.cfg.Discover("", dst.Addr()) {
		// A virtual IP the scoped config lacks: asked for and pushed.
		t = o.routes()
		key, ok = t.snap.ServiceByVIP[dst.Addr()]
	}
	if ok {
		rt := t.routes[key]
		if rt == nil {
			cp.refuse(c, capture.ResultError, "virtual IP of "+key+", which is not in the routing table", dst, nil)
			return
		}
		cp.metrics.Captured(capture.ResultMesh)
		cp.serveMesh(c, dst, rt)
		return
	}
	if t.snap.InVIPRange(dst.Addr()) {
		cp.refuse(c, capture.ResultError, "virtual IP the control plane named no service for (asked; no answer within 100 ms)", dst, nil)
		return
	}
	if !t.snap.Egress.Empty() {
		cp.serveEgress(c, dst, t.snap)
		return
	}
	if t.snap.OutboundMode == meshconfig.OutboundBlock {
		cp.refuse(c, capture.ResultBlocked, "not a mesh service, and the mesh's outbound mode is block", dst, nil)
		return
	}
	if err := capture.Passthrough(c, dst, cp.dialer, cp.metrics); err != nil {
		cp.refuse(c, capture.ResultError, "passthrough to a destination outside the mesh failed", dst, err)
	}
}

// serveMesh serves a connection to a mesh service: a tunnel for tcp
// services and server-first ports, else HTTP when the first bytes say so.
func (cp *captureLoop) serveMesh(c net.Conn, dst netip.AddrPort, rt *route) {
	if rt.tcp || capture.ServerFirst(dst.Port()) {
		cp.o.serveTCP(c, rt)
		return
	}
	isHTTP, pc, err := capture.Detect(rawIO(c), cp.cfg.DetectTimeout, cp.metrics)
	if err != nil {
		closeQuietly(c)
		return
	}
	if !isHTTP {
		// The service's proxy still parses the tunnel as HTTP (HTTP
		// services are authorized per request), so an HTTP client that
		// waited past the timeout still works.
		cp.o.serveTCP(pc, rt)
		return
	}
	// HTTP/1.1 takes the fast path (fastpath.go); it hands anything else
	// (h2c, upgrades, ...) to the capture's HTTP server.
	fast := &fastServer{
		accept:      func(*h1.Head) bool { return !cp.o.rewritesResponses(rt.key) }, // as newUpstreamFast
		handle:      func(fc *fastConn, req *h1.Head) bool { return cp.o.serveFast(fc, req, rt.key) },
		idleTimeout: cp.o.cfg.IdleTimeout,
		conns:       &cp.o.conns,
		handoff: func(c net.Conn, _ *peer) bool {
			return cp.httpLis.Deliver(&capturedConn{Conn: c, key: rt.key})
		},
	}
	fast.serve(pc, nil)
}

// refuse counts and logs a captured connection that is not served, and
// resets it (the app sees a refused connection rather than an empty
// answer).
func (cp *captureLoop) refuse(c net.Conn, result, why string, dst netip.AddrPort, err error) {
	cp.metrics.Captured(result)
	// One line per result and second: destinations are whatever the app
	// dials, so they are not part of the limiter's key.
	if cp.o.logs.allow("capture " + result) {
		args := []any{"result", result, "reason", why, "destination", dst.String()}
		if err != nil {
			args = append(args, "err", err.Error())
		}
		cp.o.log.Warn("captured connection refused", args...)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	closeQuietly(c)
}
