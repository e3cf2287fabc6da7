package metrics

import (
	"cmp"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// Edge stats are the inbound side's cumulative HTTP counters per caller,
// which the telemetry emitter sends to the collector (EventBatch.stats) for
// the service graph. They hang off the same per-caller cache entry as the
// trellis_requests_total children (Metrics.sources), so recording a request
// costs two or three atomic adds and no allocation; TrafficStats sums the
// entries per caller service when a report is due.

// Source is what the inbound side records per caller (one cache
// entry of Metrics.sources, held by the caller's peer).
type Source struct {
	codes  *codeCounters // trellis_requests_total children
	edge   edgeCounters
	shapes shapeTable
}

// edgeCounters are one caller's cumulative counters. Requests are not
// counted separately: they are the sum of the latency buckets. Failures and
// denials are added after the bucket and read before it, so a report never
// shows more of them than requests.
type edgeCounters struct {
	failures atomic.Uint64
	denied   atomic.Uint64
	latency  [len(durationBounds) + 1]atomic.Uint64 // the last is +Inf
}

// latencyBounds are durationBounds as durations, for a comparison without
// float conversion per request.
var latencyBounds = func() (b [len(durationBounds)]time.Duration) {
	for i, s := range durationBounds {
		b[i] = time.Duration(math.Round(s * float64(time.Second)))
	}
	return b
}()

// record counts one finished request. A linear scan finds the bucket: most
// requests take well under 10ms, a handful of comparisons.
func (e *edgeCounters) record(code int, denied bool, elapsed time.Duration) {
	i := 0
	for i < len(latencyBounds) && elapsed > latencyBounds[i] {
		i++
	}
	e.latency[i].Add(1)
	if code >= 500 {
		e.failures.Add(1)
	}
	if denied {
		e.denied.Add(1)
	}
}

// edgeKey is one edge of the service graph: caller service to this
// proxy's service.
type edgeKey struct{ srcService, srcNamespace, service, namespace string }

// TrafficStats sums the inbound edge counters per (source service, source
// namespace, destination service, destination namespace) for the telemetry
// stream. Callers whose identity serves no single known service, and
// plaintext callers, count as source "unknown", as in trellis_requests_total;
// mTLS and plaintext callers of one edge add up, mtls_requests counting the
// former. service and namespace name the reporting proxy; since is when
// its counters started. Edges without requests are left out.
//
// The counters are cumulative, but the per-caller cache starts over past
// maxCowEntries callers: the sums then fall, and counters_since moves to
// that moment. The collector treats a decrease, or a counters_since inside
// its window, as a counter reset.
//
// It is safe to call concurrently with requests; each call allocates a new
// message the caller owns.
func (m *Metrics) TrafficStats(service, namespace string, since time.Time) *pb.TrafficStats {
	if m == nil {
		return nil
	}
	// startedOver first: seeing a new time implies seeing the new map.
	if at := m.sources.StartedOver(); at.After(since) {
		since = at
	}
	out := &pb.TrafficStats{
		Service:              service,
		Namespace:            namespace,
		CountersSince:        timestamppb.New(since),
		LatencyBoundsSeconds: slices.Clone(durationBounds[:]),
	}
	cur := m.sources.Load()
	if cur == nil {
		return out
	}
	edges := map[edgeKey]*pb.EdgeStats{}
	for k, s := range cur {
		failures, denied := s.edge.failures.Load(), s.edge.denied.Load()
		var counts [len(durationBounds) + 1]uint64
		var requests uint64
		for i := range s.edge.latency {
			counts[i] = s.edge.latency[i].Load()
			requests += counts[i]
		}
		if requests == 0 {
			continue
		}
		ek := edgeKey{cmp.Or(k.srcService, "unknown"), cmp.Or(k.namespace, "unknown"), k.service, k.destNamespace}
		e := edges[ek]
		if e == nil {
			e = &pb.EdgeStats{
				SourceService: ek.srcService, SourceNamespace: ek.srcNamespace,
				DestinationService: ek.service, DestinationNamespace: ek.namespace,
				LatencyCounts: make([]uint64, len(counts)),
			}
			edges[ek] = e
		}
		e.Requests += requests
		e.Failures += failures
		e.Denied += denied
		if k.mtls {
			e.MtlsRequests += requests
		}
		for i, n := range counts {
			e.LatencyCounts[i] += n
		}
		s.shapes.addTo(e)
	}
	for _, e := range edges {
		sortShapes(e)
		out.Edges = append(out.Edges, e)
	}
	slices.SortFunc(out.Edges, func(a, b *pb.EdgeStats) int {
		return cmp.Or(
			cmp.Compare(a.SourceNamespace, b.SourceNamespace), cmp.Compare(a.SourceService, b.SourceService),
			cmp.Compare(a.DestinationNamespace, b.DestinationNamespace), cmp.Compare(a.DestinationService, b.DestinationService),
		)
	})
	return out
}
