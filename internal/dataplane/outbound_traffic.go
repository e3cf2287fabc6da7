package dataplane

import (
	"net/http"
	"net/textproto"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

// Defaults of the fast path's HTTP/1.1 pool per endpoint, which a
// TrafficPolicy's connectionPool overrides.
const (
	defaultMaxIdlePerEndpoint = 256
	defaultPoolIdleTimeout    = 2 * time.Minute
)

// NewPolicyBalancer is DataPlaneConfig.NewBalancer's default: the
// balancer svc's TrafficPolicy names, peak-EWMA without one.
func NewPolicyBalancer(svc *meshconfig.Service, eps []*PeerEndpoint) Balancer {
	tp := svc.Traffic
	if tp == nil {
		return NewPeakEWMA(eps)
	}
	switch tp.LB {
	case resource.LBRoundRobin:
		return NewRoundRobin(eps)
	case resource.LBConsistentHash:
		return NewConsistentHash(eps, NewPeakEWMA(eps))
	}
	return NewPeakEWMA(eps)
}

// applyTraffic sets what rt's TrafficPolicy asks of the data path beside
// the balancer: the hash key, the circuit breaker (reused from the
// previous snapshot when its bounds are the same; put in breakers) and
// the endpoints' pool sizes.
func (o *Outbound) applyTraffic(rt *route, breakers map[string]*breaker) {
	tp := rt.svc.Traffic
	if kb, ok := rt.bal.(KeyedBalancer); ok && tp != nil && tp.LB == resource.LBConsistentHash {
		rt.keyed = kb
		if tp.HashHeader != "" {
			rt.hashHeader = textproto.CanonicalMIMEHeaderKey(tp.HashHeader)
		} else {
			rt.hashCookie = tp.HashCookie
		}
	}
	if b := o.breakers[rt.key]; b.same(tp) {
		rt.brk = b
	} else {
		rt.brk = newBreaker(rt.key, tp)
	}
	if rt.brk != nil {
		breakers[rt.key] = rt.brk
	}
	maxIdle, idle, maxUses := defaultMaxIdlePerEndpoint, defaultPoolIdleTimeout, 0
	if tp != nil {
		if tp.MaxIdlePerEndpoint > 0 {
			maxIdle = tp.MaxIdlePerEndpoint
		}
		if tp.IdleTimeout > 0 {
			idle = tp.IdleTimeout
		}
		if tp.MaxConnections > 0 {
			// Idle connections count toward the bound too.
			maxIdle = min(maxIdle, tp.MaxConnections)
		}
		maxUses = tp.MaxRequestsPerConnection
	}
	for _, e := range rt.eps {
		e.fast.Configure(maxIdle, idle, maxUses)
	}
}

// overflow answers a request the circuit breaker refused at limit.
func (o *Outbound) overflow(w http.ResponseWriter, rt *route, limit string) {
	rt.dest.BreakerOverflow(rt.brk.ref, limit)
	if o.logs.allow(rt.key + " breaker " + limit) {
		o.log.Warn("outbound call refused", "service", rt.key, "reason", "circuit_breaker", "limit", limit, "policy", rt.brk.ref)
	}
	relay.PlainError(w, http.StatusServiceUnavailable, rt.brk.message(limit))
}

// statusOf is resp's status, 0 without a response.
func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}
