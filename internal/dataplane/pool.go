package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/dataplane/mtls"
	"github.com/trellismesh/trellis/internal/dataplane/upstream"
)

// PeerEndpoint is one endpoint of a mesh service as the outbound side sees
// it: the address of its proxy's inbound listener, the identities allowed to
// answer there (secure naming), the connections to it and its health.
// Endpoints are shared by every snapshot that lists the same address with the
// same allowed identities, so config pushes keep connections warm.
type PeerEndpoint struct {
	addr string
	want map[spiffeid.ID]bool
	// wantList is want in order, for error messages.
	wantList []spiffeid.ID
	timeout  time.Duration
	dialer   *net.Dialer
	identity mtls.Identity

	h2Conf, h1Conf, tcpConf *tls.Config
	// h2 multiplexes HTTP requests over one connection (net/http's
	// path); h2p pools the HTTP/2 relay's connections (h2path.go).
	h2  *http.Transport
	h2p *h2relay.Pool
	// fast carries the HTTP/1.1 fast path's requests (fastpath.go).
	fast *upstream.Pool
	// h1 carries Upgrade requests only; made on first use.
	h1     *http.Transport
	h1Once sync.Once

	inflight atomic.Int64
	fails    atomic.Int32
	// downUntil (Unix ns) ejects the endpoint after dial failures; 0 when
	// healthy.
	downUntil atomic.Int64
	// lastFail (Unix ns) and lastErr: the most recent failed dial, replayed
	// to dials attempted within failFastWindow of it.
	lastFail atomic.Int64
	lastErr  atomic.Pointer[dialError]

	// lat is the peak-EWMA latency estimate (balancer_ewma.go).
	lat latencyEWMA
	// outlier is the outlier detection's state (outlier.go).
	outlier outlierState
}

// failFastWindow: dials this soon after a failed one fail the same way
// without trying, so calls that queued behind it do not each wait out a
// dial timeout. Short, so a recovered endpoint is found again quickly.
const failFastWindow = 250 * time.Millisecond

// Addr is the endpoint's proxy address.
func (e *PeerEndpoint) Addr() string { return e.addr }

// InFlight is the number of requests and tunnels using the endpoint now.
func (e *PeerEndpoint) InFlight() int64 { return e.inflight.Load() }

// Healthy is false while the endpoint is ejected after failed dials or
// by outlier detection.
func (e *PeerEndpoint) Healthy() bool {
	if e.downUntil.Load() == 0 && e.outlier.until.Load() == 0 {
		return true
	}
	return e.healthyAt(time.Now().UnixNano())
}

// healthyAt is Healthy at now (Unix ns).
func (e *PeerEndpoint) healthyAt(now int64) bool {
	d, u := e.downUntil.Load(), e.outlier.until.Load()
	return (d == 0 || now >= d) && (u == 0 || now >= u)
}

// Ejection after consecutive dial failures grows from ejectBase to ejectMax.
const (
	ejectBase = 250 * time.Millisecond
	ejectMax  = 10 * time.Second
)

func (e *PeerEndpoint) dialFailed(err *dialError) {
	e.lastErr.Store(err)
	e.lastFail.Store(time.Now().UnixNano())
	n := e.fails.Add(1)
	d := ejectMax
	if n < 8 {
		d = min(ejectBase<<(n-1), ejectMax)
	}
	e.downUntil.Store(time.Now().Add(d).UnixNano())
}

func (e *PeerEndpoint) dialSucceeded() {
	if e.fails.Load() != 0 {
		e.fails.Store(0)
		e.downUntil.Store(0)
		e.lastFail.Store(0)
	}
}

func newPeerEndpoint(cfg DataPlaneConfig, addr string, want map[spiffeid.ID]bool, wantList []spiffeid.ID) *PeerEndpoint {
	e := &PeerEndpoint{
		addr:     addr,
		want:     want,
		wantList: wantList,
		timeout:  cfg.DialTimeout,
		dialer:   &net.Dialer{Timeout: cfg.DialTimeout, Control: cfg.Control},
		identity: cfg.Identity,
	}
	e.h2Conf = mtls.ClientConfig(cfg.Identity, mtls.ALPNH2, addr, want, e.wantList)
	e.h1Conf = mtls.ClientConfig(cfg.Identity, mtls.ALPNHTTP1, addr, want, e.wantList)
	e.tcpConf = mtls.ClientConfig(cfg.Identity, mtls.ALPNTCP, addr, want, e.wantList)
	e.fast = newFastPeerPool(e)
	e.h2p = h2relay.NewPool(h2Config(cfg), func(ctx context.Context) (net.Conn, error) {
		return e.dialTLS(ctx, e.h2Conf)
	})
	var p http.Protocols
	p.SetHTTP2(true)
	e.h2 = &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return e.dialTLS(ctx, e.h2Conf)
		},
		Protocols:          &p,
		DisableCompression: true,
		// One dial at a time: a burst of first calls waits for one
		// connection instead of each handshaking its own. Calls queued
		// behind a failed dial fail at once (see dialTLS), so a
		// blackholed endpoint costs them one dial timeout, not one each.
		MaxConnsPerHost: 1,
		IdleConnTimeout: 2 * time.Minute,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:               30 * time.Second,
			PingTimeout:                   5 * time.Second,
			MaxReceiveBufferPerStream:     4<<20 - 1,
			MaxReceiveBufferPerConnection: 4<<20 - 1,
		},
	}
	return e
}

// upgradeTransport is the HTTP/1.1-over-mTLS transport for Upgrade requests.
func (e *PeerEndpoint) upgradeTransport() *http.Transport {
	e.h1Once.Do(func() {
		var p http.Protocols
		p.SetHTTP1(true)
		e.h1 = &http.Transport{
			DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return e.dialTLS(ctx, e.h1Conf)
			},
			Protocols:           &p,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		}
	})
	return e.h1
}

// retire closes idle connections of an endpoint no snapshot lists any more;
// busy ones finish their requests and are closed by the peer's idle timeout.
func (e *PeerEndpoint) retire() {
	e.fast.CloseIdle(true)
	e.h2.CloseIdleConnections()
	e.h2p.CloseIdle(true)
	if t := e.h1; t != nil {
		t.CloseIdleConnections()
	}
}

// Reasons an outbound call fails before reaching the destination
// (trellis_upstream_failures_total).
const (
	failNoConfig      = "no_config"
	failUnknown       = "unknown_service"
	failNoEndpoints   = "no_endpoints"
	failDial          = "dial"
	failIdentity      = "identity_mismatch"
	failTLS           = "tls"
	failNoCertificate = "no_certificate"
	failUpstream      = "upstream_error"
	failWrongProtocol = "wrong_protocol"
)

// dialError is a failure to open a connection to a peer proxy; nothing was
// sent, so the request may be retried elsewhere.
type dialError struct {
	addr   string
	reason string
	err    error
}

func (e *dialError) Error() string { return "connect to peer " + e.addr + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialTLS connects to the endpoint's proxy and completes the mTLS handshake
// with secure naming, all within the dial timeout.
func (e *PeerEndpoint) dialTLS(ctx context.Context, conf *tls.Config) (*tls.Conn, error) {
	if t := e.lastFail.Load(); t != 0 && time.Now().UnixNano()-t < int64(failFastWindow) {
		if last := e.lastErr.Load(); last != nil {
			return nil, last
		}
	}
	if e.identity.Certificate() == nil {
		// Not the endpoint's fault: no failure recorded against it.
		return nil, &dialError{addr: e.addr, reason: failNoCertificate, err: mtls.ErrNoCertificate}
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	raw, err := e.dialer.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		de := &dialError{addr: e.addr, reason: failDial, err: err}
		e.dialFailed(de)
		return nil, de
	}
	tc := tls.Client(rawIO(raw), conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		closeQuietly(raw)
		reason := failTLS
		var ne *mtls.NamingError
		switch {
		case errors.As(err, &ne):
			reason = failIdentity
		case errors.Is(err, mtls.ErrNoCertificate):
			reason = failNoCertificate
		}
		de := &dialError{addr: e.addr, reason: reason, err: err}
		e.dialFailed(de)
		return nil, de
	}
	e.dialSucceeded()
	return tc, nil
}

func sortedIDs(set map[spiffeid.ID]bool) []spiffeid.ID {
	ids := make([]spiffeid.ID, 0, len(set))
	for id, ok := range set {
		if ok {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b spiffeid.ID) int { return strings.Compare(a.String(), b.String()) })
	return ids
}

// endpointKey identifies a pooled endpoint: the same address reached for
// a different set of allowed identities needs its own connections, since
// secure naming is checked once per connection.
func endpointKey(addr string, ids []spiffeid.ID) string {
	var b strings.Builder
	b.WriteString(addr)
	for _, id := range ids {
		b.WriteByte(' ')
		b.WriteString(id.String())
	}
	return b.String()
}
