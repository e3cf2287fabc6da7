package resource

import (
	"encoding/json"

	"github.com/trellismesh/trellis/internal/names"
)

// KindRateLimit limits the requests the selected workloads' proxies let
// through (docs/policy.md, rate limits).
const KindRateLimit = "RateLimit"

// Per values of RateLimitSpec.
const (
	RateLimitPerCaller   = "caller"   // a bucket per caller identity
	RateLimitPerWorkload = "workload" // one bucket for every caller
)

// RateLimitSpec is a local token bucket on the inbound side of the
// selected workloads.
type RateLimitSpec struct {
	Selector          Selector `json:"selector"`
	RequestsPerSecond int      `json:"requestsPerSecond"`
	// Burst is the bucket's size; default RequestsPerSecond.
	Burst int `json:"burst,omitempty"`
	// Per is RateLimitPerCaller (default) or RateLimitPerWorkload.
	Per string `json:"per,omitempty"`
}

// RateLimitSpecOf decodes, defaults and checks the spec of a RateLimit.
func RateLimitSpecOf(o *Object) (RateLimitSpec, error) {
	var errs errorList
	spec := rateLimitSpec(&errs, o.Spec)
	if err := errs.err(o.Source, o.Ref()); err != nil {
		return RateLimitSpec{}, err
	}
	return spec, nil
}

func rateLimitSpec(errs *errorList, raw json.RawMessage) RateLimitSpec {
	var s RateLimitSpec
	decodeSpec(errs, raw, &s)
	if s.Per == "" {
		s.Per = RateLimitPerCaller
	}
	if s.Burst == 0 {
		s.Burst = s.RequestsPerSecond
	}
	if sv := s.Selector.Service; sv != "" && !names.IsDNSLabel(sv) {
		errs.add("spec.selector.service", "%s %s", quote(sv), names.DNSLabelRule)
	}
	checkLabels(errs, "spec.selector.matchLabels", s.Selector.MatchLabels)
	if (s.RequestsPerSecond < 1 || s.RequestsPerSecond > 1000000) && !errs.failedAt("spec.requestsPerSecond") {
		errs.add("spec.requestsPerSecond", "required, from 1 to 1000000, got %d", s.RequestsPerSecond)
	}
	if s.Burst < 1 || s.Burst > 10000000 {
		errs.add("spec.burst", "must be from 1 to 10000000 (default requestsPerSecond), got %d", s.Burst)
	}
	canonicalEnum(errs, "spec.per", &s.Per, RateLimitPerCaller, RateLimitPerWorkload)
	return s
}
