package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/cowmap"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/connset"
	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/dataplane/limits"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/mtls"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/dataplane/upstream"
	"github.com/trellismesh/trellis/internal/extauthz"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// Inbound serves the listener other proxies dial (15006): it authenticates
// the caller by mTLS (or, in PERMISSIVE mode, also accepts plaintext on the
// same port), authorizes every HTTP request or TCP connection, and forwards
// to the local app. Create with NewInbound; it is safe for concurrent use.
type Inbound struct {
	cfg     DataPlaneConfig
	svcKey  string // "service.namespace": spans' names
	log     *slog.Logger
	tlsConf *tls.Config
	dialer  *net.Dialer
	appH1   *http.Transport
	appH2   *http.Transport     // h2c, for http2 and grpc apps
	app     *upstream.AppClient // fast path for bodyless requests to HTTP/1.1 apps
	// h2app pools the h2c connections to an HTTP/2 or gRPC app for the
	// HTTP/2 relay (h2path.go); h2conns are its downstream connections.
	h2app   *h2relay.Pool
	h2cfg   *h2relay.Config
	h2conns h2Conns
	// fast serves HTTP/1.1 callers of HTTP/1.1 apps (fastpath.go); nil
	// for other app protocols. fastApp pools the HTTP/1.1 connections to
	// the app, for the fast path and app.
	fast    *fastServer
	fastApp *upstream.Pool
	// chain admits each HTTP request (internal/dataplane/admission).
	chain admission.Chain
	// ownExtAuthz: chain.ExtAuthz is the inbound's own, closed by
	// Shutdown.
	ownExtAuthz bool
	// gate caps the requests in flight to the app (limits.go).
	gate    *limits.Gate
	srv     *http.Server
	httpLis *connset.ChanListener
	started sync.Once

	dest *metrics.Dest
	// accessRate is AccessLogSampleRate, 0 without Events.
	accessRate float64
	peers      cowmap.Map[spiffeid.ID, *peer]
	plainPeer  *peer
	logs       logLimiter

	// conns holds connections the http.Server does not track: those in
	// their TLS handshake, TCP tunnels and upgraded (WebSocket) ones.
	conns     connset.Set
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	closed    bool
}

// idString is id as a string, "" for the zero ID.
func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// NewInbound prepares an inbound side; Serve starts it.
func NewInbound(cfg DataPlaneConfig) *Inbound {
	cfg = cfg.withDefaults()
	in := &Inbound{
		cfg:       cfg,
		log:       cfg.Logger.With("side", "inbound"),
		tlsConf:   mtls.ServerConfig(cfg.Identity),
		dialer:    &net.Dialer{Timeout: cfg.DialTimeout, Control: cfg.Control},
		httpLis:   connset.NewChanListener(&net.TCPAddr{}),
		listeners: make(map[net.Listener]struct{}),
	}
	in.appH1 = appTransport(in.dialer, false)
	in.appH2 = appTransport(in.dialer, true)
	in.h2cfg = h2Config(cfg)
	// A peer proxy's connection carries the cancellations of all its
	// apps' callers (each app connection is held to 100 a second by its
	// own proxy): a higher bar before it counts as an attack.
	in.h2cfg.RapidResets = 1000
	in.h2cfg.BodyIdleTimeout = cfg.Limits.BodyIdleTimeout
	in.h2cfg.BodyIdleMessage = bodyIdleMessage(cfg.Limits.BodyIdleTimeout)
	in.h2app = h2relay.NewPool(in.h2cfg, in.dialApp)
	in.dest = cfg.Metrics.Dest(metrics.Inbound, cfg.Service, cfg.Namespace, "", "", "")
	in.svcKey = cfg.Service + "." + cfg.Namespace
	if cfg.Events != nil {
		in.accessRate = cfg.AccessLogSampleRate
	}
	if in.ownExtAuthz = cfg.ExtAuthz == nil; in.ownExtAuthz {
		cfg.ExtAuthz = extauthz.NewPool()
	}
	in.chain = admission.Chain{Authorizer: cfg.Authorizer, Protocol: cfg.Protocol, Recorder: cfg.Metrics, Log: in.log,
		ExtAuthz: cfg.ExtAuthz, Self: idString(cfg.Identity.ID())}
	in.gate = limits.NewGate(cfg.Limits, cfg.Metrics)
	in.newInboundFast()
	in.app = upstream.NewAppClient(in.fastApp, in.appH1)
	in.plainPeer = newPeer(spiffeid.ID{}, spiffeid.ID{}, cfg.Metrics, cfg.Service, cfg.Namespace, nil)
	in.srv = newHTTPServer(inboundHandler{in}, cfg, true, cfg.Metrics)
	in.srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if ic, ok := c.(*inboundConn); ok {
			return context.WithValue(ctx, peerKey{}, ic.peer)
		}
		return ctx
	}
	return in
}

// appTransport is the pool of connections to the local app: HTTP/1.1 with
// keep-alive, or h2c with prior knowledge.
func appTransport(d *net.Dialer, h2c bool) *http.Transport {
	var p http.Protocols
	if h2c {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return &http.Transport{
		DialContext:         d.DialContext,
		Protocols:           &p,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		// The app's response passes through untouched: no transparent
		// gzip negotiation and decoding by the proxy.
		DisableCompression: true,
		HTTP2:              &http.HTTP2Config{SendPingTimeout: 30 * time.Second},
	}
}

// newHTTPServer builds the http.Server for one side: HTTP/1.1 and h2c
// (prior knowledge) on connections that arrive already sniffed or
// decrypted. refusals counts the inbound side's header-limit refusals
// (nil on the outbound side).
func newHTTPServer(h http.Handler, cfg DataPlaneConfig, h2c bool, refusals *metrics.Metrics) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(h2c)
	return &http.Server{
		// The fast path's limit on fields holds here too; MaxHeaderBytes
		// bounds their size (HTTP/2 header lists included).
		Handler:           limits.HeaderFields(h, cfg.Limits.MaxHeaderFields, cfg.Limits.MaxHeaderBytes, refusals),
		MaxHeaderBytes:    cfg.Limits.MaxHeaderBytes,
		Protocols:         &p,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 1000,
			// Let one stream fill a loopback or LAN pipe between flow
			// control updates.
			MaxReceiveBufferPerStream:     4<<20 - 1,
			MaxReceiveBufferPerConnection: 4<<20 - 1,
		},
		// OPTIONS * belongs to the app, not the proxy.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
}

// inboundConn is a connection handed to the http.Server with its caller.
// It deliberately hides the *tls.Conn: the server then sniffs HTTP/1.1 or
// the h2 preface itself, the same way for mTLS and plaintext callers.
type inboundConn struct {
	net.Conn
	peer *peer
}

func (c *inboundConn) NetConn() net.Conn { return c.Conn }

type peerKey struct{}

// Serve accepts connections on l until Shutdown; it returns
// http.ErrServerClosed after Shutdown, or the accept error.
func (in *Inbound) Serve(l net.Listener) error {
	if !in.track(l) {
		closeQuietly(l)
		return http.ErrServerClosed
	}
	defer in.untrack(l)
	in.started.Do(func() {
		go func() { _ = in.srv.Serve(in.httpLis) }()
	})
	err := connset.AcceptLoop(l, func(c net.Conn) {
		if !in.conns.Add(c) {
			in.cfg.Metrics.Reject(metrics.RejectShutdown)
			closeQuietly(c)
			return
		}
		go in.handleConn(c)
	})
	if in.isClosed() {
		return http.ErrServerClosed
	}
	return fmt.Errorf("inbound: accept: %w", err)
}

// handleConn sniffs TLS or plaintext, authenticates, and hands the
// connection to the HTTP server or a TCP tunnel.
func (in *Inbound) handleConn(c net.Conn) {
	defer in.conns.Remove(c)
	snap := in.cfg.Snapshot()
	if snap == nil {
		in.reject(c, metrics.RejectNoConfig, nil)
		return
	}
	_ = c.SetDeadline(time.Now().Add(in.cfg.HandshakeTimeout))
	raw := rawIO(c)
	var spill *h2relay.SpillConn
	if in.relaysH2() {
		// The HTTP/2 relay spills what a caller does not read (h2relay.Spill);
		// until it takes the connection, writes go straight through.
		spill = h2relay.NewSpillConn(raw)
		raw = spill
	}
	first, pc, err := peekByte(raw)
	if err != nil {
		// Port probes and health checks connect and close; not worth a
		// metric.
		in.log.Debug("inbound connection closed before its first byte", "remote", c.RemoteAddr().String(), "err", err)
		closeQuietly(c)
		return
	}
	var (
		conn net.Conn
		p    *peer
		alpn string
	)
	if first != tlsRecordHandshake {
		if snap.MTLSMode != "PERMISSIVE" {
			in.reject(pc, metrics.RejectPlaintext, nil)
			return
		}
		conn, p = pc, in.plainPeer
	} else {
		tc := tls.Server(pc, in.tlsConf)
		if err := tc.HandshakeContext(context.Background()); err != nil {
			in.reject(tc, handshakeReason(err), err)
			return
		}
		cs := tc.ConnectionState()
		id, err := identity.SPIFFEIDFromCert(cs.PeerCertificates[0]) // verified in the handshake
		if err != nil {
			in.reject(tc, metrics.RejectBadPeerCert, err)
			return
		}
		conn, alpn = tc, cs.NegotiatedProtocol
		p = in.peers.Get(id, func() *peer {
			return newPeer(in.cfg.Identity.ID(), id, in.cfg.Metrics, in.cfg.Service, in.cfg.Namespace, in.cfg.Snapshot())
		})
	}
	_ = c.SetDeadline(time.Time{})
	if in.cfg.Protocol == meshconfig.ProtocolTCP {
		if alpn != "" && alpn != mtls.ALPNTCP {
			in.reject(conn, metrics.RejectALPN, fmt.Errorf("protocol %q on a tcp workload", alpn))
			return
		}
		in.serveTCP(conn, p, snap)
		return
	}
	if alpn == mtls.ALPNH2 && in.relaysH2() {
		serveRelay(&in.h2conns, conn, conn, spill.S, in.h2cfg, &inboundH2{in: in, p: p})
		return
	}
	if in.fast != nil && alpn != mtls.ALPNH2 && alpn != mtls.ALPNTCP {
		in.fast.serve(conn, p)
		return
	}
	// HTTP workloads take h2, http/1.1, and trellis-tcp/1 too (a CONNECT
	// tunnel from an app): all are parsed as HTTP, so every request is
	// still authorized and gets a trustworthy X-Forwarded-Client-Cert.
	if !in.httpLis.Deliver(&inboundConn{Conn: conn, peer: p}) {
		in.cfg.Metrics.Reject(metrics.RejectShutdown)
		closeQuietly(conn)
	}
}

func handshakeReason(err error) string {
	var pce *mtls.PeerCertError
	switch {
	case errors.Is(err, mtls.ErrNoPeerCert):
		return metrics.RejectNoClientCert
	case errors.As(err, &pce):
		return metrics.RejectBadPeerCert
	}
	return metrics.RejectHandshake
}

// reject closes a connection refused before any request, counting and
// logging why (rate-limited: refusals can come by the thousand).
func (in *Inbound) reject(c net.Conn, reason string, err error) {
	in.cfg.Metrics.Reject(reason)
	if in.logs.allow(reason) {
		attrs := []any{"reason", reason, "remote", c.RemoteAddr().String()}
		if err != nil {
			attrs = append(attrs, "err", err.Error())
		}
		in.log.Info("inbound connection refused", attrs...)
	}
	closeQuietly(c)
}

// serveTCP authorizes one TCP connection and tunnels it to the app.
func (in *Inbound) serveTCP(conn net.Conn, p *peer, snap *meshconfig.Snapshot) {
	dec := in.cfg.Authorizer.Authorize(snap, &admission.Request{Source: p.id, Principal: p.principal, Protocol: meshconfig.ProtocolTCP})
	in.cfg.Metrics.Decided(dec)
	if !dec.Allow {
		in.log.Debug("tcp connection denied", "source", p.principal, "reason", dec.Reason, "policy", dec.Policy)
		closeQuietly(conn)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.DialTimeout)
	app, err := in.dialer.DialContext(ctx, "tcp", in.cfg.AppAddr)
	cancel()
	if err != nil {
		if in.logs.allow("app_dial") {
			in.log.Warn("app unreachable", "app", in.cfg.AppAddr, "err", err.Error())
		}
		closeQuietly(conn)
		return
	}
	in.dest.TCPConn()
	recv, sent := metrics.TCPCounters(in.dest)
	relay.Pipe(conn, conn, app, app, recv, sent)
}

func (in *Inbound) track(l net.Listener) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false
	}
	in.listeners[l] = struct{}{}
	return true
}

func (in *Inbound) untrack(l net.Listener) {
	in.mu.Lock()
	delete(in.listeners, l)
	in.mu.Unlock()
}

func (in *Inbound) isClosed() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.closed
}

// Shutdown stops accepting, lets in-flight requests and tunnels finish
// until ctx ends (or DrainTimeout passes), then closes what is left. HTTP/2
// callers get a GOAWAY so they move new requests elsewhere.
func (in *Inbound) Shutdown(ctx context.Context) error {
	in.mu.Lock()
	in.closed = true
	for l := range in.listeners {
		closeQuietly(l)
	}
	in.mu.Unlock()
	if in.cfg.DrainTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, in.cfg.DrainTimeout)
		defer cancel()
	}
	in.h2conns.drain()
	connsDone := make(chan error, 1)
	go func() { connsDone <- in.conns.Shutdown(ctx) }()
	err := in.srv.Shutdown(ctx)
	if err != nil {
		_ = in.srv.Close()
	}
	err = errors.Join(err, <-connsDone)
	in.appH1.CloseIdleConnections()
	in.appH2.CloseIdleConnections()
	in.fastApp.CloseIdle(true)
	in.h2app.CloseIdle(true)
	if in.ownExtAuthz {
		in.chain.ExtAuthz.Close()
	}
	if err != nil {
		return fmt.Errorf("inbound shutdown: %w", err)
	}
	return nil
}
