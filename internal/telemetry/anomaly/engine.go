package anomaly

import (
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// Engine holds the baselines and raises alerts. Safe for concurrent use.
type Engine struct {
	cfg    Config
	a      float64 // the baselines' weight of one interval
	notify func(Alert)

	mu        sync.Mutex
	start     time.Time // the first traffic seen, or the learning's start
	nextTick  time.Time
	edges     map[edgeKey]*edgeState
	callers   map[string]*callerState
	services  map[string]*serviceState
	idents    map[string]*identState
	instances map[string]*instTrack
	episodes  map[episodeKey]*episode
	alerts    []Alert
	pending   []Alert // raised since the last Drain
}

// New returns an engine with cfg's thresholds (defaults filled in) that
// calls notify, if not nil, with every new alert (under the engine's
// lock: notify must not call back into the engine).
func New(cfg Config, notify func(Alert)) *Engine {
	cfg = cfg.Defaults()
	return &Engine{
		cfg: cfg, a: alpha(cfg.Interval, cfg.HalfLife), notify: notify,
		edges: map[edgeKey]*edgeState{}, callers: map[string]*callerState{}, services: map[string]*serviceState{},
		idents: map[string]*identState{}, instances: map[string]*instTrack{}, episodes: map[episodeKey]*episode{},
	}
}

// Config returns the engine's thresholds.
func (e *Engine) Config() Config {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg
}

// SetConfig changes the thresholds (defaults filled in), keeping every
// baseline and episode.
func (e *Engine) SetConfig(cfg Config) {
	cfg = cfg.Defaults()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg, e.a = cfg, alpha(cfg.Interval, cfg.HalfLife)
}

// Drain returns the alerts raised since the previous Drain, for the
// caller to deliver outside the engine's lock.
func (e *Engine) Drain() []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.pending
	e.pending = nil
	return out
}

type edgeKey struct{ src, srcNS, dst, dstNS string }

func (k edgeKey) principal() string { return k.src + "." + k.srcNS }
func (k edgeKey) service() string   { return k.dst + "." + k.dstNS }

// edgeState is one edge's baselines and its current interval.
type edgeState struct {
	first time.Time
	paths map[string]time.Time // "METHOD TEMPLATE" -> first seen

	requests, failures, denied float64
	latency                    []float64
	bounds                     []float64
	// latWin accumulates latency counts until there are enough for a
	// p99 (latencySample requests).
	latWin []float64

	volume, errRatio, p99 baseline
	rise                  riseState
}

// callerState is one calling service's denials and reach.
type callerState struct {
	denied    float64
	deniedB   baseline
	targets   map[string]time.Time // services called, first seen
	newTarget []stamped
	newPaths  []stamped
	// held are the new-edge and new-path alerts of the current interval:
	// raised at its end, unless they are part of a fan-out, which
	// raises one alert for them all.
	held []Alert
	// heldTicks counts, per held alert, the interval ends it waited.
	heldTicks []int
}

type stamped struct {
	at   time.Time
	what string
}

// serviceState is one called service's instances.
type serviceState struct {
	instances   map[string]time.Time // last report
	lastRollout time.Time
	count       baseline
}

// identState is one SPIFFE ID's certificate addresses.
type identState struct {
	first time.Time
	addrs map[string]bool
}

// instTrack is one proxy instance's last cumulative counters.
type instTrack struct {
	since time.Time
	seen  time.Time
	last  map[string][]uint64
}

// learned reports whether the learning window is over.
func (e *Engine) learned(now time.Time) bool {
	return !e.start.IsZero() && now.Sub(e.start) >= e.cfg.LearningWindow
}

// Seed marks an edge, and optionally a path shape on it, as known since
// first (the collector's persisted shapes), and starts the learning
// window at the earliest such time.
func (e *Engine) Seed(src, srcNS, dst, dstNS, shape string, first time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.start.IsZero() || first.Before(e.start) {
		e.start = first
	}
	ed := e.edge(edgeKey{src, srcNS, dst, dstNS}, first)
	if shape != "" {
		if t, ok := ed.paths[shape]; !ok || first.Before(t) {
			ed.paths[shape] = first
		}
	}
	c := e.caller(src + "." + srcNS)
	if _, ok := c.targets[dst+"."+dstNS]; !ok {
		c.targets[dst+"."+dstNS] = first
	}
}

func (e *Engine) edge(k edgeKey, now time.Time) *edgeState {
	ed := e.edges[k]
	if ed == nil {
		ed = &edgeState{first: now, paths: map[string]time.Time{}}
		e.edges[k] = ed
	}
	return ed
}

func (e *Engine) caller(p string) *callerState {
	c := e.callers[p]
	if c == nil {
		c = &callerState{targets: map[string]time.Time{}}
		e.callers[p] = c
	}
	return c
}

// Record folds one proxy instance's cumulative report in: the growth
// since its previous report goes into the current interval, and new
// edges and paths are judged at once.
func (e *Engine) Record(instance string, st *pb.TrafficStats, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.start.IsZero() {
		e.start = now
	}
	if e.nextTick.IsZero() {
		e.nextTick = now.Add(e.cfg.Interval)
	}
	svc := st.GetService() + "." + st.GetNamespace()
	since := st.GetCountersSince().AsTime()
	tr := e.instances[instance]
	if tr == nil || !tr.since.Equal(since) {
		tr = &instTrack{since: since, last: map[string][]uint64{}}
		e.instances[instance] = tr
		e.instanceStarted(svc, instance, now)
	}
	tr.seen = now
	if s := e.services[svc]; s != nil {
		s.instances[instance] = now
	}
	learned := e.learned(now)
	// One report has one EdgeStats per caller; should a report repeat
	// one, its counters add up (as the graph's validation would refuse
	// it, this only keeps a bad report from looking like resets).
	sums := map[edgeKey][]uint64{}
	for _, es := range st.GetEdges() {
		k := edgeKey{es.GetSourceService(), es.GetSourceNamespace(), es.GetDestinationService(), es.GetDestinationNamespace()}
		cur := append([]uint64{es.GetRequests(), es.GetFailures(), es.GetDenied(), es.GetShapesOverflow()}, es.GetLatencyCounts()...)
		if prev, ok := sums[k]; ok && len(prev) == len(cur) {
			for i := range cur {
				cur[i] += prev[i]
			}
		}
		sums[k] = cur
	}
	for _, es := range st.GetEdges() {
		k := edgeKey{es.GetSourceService(), es.GetSourceNamespace(), es.GetDestinationService(), es.GetDestinationNamespace()}
		cur, ok := sums[k]
		if !ok {
			continue // a repeat, counted with the first
		}
		delete(sums, k)
		ek := k.principal() + ">" + k.service()
		d := growth(tr.last[ek], cur)
		tr.last[ek] = cur
		if d[0] == 0 && d[3] == 0 {
			continue
		}
		ed, known := e.edges[k]
		if !known {
			ed = e.edge(k, now)
			if learned {
				c := e.caller(k.principal())
				c.heldTicks = append(c.heldTicks, 0)
				c.held = append(c.held, Alert{Detector: DetectorNewEdge, Severity: SeverityMedium, Principal: k.principal(), Service: k.service(),
					Explanation: explain("%s called %s for the first time (%d requests), after the learning window of %s", k.principal(), k.service(), d[0], e.cfg.LearningWindow),
					Baseline:    0, Observed: float64(d[0]), Threshold: 0})
			}
		}
		ed.requests += float64(d[0])
		ed.failures += float64(d[1])
		ed.denied += float64(d[2])
		if lat := d[4:]; len(lat) > 0 {
			if len(ed.latency) != len(lat) {
				ed.latency = make([]float64, len(lat))
			}
			for i, n := range lat {
				ed.latency[i] += float64(n)
			}
			ed.bounds = st.GetLatencyBoundsSeconds()
		}
		c := e.caller(k.principal())
		c.denied += float64(d[2])
		if _, ok := c.targets[k.service()]; !ok {
			c.targets[k.service()] = now
			if learned {
				c.newTarget = append(c.newTarget, stamped{now, k.service()})
			}
		}
		if learned && d[3] > 0 {
			// The proxy's shape table for this caller overflowed: many
			// distinct paths.
			for range min(d[3], uint64(e.cfg.FanOutPaths)) {
				c.newPaths = append(c.newPaths, stamped{now, k.service() + " (overflow)"})
			}
		}
		e.recordShapes(tr, k, ed, c, es, now, learned && known)
	}
}

// recordShapes judges an edge's path shapes: a shape new on a known edge
// after the learning window, not explained by a rollout of either side,
// is an anomaly.
func (e *Engine) recordShapes(tr *instTrack, k edgeKey, ed *edgeState, c *callerState, es *pb.EdgeStats, now time.Time, judge bool) {
	for _, sh := range es.GetShapes() {
		key := sh.GetMethod() + " " + sh.GetPathTemplate()
		ik := k.principal() + ">" + k.service() + ">" + key
		d := growth(tr.last[ik], []uint64{sh.GetRequests(), sh.GetDenied()})
		tr.last[ik] = []uint64{sh.GetRequests(), sh.GetDenied()}
		if d[0] == 0 {
			continue
		}
		if _, ok := ed.paths[key]; ok {
			continue
		}
		ed.paths[key] = now
		if !judge {
			continue
		}
		c.newPaths = append(c.newPaths, stamped{now, k.service() + " " + key})
		// A rollout of either side explains a new path that works; not
		// one that is refused, nor an administrative one.
		if d[1] == 0 && !sensitivePath(sh.GetPathTemplate()) && (e.rolledOut(k.service(), now) || e.rolledOut(k.principal(), now)) {
			continue
		}
		sev := SeverityMedium
		why := ""
		if d[1] > 0 {
			sev, why = SeverityHigh, explain(", %d of them denied", d[1])
		}
		if sensitivePath(sh.GetPathTemplate()) {
			sev, why = SeverityHigh, why+", and the path looks administrative"
		}
		c.heldTicks = append(c.heldTicks, 0)
		c.held = append(c.held, Alert{Detector: DetectorNewPath, Severity: sev, Principal: k.principal(), Service: k.service(), Detail: key,
			Explanation: explain("%s called %s on %s for the first time (%d requests%s); the edge is known since %s and neither side rolled out in the last %s",
				k.principal(), key, k.service(), d[0], why, ed.first.UTC().Format(time.RFC3339), e.cfg.RolloutGrace),
			Observed: float64(d[0])})
	}
}

// sensitive words in paths that callers rarely need.
var sensitiveWords = []string{"admin", "debug", "internal", "actuator", "config", "secret", "env", ".git", "backup", "metrics", "pprof", "shutdown"}

func sensitivePath(p string) bool {
	p = strings.ToLower(p)
	return slices.ContainsFunc(sensitiveWords, func(w string) bool { return strings.Contains(p, w) })
}

// instanceStarted notes a new (or restarted) instance of svc: a rollout
// when the service had instances before.
func (e *Engine) instanceStarted(svc, instance string, now time.Time) {
	s := e.services[svc]
	if s == nil {
		e.services[svc] = &serviceState{instances: map[string]time.Time{instance: now}}
		return
	}
	s.instances[instance] = now
	s.lastRollout = now
}

// rolledOut reports whether svc's instances changed within RolloutGrace.
func (e *Engine) rolledOut(svc string, now time.Time) bool {
	s := e.services[svc]
	return s != nil && !s.lastRollout.IsZero() && now.Sub(s.lastRollout) <= e.cfg.RolloutGrace
}

// growth is cur - prev per counter; a counter that went down (a proxy's
// table started over) counts from zero.
func growth(prev, cur []uint64) []uint64 {
	d := make([]uint64, len(cur))
	for i, c := range cur {
		if i < len(prev) && c >= prev[i] {
			d[i] = c - prev[i]
		} else {
			d[i] = c
		}
	}
	return d
}

// CertIssued judges a certificate issued for identity to a peer address:
// a known identity's certificate going to an address it never had, after
// the learning window, is an anomaly.
func (e *Engine) CertIssued(identity, addr string, now time.Time) {
	host := addr
	if i := strings.LastIndex(addr, ":"); i >= 0 && !strings.HasSuffix(addr, "]") {
		host = addr[:i]
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.start.IsZero() {
		e.start = now
	}
	id := e.idents[identity]
	if id == nil {
		e.idents[identity] = &identState{first: now, addrs: map[string]bool{host: true}}
		return
	}
	if id.addrs[host] {
		return
	}
	sameNet := false
	for a := range id.addrs {
		if prefixOf(a) == prefixOf(host) {
			sameNet = true
			break
		}
	}
	id.addrs[host] = true
	if len(id.addrs) > maxAddrs {
		for a := range id.addrs {
			delete(id.addrs, a)
			break
		}
	}
	if e.learned(now) && !sameNet {
		known := make([]string, 0, len(id.addrs))
		for a := range id.addrs {
			if a != host {
				known = append(known, a)
			}
		}
		slices.Sort(known)
		e.fire(now, Alert{Detector: DetectorNewAddress, Severity: SeverityHigh, Principal: identity, Detail: host,
			Explanation: explain("a certificate for %s was issued to %s, outside the networks it was issued to before (%s)", identity, host, strings.Join(known, ", ")),
			Observed:    float64(len(known) + 1)})
	}
}

// prefixOf is an address's network for the new-address detector: the
// /24 of an IPv4 address, the /64 of an IPv6 one, else the name itself.
func prefixOf(host string) string {
	if ip := net.ParseIP(host); ip != nil {
		if v4 := ip.To4(); v4 != nil {
			return net.IP(v4).Mask(net.CIDRMask(24, 32)).String()
		}
		return ip.Mask(net.CIDRMask(64, 128)).String()
	}
	return host
}

// maxAddrs bounds the addresses remembered per identity.
const maxAddrs = 256

// Alerts returns the alerts that started at or after since, oldest first.
func (e *Engine) Alerts(since time.Time) []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []Alert{}
	for _, a := range e.alerts {
		if !a.Started.Before(since) {
			out = append(out, a)
		}
	}
	return out
}
