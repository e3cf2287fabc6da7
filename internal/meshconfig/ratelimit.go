package meshconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/trellismesh/trellis/internal/ratelimit"
	"github.com/trellismesh/trellis/internal/resource"
)

// RateLimit is one RateLimit resource compiled: its bucket(s).
type RateLimit struct {
	Ref     string // namespace/name
	PerCall bool   // a bucket per caller identity (else one for all)
	Limiter *ratelimit.Limiter
	RPS     int
}

// limiters reuses the limiter of an unchanged RateLimit, so that its
// buckets survive new snapshots.
var (
	limitersMu sync.Mutex
	limiters   = map[string]*ratelimit.Limiter{}
)

func compileRateLimits(raws [][]byte) ([]RateLimit, error) {
	var out []RateLimit
	for i, raw := range raws {
		var o resource.Object
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("rate_limits[%d]: %w", i, err)
		}
		if err := resource.Validate(&o); err != nil {
			return nil, fmt.Errorf("rate_limits[%d]: %w", i, err)
		}
		spec, err := resource.RateLimitSpecOf(&o)
		if err != nil {
			return nil, fmt.Errorf("rate_limits[%d]: %w", i, err)
		}
		key := string(bytes.TrimSpace(raw))
		limitersMu.Lock()
		l := limiters[key]
		if l == nil {
			if len(limiters) >= 256 {
				clear(limiters)
			}
			l = ratelimit.New(float64(spec.RequestsPerSecond), spec.Burst)
			limiters[key] = l
		}
		limitersMu.Unlock()
		out = append(out, RateLimit{Ref: o.Metadata.Namespace + "/" + o.Metadata.Name, PerCall: spec.Per == resource.RateLimitPerCaller, Limiter: l, RPS: spec.RequestsPerSecond})
	}
	return out, nil
}
