package graph

import (
	"cmp"
	"slices"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// defaultWindow is the window of Snapshot(0).
const defaultWindow = time.Minute

// Snapshot computes the service graph over the window ending now: 0 means
// one minute; the window is clamped to [1s, MaxWindow]. The result is the
// caller's.
func (g *Graph) Snapshot(window time.Duration) adminapi.Graph {
	if window == 0 {
		window = defaultWindow
	}
	window = max(min(window, g.maxWindow), time.Second)

	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	start := now.Add(-window)
	out := adminapi.Graph{Window: window.String(), GeneratedAt: now.UTC()}
	edges := make(map[edgeKey]*counters)
	proxies := make(map[adminapi.ServiceRef]int)
	for _, in := range g.instances {
		if !in.last.After(start) {
			continue
		}
		out.Proxies++
		proxies[in.node]++
		for k, es := range in.edges {
			d, ok := es.delta(start)
			if !ok || d.requests == 0 {
				continue
			}
			if edges[k] == nil {
				edges[k] = &counters{}
			}
			edges[k].add(d)
		}
	}

	inbound := make(map[adminapi.ServiceRef]*counters)
	for ref := range proxies {
		inbound[ref] = &counters{}
	}
	out.Edges = make([]adminapi.GraphEdge, 0, len(edges))
	for k, c := range edges {
		out.Edges = append(out.Edges, adminapi.GraphEdge{Source: k.src, Destination: k.dst, Traffic: g.traffic(c, window)})
		if inbound[k.src] == nil {
			inbound[k.src] = &counters{}
		}
		if inbound[k.dst] == nil {
			inbound[k.dst] = &counters{}
		}
		inbound[k.dst].add(*c)
	}
	out.Nodes = make([]adminapi.GraphNode, 0, len(inbound))
	for ref, c := range inbound {
		out.Nodes = append(out.Nodes, adminapi.GraphNode{ServiceRef: ref, Proxies: proxies[ref], Traffic: g.traffic(c, window)})
	}
	slices.SortFunc(out.Nodes, func(a, b adminapi.GraphNode) int { return compareRefs(a.ServiceRef, b.ServiceRef) })
	slices.SortFunc(out.Edges, func(a, b adminapi.GraphEdge) int {
		return cmp.Or(compareRefs(a.Source, b.Source), compareRefs(a.Destination, b.Destination))
	})
	return out
}

func compareRefs(a, b adminapi.ServiceRef) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Service, b.Service))
}

// traffic turns counts over window into the figures of adminapi.Traffic.
func (g *Graph) traffic(c *counters, window time.Duration) adminapi.Traffic {
	t := adminapi.Traffic{
		Requests:    c.requests,
		RequestRate: float64(c.requests) / window.Seconds(),
		Denied:      c.denied,
	}
	if c.requests == 0 {
		return t
	}
	req := float64(c.requests)
	// A denial is the policy working, not the service: it counts apart,
	// neither a success nor a failure. The proxy answers it 403, so no
	// request is both.
	t.SuccessRate = ptr(float64(c.requests-min(addSat(c.failures, c.denied), c.requests)) / req)
	t.DenialRate = ptr(float64(min(c.denied, c.requests)) / req)
	t.MTLSShare = ptr(float64(min(c.mtls, c.requests)) / req)
	if p50, ok := quantile(0.5, g.bounds, c.latency); ok {
		t.LatencyP50Ms = ptr(p50 * 1000)
	}
	if p99, ok := quantile(0.99, g.bounds, c.latency); ok {
		t.LatencyP99Ms = ptr(p99 * 1000)
	}
	return t
}

func ptr(f float64) *float64 { return &f }

// quantile estimates the q-quantile of the counts per bucket (bounds,
// then +Inf) as Prometheus' histogram_quantile does: linear inside the
// bucket, from 0 in the first, and the highest finite bound when it falls
// in the +Inf bucket. ok is false without counts.
func quantile(q float64, bounds []float64, counts []uint64) (v float64, ok bool) {
	if len(bounds) == 0 || len(counts) != len(bounds)+1 {
		return 0, false
	}
	var total float64
	for _, n := range counts {
		total += float64(n)
	}
	if total == 0 {
		return 0, false
	}
	rank := q * total
	var below float64
	for i, n := range counts[:len(bounds)] {
		cum := below + float64(n)
		if cum >= rank && n > 0 {
			lower := 0.0
			if i > 0 {
				lower = bounds[i-1]
			}
			return min(lower+(bounds[i]-lower)*(rank-below)/float64(n), bounds[i]), true
		}
		below = cum
	}
	return bounds[len(bounds)-1], true
}
