package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/connset"
	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/tracing"
)

// Outbound carries the app's calls into the mesh: explicit per-service
// listeners (ServeUpstream) and an HTTP forward proxy (ServeHTTPProxy). It
// picks an endpoint, dials its proxy over mTLS with secure naming, and
// multiplexes HTTP over one HTTP/2 connection per endpoint or tunnels TCP.
// Create with NewOutbound; it is safe for concurrent use.
type Outbound struct {
	cfg       DataPlaneConfig
	log       *slog.Logger
	principal string // own SPIFFE ID, the source in metrics
	namespace string
	logs      logLimiter

	// table is the routing table compiled from the current snapshot,
	// rebuilt (under mu) the first time a request sees a new snapshot.
	table atomic.Pointer[routeTable]
	mu    sync.Mutex
	pool  map[string]*PeerEndpoint // by endpointKey
	// budgets are the retry budgets of services with retries, by
	// service key: they outlive snapshots (under mu).
	budgets map[string]*retryBudget
	// breakers are the services' circuit breakers, kept across
	// snapshots while their bounds stay the same (breaker.go).
	breakers map[string]*breaker

	conns connset.Set // TCP tunnels and upgraded connections
	// h2conns are the app connections on the HTTP/2 relay (h2path.go).
	h2cfg   *h2relay.Config
	h2conns h2Conns
	srvMu   sync.Mutex
	servers map[*http.Server]struct{}
	closed  bool

	mirrorsInFlight atomic.Int32 // Routes' mirrored copies (route.go)
}

type routeTable struct {
	snap   *meshconfig.Snapshot
	routes map[string]*route
}

// route is one destination service within one snapshot.
type route struct {
	o    *Outbound
	key  string
	svc  *meshconfig.Service
	tcp  bool
	eps  []*PeerEndpoint
	bal  Balancer
	dest *metrics.Dest
	// traffic is the service's TrafficPolicy, nil without one; budget
	// its retry budget, nil without retries.
	traffic *meshconfig.TrafficPolicy
	budget  *retryBudget
	// keyed is bal when it hashes requests on hashHeader (canonical) or
	// hashCookie (balancer_hash.go); nil otherwise.
	keyed                  KeyedBalancer
	hashHeader, hashCookie string
	// brk is the circuit breaker; nil without bounds.
	brk *breaker
	// ejectMu serializes ejections, which count the ejected endpoints.
	ejectMu sync.Mutex
}

// NewOutbound prepares an outbound side; ServeUpstream and ServeHTTPProxy
// start listeners.
func NewOutbound(cfg DataPlaneConfig) *Outbound {
	cfg = cfg.withDefaults()
	o := &Outbound{
		cfg:     cfg,
		log:     cfg.Logger.With("side", "outbound"),
		pool:    make(map[string]*PeerEndpoint),
		servers: make(map[*http.Server]struct{}),
	}
	o.h2cfg = h2Config(cfg)
	if cfg.Identity != nil {
		if id := cfg.Identity.ID(); !id.IsZero() {
			o.principal, o.namespace = id.String(), namespaceOf(id)
		}
	}
	return o
}

// routes returns the routing table of the current snapshot, nil before
// the first.
func (o *Outbound) routes() *routeTable {
	snap := o.cfg.Snapshot()
	if snap == nil {
		return nil
	}
	if t := o.table.Load(); t != nil && t.snap == snap {
		return t
	}
	return o.rebuild(snap)
}

// rebuild compiles a routing table for snap, reusing pooled endpoints (and
// their connections) that keep the same address and allowed identities,
// and retiring the rest.
func (o *Outbound) rebuild(snap *meshconfig.Snapshot) *routeTable {
	o.mu.Lock()
	defer o.mu.Unlock()
	if t := o.table.Load(); t != nil && t.snap == snap {
		return t
	}
	t := &routeTable{snap: snap, routes: make(map[string]*route, len(snap.Services))}
	pool := make(map[string]*PeerEndpoint, len(o.pool))
	budgets := make(map[string]*retryBudget)
	breakers := make(map[string]*breaker)
	for key, svc := range snap.Services {
		ids := sortedIDs(svc.IDs)
		eps := make([]*PeerEndpoint, 0, len(svc.Endpoints))
		for _, ep := range svc.Endpoints {
			if ep.Addr == "" {
				continue
			}
			k := endpointKey(ep.Addr, ids)
			e := pool[k]
			if e == nil {
				if e = o.pool[k]; e == nil {
					e = newPeerEndpoint(o.cfg, ep.Addr, svc.IDs, ids)
				}
				pool[k] = e
				eps = append(eps, e)
			} else if !containsEndpoint(eps, e) {
				eps = append(eps, e)
			}
		}
		rt := &route{
			o: o, key: key, svc: svc, tcp: svc.Protocol == meshconfig.ProtocolTCP, eps: eps,
			bal:     o.cfg.NewBalancer(svc, eps),
			dest:    o.cfg.Metrics.Dest(metrics.Outbound, svc.Name, svc.Namespace, o.cfg.Service, o.namespace, o.principal),
			traffic: svc.Traffic,
		}
		if tp := svc.Traffic; tp != nil && tp.Retry != nil {
			b := o.budgets[key]
			if b == nil {
				b = new(retryBudget)
			}
			b.set(tp.Retry.BudgetRatio, tp.Retry.BudgetMinPerSecond)
			budgets[key] = b
			rt.budget = b
		}
		o.applyTraffic(rt, breakers)
		t.routes[key] = rt
	}
	o.budgets = budgets
	o.breakers = breakers
	for k, e := range o.pool {
		if pool[k] == nil {
			e.retire()
		}
	}
	o.pool = pool
	o.table.Store(t)
	return t
}

func containsEndpoint(eps []*PeerEndpoint, e *PeerEndpoint) bool {
	for _, x := range eps {
		if x == e {
			return true
		}
	}
	return false
}

// route returns the route for a service key, or nil.
func (o *Outbound) route(key string) *route {
	if t := o.routes(); t != nil {
		return t.routes[key]
	}
	return nil
}

// unknownMessage answers a service the control plane did not name.
const unknownMessage = "unknown mesh service (the control plane did not answer for it within 100 ms, or knows no such service); want SERVICE.NAMESPACE of a service this workload may call"

// unknownCode is what answers a service the config lacks: 503 once the
// control plane was asked and did not name it in time (it may yet: the
// ask is remembered), else code (502 on the HTTP proxy, where the app
// chose the name).
func (o *Outbound) unknownCode(code int) int {
	if o.cfg.Discover != nil {
		return http.StatusServiceUnavailable
	}
	return code
}

// lookup returns the routing table and key's route in it, asking the
// control plane for a service the config lacks (DataPlaneConfig.Discover)
// and waiting for it, bounded. The table is nil before the first config;
// the route nil when the service is still unknown.
func (o *Outbound) lookup(key string) (*routeTable, *route) {
	t := o.routes()
	if t == nil {
		return nil, nil
	}
	if rt := t.routes[key]; rt != nil || o.cfg.Discover == nil {
		return t, rt
	}
	if !o.cfg.Discover(key, netip.Addr{}) {
		return t, nil
	}
	t = o.routes()
	return t, t.routes[key]
}

// ServeUpstream serves a plain local listener for one mesh service
// ("name.namespace"): an HTTP/1.1 and h2c server for HTTP services, a TCP
// tunnel per connection for tcp ones. The protocol is looked up per
// connection; before the first config (or for an unknown service)
// connections are treated as HTTP and answered 503. It returns
// http.ErrServerClosed after Shutdown.
func (o *Outbound) ServeUpstream(l net.Listener, serviceKey string) error {
	srv := newHTTPServer(upstreamHandler{o, serviceKey}, o.cfg, true, nil)
	if !o.trackServer(srv) {
		closeQuietly(l)
		return http.ErrServerClosed
	}
	ul := &upstreamListener{Listener: l, ch: make(chan net.Conn), done: make(chan struct{})}
	fast := o.newUpstreamFast(serviceKey, ul)
	go func() {
		ul.err = connset.AcceptLoop(l, func(c net.Conn) {
			if !o.conns.Add(c) {
				closeQuietly(c)
				return
			}
			go func() {
				defer o.conns.Remove(c)
				if _, rt := o.lookup(serviceKey); rt != nil && rt.tcp {
					o.serveTCP(c, rt)
					return
				}
				fast.serve(rawIO(c), nil)
			}()
		})
		close(ul.done)
	}()
	return srv.Serve(ul)
}

// upstreamListener is what the net/http server of an upstream listener
// accepts from: connections the fast path handed off. Closing it closes
// the real listener, whose accept loop (in ServeUpstream) diverts tcp
// services to tunnels and the rest to the fast path.
type upstreamListener struct {
	net.Listener
	ch   chan net.Conn
	done chan struct{}
	err  error // the accept loop's, once done is closed
}

func (l *upstreamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// deliver hands c to the net/http server; false means the listener is
// closed and the caller still owns c.
func (l *upstreamListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

type upstreamHandler struct {
	o   *Outbound
	key string
}

func (h upstreamHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.o.serveHTTP(w, r, h.key, http.StatusServiceUnavailable)
}

// serveHTTP forwards one app request to the service key; unknownCode
// answers a key the config does not know (503 on an explicit upstream
// listener: the service may just not be pushed yet; 502 on the HTTP proxy,
// where the app chose the name).
func (o *Outbound) serveHTTP(w http.ResponseWriter, r *http.Request, key string, unknownCode int) {
	start := time.Now()
	key, w, rule, done := o.routeHTTP(w, r, key)
	if done {
		return
	}
	t, rt := o.lookup(key)
	if t == nil {
		o.refuse(w, key, nil, failNoConfig, http.StatusServiceUnavailable, "no mesh configuration yet")
		return
	}
	switch {
	case rt == nil:
		o.refuse(w, key, nil, failUnknown, o.unknownCode(unknownCode), unknownMessage)
		return
	case rt.tcp:
		o.refuse(w, key, rt, failWrongProtocol, http.StatusBadGateway, "is a tcp service; use CONNECT or a tcp upstream listener")
		return
	}
	sp := traceHTTP(o.cfg.tracer(), tracing.Client, "outbound", rt.key, r.Header, start)
	if limit := rt.brk.acquire(r.Context().Done()); limit != "" {
		o.overflow(w, rt, limit)
		rt.dest.OutboundRequest(http.StatusServiceUnavailable, start)
		if sp.Recording() {
			sp.End(o.outboundAttrs(rt, rule, r.Method, r.URL.Path, http.StatusServiceUnavailable), time.Now())
		}
		return
	}
	code, abort := o.forwardHTTP(w, r, rt)
	rt.brk.release()
	rt.dest.OutboundRequest(code, start)
	if sp.Recording() {
		sp.End(o.outboundAttrs(rt, rule, r.Method, r.URL.Path, code), time.Now())
	}
	if abort {
		panic(http.ErrAbortHandler)
	}
}

// forwardHTTP sends r to an endpoint of rt over HTTP/2 (or HTTP/1.1 for
// an Upgrade) and copies the response back.
func (o *Outbound) forwardHTTP(w http.ResponseWriter, r *http.Request, rt *route) (code int, abort bool) {
	e := rt.pickHTTP(r)
	if e == nil {
		o.noEndpoints(w, rt)
		return http.StatusServiceUnavailable, false
	}
	if up := relay.UpgradeType(r); up != "" {
		e.inflight.Add(1)
		defer e.inflight.Add(-1)
		code, err := relay.ForwardUpgrade(w, r, e.upgradeTransport(), "https", e.addr, up, &o.conns)
		if err != nil {
			return o.upstreamFailed(w, r, rt, e, err), false
		}
		return code, false
	}
	relay.EnableFullDuplex(w, r)
	if rt.traffic != nil {
		return o.forwardTries(w, r, rt, e)
	}
	var body *trackedBody
	if !relay.Bodyless(r) {
		body = &trackedBody{ReadCloser: r.Body}
		r.Body = body
	}
	e.inflight.Add(1)
	try := time.Now()
	resp, err := e.h2.RoundTrip(relay.NewOutRequest(r, "https", e.addr))
	rt.observe(e, statusOf(resp), err, try)
	if err != nil && retryable(r, err) {
		// Nothing reached the first endpoint; another may be up.
		if e2 := rt.bal.Pick(e); e2 != nil {
			o.logFailure(rt, e, err)
			e.inflight.Add(-1)
			e = e2
			e.inflight.Add(1)
			try = time.Now()
			resp, err = e.h2.RoundTrip(relay.NewOutRequest(r, "https", e.addr))
			rt.observe(e, statusOf(resp), err, try)
		}
	}
	defer e.inflight.Add(-1)
	if err != nil {
		return o.upstreamFailed(w, r, rt, e, err), false
	}
	return o.copyResponse(w, r, rt, resp, body)
}

// copyResponse copies the response of a forwarded request; body tracks
// the request body (nil when there is none or it was buffered).
func (o *Outbound) copyResponse(w http.ResponseWriter, r *http.Request, rt *route, resp *http.Response, body *trackedBody) (code int, abort bool) {
	defer resp.Body.Close()
	early := body != nil && !body.done.Load()
	if early {
		// The answer came before the whole request body (a refusal, a
		// 408 for a stalled body, an early reply): the connection
		// cannot carry another request.
		w.Header()["Connection"] = []string{"close"}
	}
	if err := relay.CopyResponse(w, r, resp); err != nil {
		var ue *relay.UpstreamBodyError
		if errors.As(err, &ue) {
			rt.dest.UpstreamFailure(failUpstream)
			return resp.StatusCode, true
		}
	}
	if early && !body.done.Load() {
		// The transport's request body goroutine may be blocked reading
		// a caller who stopped sending, and closing the response waits
		// for it: send the answer, then end that read.
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		_ = rc.SetReadDeadline(time.Now())
	}
	return resp.StatusCode, false
}

// trackedBody is a request body that says when it was read to the end.
type trackedBody struct {
	io.ReadCloser
	done atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.done.Store(true)
	}
	return n, err
}

// retryable: a request without a body (there is nothing to replay) that
// reached no endpoint: its dial failed, or the new connection it was
// given closed before its first request (x/net/http2's
// errClientConnNotEstablished, unexported: an endpoint restarting).
func retryable(r *http.Request, err error) bool {
	var de *dialError
	return relay.Bodyless(r) && (errors.As(err, &de) || strings.Contains(err.Error(), connNotEstablished))
}

// connNotEstablished is the text of x/net/http2's error for a request
// that was the first on a connection that closed before it was sent.
const connNotEstablished = "http2: client conn could not be established"

// upstreamFailed answers a request no endpoint took: 503 when the peer
// could not be reached or proved the wrong identity, 502 when it broke the
// exchange.
func (o *Outbound) upstreamFailed(w http.ResponseWriter, r *http.Request, rt *route, e *PeerEndpoint, err error) int {
	if r.Context().Err() != nil {
		return statusClientClosed
	}
	return o.upstreamFailedFor(w, rt, e, err)
}

// upstreamFailedFor is upstreamFailed for a request that is still wanted.
func (o *Outbound) upstreamFailedFor(w http.ResponseWriter, rt *route, e *PeerEndpoint, err error) int {
	reason, code := failUpstream, http.StatusBadGateway
	var de *dialError
	if errors.As(err, &de) {
		reason, code = de.reason, http.StatusServiceUnavailable
	}
	rt.dest.UpstreamFailure(reason)
	o.logFailure(rt, e, err)
	relay.PlainError(w, code, "trellis: "+rt.key+" unavailable ("+reason+"): "+err.Error()+"\n")
	return code
}

func (o *Outbound) logFailure(rt *route, e *PeerEndpoint, err error) {
	reason := failUpstream
	var de *dialError
	if errors.As(err, &de) {
		reason = de.reason
	}
	if o.logs.allow(rt.key + " " + e.addr + " " + reason) {
		o.log.Warn("outbound call failed", "service", rt.key, "endpoint", e.addr, "reason", reason, "err", err.Error())
	}
}

// refuse answers a request that cannot be routed at all, with a log line.
func (o *Outbound) refuse(w http.ResponseWriter, key string, rt *route, reason string, code int, msg string) {
	if rt != nil {
		rt.dest.UpstreamFailure(reason)
	} else {
		// Not a configured service: the name may be anything the app
		// asked for, so it goes to the log, not into a label.
		o.cfg.Metrics.UpstreamFailure("", "", reason)
	}
	if o.logs.allow(key + " " + reason) {
		o.log.Warn("outbound call refused", "service", key, "reason", reason, "detail", msg)
	}
	relay.PlainError(w, code, "trellis: "+key+" "+msg+"\n")
}

// noEndpoints answers a request for a service the mesh knows that has no
// live instance (all gone, or only client-only proxies): 503, with a hint
// for that case rather than the unknown-name one.
func (o *Outbound) noEndpoints(w http.ResponseWriter, rt *route) {
	rt.dest.UpstreamFailure(failNoEndpoints)
	if o.logs.allow(rt.key + " " + failNoEndpoints) {
		o.log.Warn("outbound call refused", "service", rt.key, "reason", failNoEndpoints)
	}
	relay.PlainError(w, http.StatusServiceUnavailable, noEndpointsMessage(rt.key))
}

// errNoEndpoints is dialTunnel's error for a service with no endpoint.
var errNoEndpoints = errors.New("no healthy endpoints")

// noEndpointsMessage is the body of a no-endpoints answer for key.
func noEndpointsMessage(key string) string {
	_, ns, _ := strings.Cut(key, ".")
	return "trellis: no healthy endpoints for " + key + ": the service is known, but no instance of it is running with an app " +
		"(its proxies left, or run without --app-addr); `trellis get services -n " + ns + "` counts its instances\n"
}

// dialTunnel opens a trellis-tcp/1 connection to an endpoint of rt,
// trying a second endpoint if the first cannot be reached.
func (o *Outbound) dialTunnel(rt *route) (*PeerEndpoint, *tls.Conn, string, error) {
	e := rt.bal.Pick(nil)
	if e == nil {
		rt.dest.UpstreamFailure(failNoEndpoints)
		if o.logs.allow(rt.key + " " + failNoEndpoints) {
			o.log.Warn("outbound tunnel refused", "service", rt.key, "reason", failNoEndpoints)
		}
		return nil, nil, failNoEndpoints, errNoEndpoints
	}
	tc, err := e.dialTLS(context.Background(), e.tcpConf)
	if err != nil {
		if e2 := rt.bal.Pick(e); e2 != nil {
			o.logFailure(rt, e, err)
			e = e2
			tc, err = e.dialTLS(context.Background(), e.tcpConf)
		}
	}
	if err != nil {
		reason := failDial
		var de *dialError
		if errors.As(err, &de) {
			reason = de.reason
		}
		rt.dest.UpstreamFailure(reason)
		o.logFailure(rt, e, err)
		return e, nil, reason, err
	}
	return e, tc, "", nil
}

// tunnel relays the app connection c (read through cr, which may hold
// buffered bytes) to rt over a connection from dialTunnel.
func (o *Outbound) tunnel(c net.Conn, cr io.Reader, rt *route, e *PeerEndpoint, tc *tls.Conn) {
	e.inflight.Add(1)
	defer e.inflight.Add(-1)
	rt.dest.TCPConn()
	recv, sent := metrics.TCPCounters(rt.dest)
	relay.Pipe(c, cr, tc, tc, recv, sent)
}

// serveTCP tunnels one connection of a tcp upstream listener.
func (o *Outbound) serveTCP(c net.Conn, rt *route) {
	e, tc, _, err := o.dialTunnel(rt)
	if err != nil {
		closeQuietly(c)
		return
	}
	o.tunnel(c, c, rt, e, tc)
}

func (o *Outbound) trackServer(srv *http.Server) bool {
	o.srvMu.Lock()
	defer o.srvMu.Unlock()
	if o.closed {
		return false
	}
	o.servers[srv] = struct{}{}
	return true
}

// Shutdown stops every listener, lets in-flight requests and tunnels
// finish until ctx ends (or DrainTimeout passes), closes what is left and
// the idle connections to peers.
func (o *Outbound) Shutdown(ctx context.Context) error {
	o.srvMu.Lock()
	o.closed = true
	servers := make([]*http.Server, 0, len(o.servers))
	for s := range o.servers {
		servers = append(servers, s)
	}
	o.srvMu.Unlock()
	o.h2conns.drain()
	if o.cfg.DrainTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.cfg.DrainTimeout)
		defer cancel()
	}
	errs := make(chan error, len(servers)+1)
	go func() { errs <- o.conns.Shutdown(ctx) }()
	for _, s := range servers {
		go func() {
			err := s.Shutdown(ctx)
			if err != nil {
				_ = s.Close()
			}
			errs <- err
		}()
	}
	var err error
	for range len(servers) + 1 {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	o.mu.Lock()
	for _, e := range o.pool {
		e.retire()
	}
	o.mu.Unlock()
	if err != nil {
		return fmt.Errorf("outbound shutdown: %w", err)
	}
	return nil
}
