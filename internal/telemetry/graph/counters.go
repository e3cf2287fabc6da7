package graph

import (
	"fmt"
	"math"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
)

// maxSamples bounds the samples kept per (instance, edge).
const maxSamples = 128

// edgeKey names an edge: caller service -> called service.
type edgeKey struct {
	src, dst adminapi.ServiceRef
}

func keyOf(e *pb.EdgeStats) edgeKey {
	k := edgeKey{
		src: adminapi.ServiceRef{Service: e.GetSourceService(), Namespace: e.GetSourceNamespace()},
		dst: adminapi.ServiceRef{Service: e.GetDestinationService(), Namespace: e.GetDestinationNamespace()},
	}
	// Proxies label callers they cannot name "unknown" in both fields
	// (see trellis_requests_total); an empty namespace means the same.
	if k.src.Service == unknownSource && k.src.Namespace == "" {
		k.src.Namespace = unknownSource
	}
	return k
}

func (k edgeKey) String() string {
	return fmt.Sprintf("%s/%s -> %s/%s", k.src.Namespace, k.src.Service, k.dst.Namespace, k.dst.Service)
}

// counters are one edge's counts: cumulative in a sample, growth in a
// delta, running totals in the mesh metrics.
type counters struct {
	requests, failures, mtls, denied uint64
	// latency counts requests per bucket of the graph's bounds, +Inf
	// last; nil when the report carried none or had other bounds.
	latency []uint64
}

func countersOf(e *pb.EdgeStats, withLatency bool) counters {
	c := counters{requests: e.GetRequests(), failures: e.GetFailures(), mtls: e.GetMtlsRequests(), denied: e.GetDenied()}
	if withLatency && len(e.GetLatencyCounts()) > 0 {
		c.latency = append([]uint64(nil), e.GetLatencyCounts()...)
	}
	return c
}

// add adds d, saturating rather than wrapping: counts come from proxies.
func (c *counters) add(d counters) {
	c.requests = addSat(c.requests, d.requests)
	c.failures = addSat(c.failures, d.failures)
	c.mtls = addSat(c.mtls, d.mtls)
	c.denied = addSat(c.denied, d.denied)
	if d.latency == nil {
		return
	}
	if c.latency == nil {
		c.latency = make([]uint64, len(d.latency))
	}
	if len(c.latency) != len(d.latency) {
		return
	}
	for i, n := range d.latency {
		c.latency[i] = addSat(c.latency[i], n)
	}
}

func (c counters) clone() counters {
	if c.latency != nil {
		c.latency = append([]uint64(nil), c.latency...)
	}
	return c
}

func addSat(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

// sampleGrowth is growth between two samples of one edge: a changed
// counters_since means the proxy's counters started again, so all of
// cur is growth, even if it already exceeds prev.
func sampleGrowth(prev, cur sample) counters {
	if !prev.since.IsZero() && !cur.since.Equal(prev.since) {
		return cur.c.clone()
	}
	return growth(prev.c, cur.c)
}

// growth is how much the counters grew from prev to cur. A counter lower
// than before is a reset (the proxy's counters started again): then all
// of cur is growth. A sample without latency counts as zeros before one
// with; after one, it leaves latency out rather than calling it a reset.
func growth(prev, cur counters) counters {
	if isReset(prev, cur) {
		return cur.clone()
	}
	d := counters{
		requests: cur.requests - prev.requests,
		failures: cur.failures - prev.failures,
		mtls:     cur.mtls - prev.mtls,
		denied:   cur.denied - prev.denied,
	}
	if cur.latency != nil {
		d.latency = make([]uint64, len(cur.latency))
		for i, n := range cur.latency {
			if len(prev.latency) == len(cur.latency) {
				n -= prev.latency[i]
			}
			d.latency[i] = n
		}
	}
	return d
}

func isReset(prev, cur counters) bool {
	if cur.requests < prev.requests || cur.failures < prev.failures || cur.mtls < prev.mtls || cur.denied < prev.denied {
		return true
	}
	if len(prev.latency) == len(cur.latency) {
		for i, n := range cur.latency {
			if n < prev.latency[i] {
				return true
			}
		}
	}
	return false
}

// sample is one report's counters for one edge.
type sample struct {
	at    time.Time // when the collector received it
	since time.Time // the report's counters_since (zero when unset)
	c     counters
}

// edgeSamples are one instance's samples of one edge, oldest first.
type edgeSamples struct {
	samples []sample
	// gen is the instance's report count when the edge was last in one.
	gen uint64
}

func (e *edgeSamples) latest() *sample { return &e.samples[len(e.samples)-1] }

// prune drops samples older than the newest one taken at or before
// cutoff (the baseline of the longest window). Above maxSamples it thins
// the rest to about half as many, evenly spread in time between the
// oldest and the newest, which it keeps.
func (e *edgeSamples) prune(cutoff time.Time) {
	s := e.samples
	i := 0
	for i+1 < len(s) && !s[i+1].at.After(cutoff) {
		i++
	}
	if i > 0 {
		s = append(s[:0], s[i:]...)
		clear(e.samples[len(s):])
	}
	if len(s) > maxSamples {
		last := len(s) - 1
		gap := max(s[last].at.Sub(s[0].at)/(maxSamples/2), time.Nanosecond)
		n := 1
		for j := 1; j < last; j++ {
			if s[j].at.Sub(s[n-1].at) >= gap {
				s[n] = s[j]
				n++
			}
		}
		s[n] = s[last]
		n++
		clear(s[n:])
		s = s[:n]
	}
	e.samples = s
}

// delta is the growth of the edge's counters over the window starting at
// start (see the package doc); ok is false when its newest sample is
// older than the window.
func (e *edgeSamples) delta(start time.Time) (d counters, ok bool) {
	s := e.samples
	if len(s) == 0 || !s[len(s)-1].at.After(start) {
		return counters{}, false
	}
	// base is the newest sample at or before start, else the oldest.
	base := 0
	for base+1 < len(s) && !s[base+1].at.After(start) {
		base++
	}
	if s[base].at.After(start) && s[base].since.After(start) {
		d = s[base].c.clone()
	}
	for i := base + 1; i < len(s); i++ {
		d.add(sampleGrowth(s[i-1], s[i]))
	}
	// Growth across a reset need not keep these below requests.
	d.failures = min(d.failures, d.requests)
	d.mtls = min(d.mtls, d.requests)
	d.denied = min(d.denied, d.requests)
	return d, true
}
