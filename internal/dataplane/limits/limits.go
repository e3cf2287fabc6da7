// Package limits bounds what slow or large requests can hold in a proxy's
// inbound and in the app behind it: the Limits configuration (body idle
// timeout, requests in flight to the app in total and per caller, the
// pending queue, header size and count), the Gate that admits requests to
// the app, and the 431 handler for heads over the limits.
//
// It must not depend on the data path's transports (internal/dataplane),
// the proxy role, the control plane, or the store (internal/deptest keeps
// this).
package limits

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
)

// Limits bounds what slow or large requests can hold in the proxy and in
// the app behind it. Zero values mean the defaults below.
type Limits struct {
	// BodyIdleTimeout ends an inbound exchange whose request body makes
	// no progress for this long (--body-idle-timeout): the caller gets
	// 408 and the app connection is closed.
	BodyIdleTimeout time.Duration
	// AppMaxRequests caps the requests in flight to the app, each holding
	// one app connection over HTTP/1.1 (--app-max-requests).
	AppMaxRequests int
	// AppMaxPending caps the requests waiting for one of those slots
	// (--app-max-pending); beyond it, and after AppQueueTimeout, the
	// answer is 503.
	AppMaxPending int
	// CallerMaxRequests caps one caller identity's requests in flight to
	// the app (--caller-max-requests), so one caller cannot take every
	// slot; beyond it the answer is 503.
	CallerMaxRequests int
	// MaxHeaderBytes and MaxHeaderFields bound a request head on the
	// net/http path (--max-header-bytes, --max-header-fields); the fast
	// path takes heads up to 8 KiB and 100 fields and hands larger ones
	// to net/http. Beyond them the answer is 431.
	MaxHeaderBytes  int
	MaxHeaderFields int
}

// Defaults of Limits' zero values (Envoy's header limits: 60 KiB and 100
// fields).
const (
	DefaultBodyIdleTimeout   = 30 * time.Second
	DefaultAppMaxRequests    = 1024
	DefaultAppMaxPending     = 1024
	DefaultCallerMaxRequests = 256
	DefaultMaxHeaderBytes    = 60 << 10
	DefaultMaxHeaderFields   = 100
	// appQueueTimeout bounds a request's wait for an app slot.
	appQueueTimeout = 5 * time.Second
)

// WithDefaults fills the zero values with the defaults.
func (l Limits) WithDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.BodyIdleTimeout <= 0 {
		l.BodyIdleTimeout = DefaultBodyIdleTimeout
	}
	def(&l.AppMaxRequests, DefaultAppMaxRequests)
	def(&l.AppMaxPending, DefaultAppMaxPending)
	def(&l.CallerMaxRequests, DefaultCallerMaxRequests)
	def(&l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	def(&l.MaxHeaderFields, DefaultMaxHeaderFields)
	return l
}

// Reasons an inbound request is refused before the app
// (trellis_inbound_refused_requests_total).
const (
	ReasonAppBusy     = "app_busy"
	ReasonCallerBusy  = "caller_busy"
	ReasonBodyIdle    = "body_idle"
	ReasonHeaderLimit = "header_limit"
)

// Gate caps the requests in flight to the app, in total and per caller
// identity, with a bounded queue for the total.
type Gate struct {
	slots        chan struct{}
	pending      atomic.Int64
	maxPending   int64
	maxPerCaller int64
	callers      sync.Map // principal -> *atomic.Int64
	metrics      *metrics.Metrics
}

// NewGate returns the gate for l, counting refusals in m.
func NewGate(l Limits, m *metrics.Metrics) *Gate {
	return &Gate{
		slots:        make(chan struct{}, l.AppMaxRequests),
		maxPending:   int64(l.AppMaxPending),
		maxPerCaller: int64(l.CallerMaxRequests),
		metrics:      m,
	}
}

func (g *Gate) caller(principal string) *atomic.Int64 {
	if c, ok := g.callers.Load(principal); ok {
		return c.(*atomic.Int64)
	}
	c, _ := g.callers.LoadOrStore(principal, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// Acquire takes a slot for a request of principal ("" for a plaintext
// caller), waiting in the queue when every slot is taken. A nil refusal
// must be paired with Release(principal).
func (g *Gate) Acquire(ctx context.Context, principal string) *admission.Refusal {
	c := g.caller(principal)
	if c.Add(1) > g.maxPerCaller {
		c.Add(-1)
		g.metrics.RefusedRequest(ReasonCallerBusy)
		return &admission.Refusal{Code: http.StatusServiceUnavailable, Msg: "trellis: too many requests in flight from this caller (--caller-max-requests " + strconv.FormatInt(g.maxPerCaller, 10) + ")\n"}
	}
	select {
	case g.slots <- struct{}{}:
		return nil
	default:
	}
	if g.pending.Add(1) > g.maxPending {
		g.pending.Add(-1)
		c.Add(-1)
		g.metrics.RefusedRequest(ReasonAppBusy)
		return appBusy(cap(g.slots), g.maxPending)
	}
	t := time.NewTimer(appQueueTimeout)
	defer t.Stop()
	defer g.pending.Add(-1)
	select {
	case g.slots <- struct{}{}:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	c.Add(-1)
	g.metrics.RefusedRequest(ReasonAppBusy)
	return appBusy(cap(g.slots), g.maxPending)
}

func appBusy(inFlight int, pending int64) *admission.Refusal {
	return &admission.Refusal{Code: http.StatusServiceUnavailable, Msg: "trellis: app busy: " + strconv.Itoa(inFlight) + " requests in flight and the queue full or too slow (--app-max-requests, --app-max-pending " + strconv.FormatInt(pending, 10) + ")\n"}
}

// Release frees the slot of an Acquire that returned nil.
func (g *Gate) Release(principal string) {
	<-g.slots
	g.caller(principal).Add(-1)
}

// HeaderFields answers 431 to a request with more header fields than
// maxFields or a head larger than maxBytes, before h sees it. net/http's
// MaxHeaderBytes bounds what it reads (with 4 KiB of slack, which is why
// the size is checked again here).
func HeaderFields(h http.Handler, maxFields, maxBytes int, m *metrics.Metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, size := 0, len(r.Method)+len(r.RequestURI)+len(r.Host)+16
		for k, vv := range r.Header {
			n += len(vv)
			for _, v := range vv {
				size += len(k) + len(v) + 4
			}
		}
		var msg string
		switch {
		case n > maxFields:
			msg = strconv.Itoa(n) + " header fields, more than the proxy's limit of " + strconv.Itoa(maxFields) + " (--max-header-fields)"
		case size > maxBytes:
			msg = "a request head of about " + strconv.Itoa(size) + " bytes, more than the proxy's limit of " + strconv.Itoa(maxBytes) + " (--max-header-bytes)"
		default:
			h.ServeHTTP(w, r)
			return
		}
		m.RefusedRequest(ReasonHeaderLimit)
		w.Header()["Connection"] = []string{"close"}
		relay.PlainError(w, http.StatusRequestHeaderFieldsTooLarge, "trellis: "+msg+"\n")
	})
}
