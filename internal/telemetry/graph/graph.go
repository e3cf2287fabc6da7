package graph

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/telemetry"
)

// Defaults of Options.
const (
	defaultMaxWindow      = 10 * time.Minute
	defaultMaxInstances   = 10000
	defaultMaxPerReporter = 64
)

const (
	// maxInstanceEdges bounds the edges kept per instance: above it, the
	// edges its latest report left out are forgotten.
	maxInstanceEdges = 2 * maxEdges
	// maxReporterEdges bounds the edges of one SPIFFE ID's reports across
	// its instances, so one compromised workload costs the collector at
	// most about (maxReporterEdges + maxInstanceEdges) * maxSamples
	// samples (a few hundred MB, against unbounded before).
	maxReporterEdges = maxEdges
	// defaultMaxTotals is the number of edges with mesh totals above
	// which totals no live instance reports are dropped.
	defaultMaxTotals = 100000
	// sweepEvery is how often Record looks for expired instances.
	sweepEvery = time.Second
)

// ErrTooManyInstances is wrapped by Record's error for a report from a
// new instance while MaxInstances are known.
var ErrTooManyInstances = errors.New("too many proxy instances")

// Options configure a Graph. Zero values mean the documented defaults.
type Options struct {
	// Now is the clock; default time.Now.
	Now func() time.Time
	// MaxWindow is the longest window a snapshot may cover; older samples
	// are dropped. Default 10m; at least 1s.
	MaxWindow time.Duration
	// Expire is how long an instance may stay silent before it is
	// forgotten (its counts stay in the mesh totals). Default MaxWindow +
	// 1m; at least MaxWindow.
	Expire time.Duration
	// MaxInstances bounds the instances known at once: reports from new
	// ones beyond it are refused. Default 10000.
	MaxInstances int
	// MaxInstancesPerReporter bounds the instances one SPIFFE ID may
	// have: a new one beyond it replaces that reporter's least recently
	// heard instance (a crash-looping proxy, or a hostile one inventing
	// instances, cannot crowd out the rest). Default 64.
	MaxInstancesPerReporter int
	// LatencyBounds are the bucket bounds latency counts must come with to
	// count (default telemetry.LatencyBounds, what proxies use).
	LatencyBounds []float64
}

// Graph holds recent traffic counters of every proxy instance and derives
// the service graph and the mesh-wide metrics from them. It is a
// prometheus.Collector. Safe for concurrent use.
type Graph struct {
	now          func() time.Time
	maxWindow    time.Duration
	expire       time.Duration
	maxInstances int
	maxPerRep    int
	maxTotals    int

	mu        sync.Mutex
	bounds    []float64 // latency bounds reports must use for latency to count
	instances map[instanceKey]*instanceState
	totals    map[edgeKey]*total
	lastSweep time.Time
	nextDrop  int // len(totals) at which to drop idle totals
}

// instanceKey is a proxy instance: the SPIFFE ID it reports under and its
// hello_instance.
type instanceKey struct {
	reporter, instance string
}

type instanceState struct {
	node  adminapi.ServiceRef // from the latest report
	since time.Time           // counters_since of the latest report
	last  time.Time           // when the latest report arrived
	gen   uint64              // reports recorded
	edges map[edgeKey]*edgeSamples
}

// total is one edge's mesh-wide counts.
type total struct {
	c       counters
	updated time.Time
}

// New returns an empty Graph.
func New(opts Options) *Graph {
	g := &Graph{
		now:          opts.Now,
		maxWindow:    opts.MaxWindow,
		expire:       opts.Expire,
		maxInstances: opts.MaxInstances,
		maxTotals:    defaultMaxTotals,
		nextDrop:     defaultMaxTotals,
		instances:    make(map[instanceKey]*instanceState),
		totals:       make(map[edgeKey]*total),
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.maxWindow == 0 {
		g.maxWindow = defaultMaxWindow
	}
	g.maxWindow = max(g.maxWindow, time.Second)
	if g.expire == 0 {
		g.expire = g.maxWindow + time.Minute
	}
	g.expire = max(g.expire, g.maxWindow)
	if g.maxInstances <= 0 {
		g.maxInstances = defaultMaxInstances
	}
	g.maxPerRep = opts.MaxInstancesPerReporter
	if g.maxPerRep <= 0 {
		g.maxPerRep = defaultMaxPerReporter
	}
	g.bounds = slices.Clone(opts.LatencyBounds)
	if len(g.bounds) == 0 {
		g.bounds = slices.Clone(telemetry.LatencyBounds[:])
	}
	return g
}

// Record stores one report of instance (a proxy's hello_instance) sent
// under reporter (its authenticated SPIFFE ID), taken now. An invalid
// report (ErrInvalidStats) or one from an instance beyond MaxInstances
// (ErrTooManyInstances) is refused whole. Record keeps nothing of st.
func (g *Graph) Record(reporter, instance string, st *pb.TrafficStats) error {
	if err := validate(st); err != nil {
		return fmt.Errorf("graph: record %s of %s: %w", instance, reporter, err)
	}
	var since time.Time
	if cs := st.GetCountersSince(); cs != nil {
		since = cs.AsTime()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if now.Sub(g.lastSweep) >= sweepEvery {
		g.sweep(now)
	}
	key := instanceKey{reporter: reporter, instance: instance}
	in := g.instances[key]
	if in == nil {
		g.evictOldestOf(reporter)
		if len(g.instances) >= g.maxInstances {
			g.sweep(now)
		}
		if len(g.instances) >= g.maxInstances {
			return fmt.Errorf("graph: record %s of %s: %w: %d known; an instance is forgotten %s after its last report", instance, reporter, ErrTooManyInstances, len(g.instances), g.expire)
		}
		in = &instanceState{edges: make(map[edgeKey]*edgeSamples)}
		g.instances[key] = in
	}
	if n := g.reporterEdges(reporter, in, st); n > maxReporterEdges {
		if in.gen == 0 {
			delete(g.instances, key)
		}
		return fmt.Errorf("graph: record %s of %s: %w: its instances would hold %d edges; at most %d per identity", instance, reporter, ErrInvalidStats, n, maxReporterEdges)
	}
	if now.Before(in.last) {
		now = in.last // keep samples in order if the clock steps back
	}
	g.update(in, st, since, now)
	return nil
}

// reporterEdges is how many edges reporter's other instances hold plus
// the edges of st (in's edges missing from st are pruned past
// maxInstanceEdges). The caller holds g.mu.
func (g *Graph) reporterEdges(reporter string, in *instanceState, st *pb.TrafficStats) int {
	n := len(st.GetEdges())
	for k, other := range g.instances {
		if k.reporter == reporter && other != in {
			n += len(other.edges)
		}
	}
	return n
}

// evictOldestOf makes room for a new instance of reporter: at
// maxPerRep instances, its least recently heard one is forgotten (its
// counts stay in the mesh totals). The caller holds g.mu.
func (g *Graph) evictOldestOf(reporter string) {
	n := 0
	var oldest instanceKey
	var oldestAt time.Time
	for k, in := range g.instances {
		if k.reporter != reporter {
			continue
		}
		n++
		if oldestAt.IsZero() || in.last.Before(oldestAt) {
			oldest, oldestAt = k, in.last
		}
	}
	if n >= g.maxPerRep {
		delete(g.instances, oldest)
	}
}

// update stores a valid report of in taken now.
func (g *Graph) update(in *instanceState, st *pb.TrafficStats, since, now time.Time) {
	bounds := st.GetLatencyBoundsSeconds()
	withLatency := len(bounds) > 0 && slices.Equal(bounds, g.bounds)
	// Proxies send every edge in every report: an edge new to an instance
	// that reported before with the same counters had none then.
	zeroAt := time.Time{}
	if in.gen > 0 && in.since.Equal(since) {
		zeroAt = in.last
	}
	in.gen++
	for _, e := range st.GetEdges() {
		k := keyOf(e)
		cur := sample{at: now, since: since, c: countersOf(e, withLatency)}
		es := in.edges[k]
		var prev sample
		if es == nil {
			es = &edgeSamples{}
			in.edges[k] = es
			if !zeroAt.IsZero() {
				es.samples = append(es.samples, sample{at: zeroAt, since: since})
			}
		} else {
			prev = *es.latest()
		}
		g.addTotal(k, sampleGrowth(prev, cur), now)
		es.samples = append(es.samples, cur)
		es.gen = in.gen
	}
	cutoff := now.Add(-g.maxWindow)
	for k, es := range in.edges {
		if len(in.edges) > maxInstanceEdges && es.gen != in.gen {
			delete(in.edges, k)
			continue
		}
		es.prune(cutoff)
	}
	in.node = adminapi.ServiceRef{Service: st.GetService(), Namespace: st.GetNamespace()}
	in.since = since
	in.last = now
}

// addTotal adds d to the mesh totals of edge k.
func (g *Graph) addTotal(k edgeKey, d counters, now time.Time) {
	t := g.totals[k]
	if t == nil {
		if len(g.totals) >= g.nextDrop {
			g.dropTotals()
			// Totals of live edges stay: look again only after some
			// more, not on every new edge.
			g.nextDrop = max(g.maxTotals, len(g.totals)+g.maxTotals/10)
		}
		t = &total{}
		g.totals[k] = t
	}
	t.c.add(d)
	t.updated = now
}

// dropTotals drops the least recently updated tenth of the totals that no
// live instance reports, keeping memory bounded when edges churn (or a
// proxy invents names).
func (g *Graph) dropTotals() {
	live := make(map[edgeKey]struct{})
	for _, in := range g.instances {
		for k := range in.edges {
			live[k] = struct{}{}
		}
	}
	var idle []edgeKey
	for k := range g.totals {
		if _, ok := live[k]; !ok {
			idle = append(idle, k)
		}
	}
	slices.SortFunc(idle, func(a, b edgeKey) int { return g.totals[a].updated.Compare(g.totals[b].updated) })
	for _, k := range idle[:min(len(idle), max(1, g.maxTotals/10))] {
		delete(g.totals, k)
	}
}

// sweep forgets instances silent for Expire. Their counts are in the
// totals already.
func (g *Graph) sweep(now time.Time) {
	g.lastSweep = now
	for k, in := range g.instances {
		if now.Sub(in.last) >= g.expire {
			delete(g.instances, k)
		}
	}
}
