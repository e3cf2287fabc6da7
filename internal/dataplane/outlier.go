package dataplane

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// outlierState is an endpoint's outlier detection state. It lives on the
// PeerEndpoint, so it survives config pushes that keep the endpoint.
type outlierState struct {
	// c5xx and cgw count consecutive 5xx answers and gateway errors
	// (502, 503, 504, no answer).
	c5xx, cgw atomic.Int32
	// until (Unix ns) ejects the endpoint; 0 when it is not ejected.
	until atomic.Int64
	// ejections is how many times in a row the endpoint was ejected;
	// lastEnd is when the last ejection ended (Unix ns).
	ejections atomic.Int32
	lastEnd   atomic.Int64
}

// Reasons of an ejection (trellis_outbound_ejections_total).
const (
	ejectConsecutive5xx     = "consecutive_5xx"
	ejectConsecutiveGateway = "consecutive_gateway_errors"
)

// observe records how one try on e went, for the peak-EWMA estimate and
// outlier detection: code is the response status (0 when none came), err
// what broke the exchange (nil when it ended cleanly), start when the try
// began. Call it once per try, right after it; it does not allocate.
func (rt *route) observe(e *PeerEndpoint, code int, err error, start time.Time) {
	rt.observeTook(e, code, err, time.Since(start))
}

// observeTook is observe with the try's latency (0 or less: none to
// record).
func (rt *route) observeTook(e *PeerEndpoint, code int, err error, took time.Duration) {
	if e == nil || code == statusClientClosed || (err != nil && callerGone(err)) {
		return
	}
	now := time.Now()
	if code != 0 && took > 0 {
		e.lat.observe(took, now.UnixNano())
	}
	op := rt.outlierPolicy()
	if op == nil {
		return
	}
	o := &e.outlier
	gateway := err != nil || code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
	if !gateway && (code < 500 || code > 599) {
		if o.c5xx.Load() != 0 || o.cgw.Load() != 0 {
			o.c5xx.Store(0)
			o.cgw.Store(0)
		}
		if u := o.until.Load(); u != 0 && now.UnixNano() >= u && o.until.CompareAndSwap(u, 0) {
			o.lastEnd.Store(u)
			rt.dest.EjectedEndpoints(rt.ejectedCount(now.UnixNano()))
		}
		return
	}
	n5 := o.c5xx.Add(1)
	var ng int32
	if gateway {
		ng = o.cgw.Add(1)
	} else if o.cgw.Load() != 0 {
		o.cgw.Store(0)
	}
	switch {
	case op.ConsecutiveGatewayErrors > 0 && int(ng) >= op.ConsecutiveGatewayErrors:
		rt.eject(e, ejectConsecutiveGateway, now.UnixNano())
	case op.Consecutive5xx > 0 && int(n5) >= op.Consecutive5xx:
		rt.eject(e, ejectConsecutive5xx, now.UnixNano())
	}
}

// callerGone: the exchange broke on the caller's side, which says nothing
// about the endpoint.
func callerGone(err error) bool {
	return errors.Is(err, relay.ErrClientGone) || errors.Is(err, context.Canceled)
}

// grpcAsHTTP folds a gRPC status into the HTTP status outlier detection
// sees: UNAVAILABLE counts as a gateway error (503), INTERNAL as a 500.
func grpcAsHTTP(code, grpcStatus int) int {
	switch {
	case code != http.StatusOK:
		return code
	case grpcStatus == 14:
		return http.StatusServiceUnavailable
	case grpcStatus == 13:
		return http.StatusInternalServerError
	}
	return code
}

// eject takes e out of rotation for BaseEjectionTime times the number of
// its ejections in a row (capped at MaxEjectionTime), unless that would
// eject more than MaxEjectedPercent of the service's endpoints (at least
// one may always be ejected).
func (rt *route) eject(e *PeerEndpoint, reason string, now int64) {
	op := rt.outlierPolicy()
	rt.ejectMu.Lock()
	defer rt.ejectMu.Unlock()
	o := &e.outlier
	o.c5xx.Store(0)
	o.cgw.Store(0)
	if u := o.until.Load(); u != 0 && now < u {
		return
	}
	ejected := rt.ejectedCount(now)
	if ejected >= max(1, len(rt.eps)*op.MaxEjectedPercent/100) {
		rt.dest.EjectionSkipped(reason)
		return
	}
	// A run of ejections ends once the endpoint stayed in for
	// MaxEjectionTime (Envoy lowers its multiplier the same way).
	if end := o.lastEnd.Load(); end != 0 && now-end > int64(op.MaxEjectionTime) {
		o.ejections.Store(0)
	}
	n := o.ejections.Add(1)
	d := min(op.BaseEjectionTime*time.Duration(n), op.MaxEjectionTime)
	o.until.Store(now + int64(d))
	rt.dest.Ejection(reason)
	rt.dest.EjectedEndpoints(ejected + 1)
	if rt.o.logs.allow(rt.key + " " + e.addr + " ejected") {
		rt.o.log.Warn("outbound endpoint ejected", "service", rt.key, "endpoint", e.addr, "reason", reason,
			"for", d.String(), "policy", rt.svc.Traffic.Ref)
	}
}

// ejectedCount is how many of the route's endpoints are ejected at now.
func (rt *route) ejectedCount(now int64) int {
	n := 0
	for _, x := range rt.eps {
		if u := x.outlier.until.Load(); u != 0 && now < u {
			n++
		}
	}
	return n
}

func (rt *route) outlierPolicy() *meshconfig.OutlierPolicy {
	if tp := rt.svc.Traffic; tp != nil {
		return tp.Outlier
	}
	return nil
}
