package meshconfig

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

// TrafficPolicy is one TrafficPolicy compiled: how this proxy calls one
// destination service (docs/traffic.md). Immutable once built; state that
// must outlive snapshots (retry budgets, ejections) lives in the data
// path, keyed by Ref and the service.
type TrafficPolicy struct {
	// Ref is "namespace/name", for answers and metrics.
	Ref string
	// Timeout bounds a whole request, retries included; zero: none.
	Timeout time.Duration
	// Retry is nil without spec.retries (or with 0 attempts).
	Retry *RetryPolicy
	// MaxConnections, MaxPendingRequests and MaxRequestsPerConnection
	// are the circuit breaker's bounds for this caller; zero: unbounded.
	MaxConnections, MaxPendingRequests, MaxRequestsPerConnection int
	// Outlier is nil without spec.outlierDetection.
	Outlier *OutlierPolicy
	// LB is resource.LBPeakEWMA (the default), LBRoundRobin or
	// LBConsistentHash with HashHeader or HashCookie.
	LB                     string
	HashHeader, HashCookie string
	// MaxIdlePerEndpoint and IdleTimeout size the HTTP/1.1 pools; zero:
	// the defaults.
	MaxIdlePerEndpoint int
	IdleTimeout        time.Duration
}

// RetryOn is a set of retry conditions.
type RetryOn uint16

// Retry conditions, in resource.RetryConditions' order.
const (
	Retry5xx RetryOn = 1 << iota
	RetryGatewayError
	RetryReset
	RetryConnectFailure
	RetryCancelled
	RetryDeadlineExceeded
	RetryInternal
	RetryResourceExhausted
	RetryUnavailable
)

// RetryPolicy is a TrafficPolicy's spec.retries.
type RetryPolicy struct {
	Attempts      int
	PerTryTimeout time.Duration
	On            RetryOn
	// BudgetRatio and BudgetMinPerSecond: retries may add at most
	// BudgetRatio of the requests plus BudgetMinPerSecond a second.
	BudgetRatio        float64
	BudgetMinPerSecond int
	NonIdempotent      bool
}

// OutlierPolicy is a TrafficPolicy's spec.outlierDetection.
type OutlierPolicy struct {
	Consecutive5xx, ConsecutiveGatewayErrors int
	BaseEjectionTime, MaxEjectionTime        time.Duration
	MaxEjectedPercent                        int
}

// compileTraffic sets each service's TrafficPolicy: its own, else its
// namespace's default.
func compileTraffic(out *Snapshot, raws [][]byte) error {
	if len(raws) == 0 {
		return nil
	}
	own := map[string]*TrafficPolicy{}       // by service key
	nsDefault := map[string]*TrafficPolicy{} // by namespace
	for i, raw := range raws {
		var o resource.Object
		if err := json.Unmarshal(raw, &o); err != nil {
			return fmt.Errorf("traffic_policies[%d]: %w", i, err)
		}
		if err := resource.Validate(&o); err != nil {
			return fmt.Errorf("traffic_policies[%d]: %w", i, err)
		}
		spec, err := resource.TrafficPolicySpecOf(&o)
		if err != nil {
			return fmt.Errorf("traffic_policies[%d]: %w", i, err)
		}
		tp := trafficPolicyOf(o.Metadata.Namespace+"/"+o.Metadata.Name, &spec)
		ns := o.Metadata.Namespace
		if svc := spec.Selector.Service; svc != "" {
			key := ServiceKey(svc, ns)
			if prev := own[key]; prev == nil || tp.Ref < prev.Ref {
				own[key] = tp // two for one service: the first by name wins
			}
		} else if prev := nsDefault[ns]; prev == nil || tp.Ref < prev.Ref {
			nsDefault[ns] = tp
		}
	}
	for key, s := range out.Services {
		if tp := own[key]; tp != nil {
			s.Traffic = tp
		} else {
			s.Traffic = nsDefault[s.Namespace]
		}
	}
	return nil
}

func trafficPolicyOf(ref string, spec *resource.TrafficPolicySpec) *TrafficPolicy {
	tp := &TrafficPolicy{Ref: ref, Timeout: spec.Timeout.Duration, LB: resource.LBPeakEWMA}
	if r := spec.Retries; r != nil && r.Attempts > 0 {
		rp := &RetryPolicy{Attempts: r.Attempts, PerTryTimeout: r.PerTryTimeout.Duration, NonIdempotent: r.NonIdempotent,
			BudgetRatio: r.Budget.Ratio, BudgetMinPerSecond: r.Budget.MinPerSecond}
		for _, c := range r.On {
			if i := slices.Index(resource.RetryConditions, c); i >= 0 {
				rp.On |= 1 << i
			}
		}
		tp.Retry = rp
	}
	if c := spec.CircuitBreaker; c != nil {
		tp.MaxConnections, tp.MaxPendingRequests, tp.MaxRequestsPerConnection = c.MaxConnections, c.MaxPendingRequests, c.MaxRequestsPerConnection
	}
	if od := spec.OutlierDetection; od != nil {
		tp.Outlier = &OutlierPolicy{Consecutive5xx: od.Consecutive5xx, ConsecutiveGatewayErrors: od.ConsecutiveGatewayErrors,
			BaseEjectionTime: od.BaseEjectionTime.Duration, MaxEjectionTime: od.MaxEjectionTime.Duration, MaxEjectedPercent: od.MaxEjectedPercent}
	}
	if lb := spec.LoadBalancer; lb != nil {
		tp.LB = lb.Policy
		if lb.HashOn != nil {
			tp.HashHeader, tp.HashCookie = lb.HashOn.Header, lb.HashOn.Cookie
		}
	}
	if cp := spec.ConnectionPool; cp != nil {
		tp.MaxIdlePerEndpoint, tp.IdleTimeout = cp.MaxIdlePerEndpoint, cp.IdleTimeout.Duration
	}
	return tp
}
