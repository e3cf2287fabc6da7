package resource

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/trellismesh/trellis/internal/names"
)

// KindTrafficPolicy says how callers reach a destination service:
// timeouts, retries with a budget, circuit breaking, outlier ejection,
// load balancing and connection pools (docs/traffic.md). It applies on
// the caller's side, to every proxy that calls the service.
const KindTrafficPolicy = "TrafficPolicy"

// Load-balancing policies (LoadBalancer.Policy).
const (
	LBPeakEWMA       = "peak-ewma"       // power of two choices by peak-EWMA latency (default)
	LBRoundRobin     = "round-robin"     // in turn
	LBConsistentHash = "consistent-hash" // by a header or cookie, for stickiness
)

// Retry conditions (TrafficRetries.On). HTTP: a 5xx answer, a 502/503/504
// answer, a connection reset or closed before the answer, a connection
// that could not be made. gRPC: the status of an answer.
const (
	RetryOn5xx               = "5xx"
	RetryOnGatewayError      = "gateway-error"
	RetryOnReset             = "reset"
	RetryOnConnectFailure    = "connect-failure"
	RetryOnCancelled         = "cancelled"
	RetryOnDeadlineExceeded  = "deadline-exceeded"
	RetryOnInternal          = "internal"
	RetryOnResourceExhausted = "resource-exhausted"
	RetryOnUnavailable       = "unavailable"
)

// RetryConditions lists the conditions in documentation order.
var RetryConditions = []string{RetryOn5xx, RetryOnGatewayError, RetryOnReset, RetryOnConnectFailure,
	RetryOnCancelled, RetryOnDeadlineExceeded, RetryOnInternal, RetryOnResourceExhausted, RetryOnUnavailable}

// TrafficPolicySpec is one destination's (or, without selector.service,
// every destination of the namespace's) client-side traffic settings. A
// service's own TrafficPolicy replaces the namespace default; they are
// not merged.
type TrafficPolicySpec struct {
	// Selector picks the destination: service, in the policy's
	// namespace; empty means every service of the namespace.
	Selector Selector `json:"selector"`
	// Timeout bounds a whole request, retries included (504 after it).
	// Zero: none.
	Timeout          Duration          `json:"timeout,omitzero"`
	Retries          *TrafficRetries   `json:"retries,omitempty"`
	CircuitBreaker   *CircuitBreaker   `json:"circuitBreaker,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	LoadBalancer     *LoadBalancer     `json:"loadBalancer,omitempty"`
	ConnectionPool   *ConnectionPool   `json:"connectionPool,omitempty"`
}

// TrafficRetries retries failed requests within a budget.
type TrafficRetries struct {
	// Attempts is the number of retries after the first try, 0 to 10.
	Attempts int `json:"attempts"`
	// PerTryTimeout bounds each try (zero: only Timeout).
	PerTryTimeout Duration `json:"perTryTimeout,omitzero"`
	// On are the conditions that make a retry (RetryConditions); default
	// connect-failure, reset, gateway-error, unavailable.
	On []string `json:"on,omitempty"`
	// Budget caps retries as a share of requests; default 20% + 10/s.
	Budget *RetryBudget `json:"budget,omitempty"`
	// NonIdempotent retries other methods than GET, HEAD, OPTIONS, TRACE,
	// PUT and DELETE too (gRPC calls count as idempotent only with it).
	NonIdempotent bool `json:"nonIdempotent,omitempty"`
}

// RetryBudget is Linkerd's: retries may add at most Ratio of the live
// requests, plus MinPerSecond, over a 10 s window.
type RetryBudget struct {
	Ratio        float64 `json:"ratio"`
	MinPerSecond int     `json:"minPerSecond"`
}

// CircuitBreaker bounds what one caller proxy sends to the service (all
// its endpoints); zero fields are unbounded.
type CircuitBreaker struct {
	MaxConnections           int `json:"maxConnections,omitempty"`
	MaxPendingRequests       int `json:"maxPendingRequests,omitempty"`
	MaxRequestsPerConnection int `json:"maxRequestsPerConnection,omitempty"`
}

// OutlierDetection ejects an endpoint after consecutive failures, for
// BaseEjectionTime times the number of ejections so far (at most
// MaxEjectionTime), never more than MaxEjectedPercent of the endpoints.
type OutlierDetection struct {
	Consecutive5xx           int      `json:"consecutive5xx,omitempty"`
	ConsecutiveGatewayErrors int      `json:"consecutiveGatewayErrors,omitempty"`
	BaseEjectionTime         Duration `json:"baseEjectionTime,omitzero"`
	MaxEjectionTime          Duration `json:"maxEjectionTime,omitzero"`
	MaxEjectedPercent        int      `json:"maxEjectedPercent,omitempty"`
}

// LoadBalancer chooses among the service's endpoints.
type LoadBalancer struct {
	// Policy is LBPeakEWMA (default), LBRoundRobin or LBConsistentHash.
	Policy string `json:"policy,omitempty"`
	// HashOn is what consistent-hash hashes; required with it.
	HashOn *HashOn `json:"hashOn,omitempty"`
}

// HashOn names one request attribute.
type HashOn struct {
	Header string `json:"header,omitempty"`
	Cookie string `json:"cookie,omitempty"`
}

// ConnectionPool sizes the caller's pools per endpoint.
type ConnectionPool struct {
	// MaxIdlePerEndpoint is the idle HTTP/1.1 connections kept per
	// endpoint (default 256).
	MaxIdlePerEndpoint int `json:"maxIdlePerEndpoint,omitempty"`
	// IdleTimeout closes pooled connections idle this long (default 2m).
	IdleTimeout Duration `json:"idleTimeout,omitzero"`
}

// Defaults of a TrafficPolicy.
var (
	DefaultRetryOn        = []string{RetryOnConnectFailure, RetryOnReset, RetryOnGatewayError, RetryOnUnavailable}
	DefaultRetryBudget    = RetryBudget{Ratio: 0.2, MinPerSecond: 10}
	DefaultBaseEjection   = 30 * time.Second
	DefaultMaxEjectedPct  = 50
	DefaultMaxEjectionFor = 5 * time.Minute
)

// TrafficPolicySpecOf decodes, defaults and checks the spec of a
// TrafficPolicy.
func TrafficPolicySpecOf(o *Object) (TrafficPolicySpec, error) {
	var errs errorList
	spec := trafficPolicySpec(&errs, o.Spec)
	if err := errs.err(o.Source, o.Ref()); err != nil {
		return TrafficPolicySpec{}, err
	}
	return spec, nil
}

func trafficPolicySpec(errs *errorList, raw json.RawMessage) TrafficPolicySpec {
	var s TrafficPolicySpec
	decodeSpec(errs, retriesOnKey(raw), &s)
	if sv := s.Selector.Service; sv != "" && !names.IsDNSLabel(sv) {
		errs.add("spec.selector.service", "%s %s", quote(sv), names.DNSLabelRule)
	}
	if len(s.Selector.MatchLabels) > 0 {
		errs.add("spec.selector.matchLabels", "a TrafficPolicy selects a destination service, not workloads: use selector.service (or none for the whole namespace)")
	}
	checkDuration(errs, "spec.timeout", s.Timeout.Duration, 0, time.Hour)
	if r := s.Retries; r != nil {
		if r.Attempts < 0 || r.Attempts > 10 {
			errs.add("spec.retries.attempts", "must be from 0 to 10 (retries after the first try), got %d", r.Attempts)
		}
		checkDuration(errs, "spec.retries.perTryTimeout", r.PerTryTimeout.Duration, 0, time.Hour)
		if len(r.On) == 0 {
			r.On = append([]string(nil), DefaultRetryOn...)
		}
		for i := range r.On {
			canonicalEnum(errs, fmt.Sprintf("spec.retries.on[%d]", i), &r.On[i], RetryConditions...)
		}
		if r.Budget == nil {
			b := DefaultRetryBudget
			r.Budget = &b
		}
		if b := r.Budget; !(b.Ratio >= 0 && b.Ratio <= 10) || b.MinPerSecond < 0 || b.MinPerSecond > 100000 {
			errs.add("spec.retries.budget", "ratio must be from 0 to 10 (0.2 is 20%% more requests) and minPerSecond from 0 to 100000, got %v and %d", b.Ratio, b.MinPerSecond)
		}
	}
	if c := s.CircuitBreaker; c != nil {
		for _, f := range []struct {
			name string
			v    int
		}{{"maxConnections", c.MaxConnections}, {"maxPendingRequests", c.MaxPendingRequests}, {"maxRequestsPerConnection", c.MaxRequestsPerConnection}} {
			if f.v < 0 || f.v > 10000000 {
				errs.add("spec.circuitBreaker."+f.name, "must be from 0 (unbounded) to 10000000, got %d", f.v)
			}
		}
	}
	if od := s.OutlierDetection; od != nil {
		if od.Consecutive5xx < 0 || od.Consecutive5xx > 1000 {
			errs.add("spec.outlierDetection.consecutive5xx", "must be from 0 (off) to 1000, got %d", od.Consecutive5xx)
		}
		if od.ConsecutiveGatewayErrors < 0 || od.ConsecutiveGatewayErrors > 1000 {
			errs.add("spec.outlierDetection.consecutiveGatewayErrors", "must be from 0 (off) to 1000, got %d", od.ConsecutiveGatewayErrors)
		}
		if od.Consecutive5xx == 0 && od.ConsecutiveGatewayErrors == 0 && !errs.failedAt("spec.outlierDetection") {
			errs.add("spec.outlierDetection", "set consecutive5xx or consecutiveGatewayErrors (e.g. consecutive5xx: 5)")
		}
		if od.BaseEjectionTime.Duration == 0 {
			od.BaseEjectionTime.Duration = DefaultBaseEjection
		}
		if od.MaxEjectionTime.Duration == 0 {
			od.MaxEjectionTime.Duration = max(DefaultMaxEjectionFor, od.BaseEjectionTime.Duration)
		}
		checkDuration(errs, "spec.outlierDetection.baseEjectionTime", od.BaseEjectionTime.Duration, time.Millisecond, time.Hour)
		checkDuration(errs, "spec.outlierDetection.maxEjectionTime", od.MaxEjectionTime.Duration, od.BaseEjectionTime.Duration, 24*time.Hour)
		if od.MaxEjectedPercent == 0 {
			od.MaxEjectedPercent = DefaultMaxEjectedPct
		}
		if od.MaxEjectedPercent < 1 || od.MaxEjectedPercent > 100 {
			errs.add("spec.outlierDetection.maxEjectedPercent", "must be from 1 to 100, got %d", od.MaxEjectedPercent)
		}
	}
	if lb := s.LoadBalancer; lb != nil {
		if lb.Policy == "" {
			lb.Policy = LBPeakEWMA
		}
		canonicalEnum(errs, "spec.loadBalancer.policy", &lb.Policy, LBPeakEWMA, LBRoundRobin, LBConsistentHash)
		switch {
		case lb.Policy == LBConsistentHash && (lb.HashOn == nil || (lb.HashOn.Header == "") == (lb.HashOn.Cookie == "")):
			errs.add("spec.loadBalancer.hashOn", "consistent-hash needs exactly one of hashOn.header or hashOn.cookie, e.g. {header: x-user}")
		case lb.Policy != LBConsistentHash && lb.HashOn != nil:
			errs.add("spec.loadBalancer.hashOn", "only with policy consistent-hash")
		case lb.HashOn != nil && lb.HashOn.Header != "" && !names.IsHTTPToken(lb.HashOn.Header):
			errs.add("spec.loadBalancer.hashOn.header", "%s is not a header name", quote(lb.HashOn.Header))
		}
	}
	if cp := s.ConnectionPool; cp != nil {
		if cp.MaxIdlePerEndpoint < 0 || cp.MaxIdlePerEndpoint > 100000 {
			errs.add("spec.connectionPool.maxIdlePerEndpoint", "must be from 0 (default 256) to 100000, got %d", cp.MaxIdlePerEndpoint)
		}
		checkDuration(errs, "spec.connectionPool.idleTimeout", cp.IdleTimeout.Duration, 0, 24*time.Hour)
	}
	return s
}

// retriesOnKey undoes YAML 1.1 reading the key `on` of spec.retries as
// the boolean true (the YAML parser then writes it "true"): the issue's
// shape, `retries: {on: [5xx]}`, must mean what it says.
func retriesOnKey(raw json.RawMessage) json.RawMessage {
	if !bytes.Contains(raw, []byte(`"true"`)) {
		return raw
	}
	var spec map[string]json.RawMessage
	if json.Unmarshal(raw, &spec) != nil {
		return raw
	}
	var retries map[string]json.RawMessage
	if json.Unmarshal(spec["retries"], &retries) != nil {
		return raw
	}
	v, ok := retries["true"]
	if _, dup := retries["on"]; !ok || dup {
		return raw
	}
	delete(retries, "true")
	retries["on"] = v
	r, err1 := json.Marshal(retries)
	spec["retries"] = r
	out, err2 := json.Marshal(spec)
	if err1 != nil || err2 != nil {
		return raw
	}
	return out
}

// checkDuration adds an error at field unless lo <= d <= hi.
func checkDuration(errs *errorList, field string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		errs.add(field, "must be from %s to %s, got %s", formatDuration(lo), formatDuration(hi), formatDuration(d))
	}
}
