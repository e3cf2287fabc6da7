package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry/anomaly"
)

type mesh struct {
	services []*service
	nextID   int
	// attack edges by caller and callee: one edge each, as a proxy
	// reports one EdgeStats per caller service
	extra map[[2]*service]*edge
}

// attackEdge is the edge an attack uses from src to dst.
func (m *mesh) attackEdge(src, dst *service, errRate float64) *edge {
	if e := src.callsTo(dst); e != nil {
		return e
	}
	if m.extra == nil {
		m.extra = map[[2]*service]*edge{}
	}
	e := m.extra[[2]*service{src, dst}]
	if e == nil {
		e = &edge{src: src, dst: dst, errRate: errRate, paths: []string{dst.paths[0]}}
		m.extra[[2]*service{src, dst}] = e
	}
	return e
}

func newMesh(o Options, r *rand.Rand) *mesh {
	m := &mesh{}
	for i := range o.Services {
		s := &service{name: fmt.Sprintf("svc%02d", i), ns: fmt.Sprintf("ns%d", i%o.Namespaces), target: 1 + r.IntN(4)}
		for j := range 2 + r.IntN(2) {
			s.hosts = append(s.hosts, fmt.Sprintf("10.%d.%d.%d", i%o.Namespaces, i, j))
		}
		for k := range 3 + r.IntN(6) {
			s.paths = append(s.paths, []string{"GET", "GET", "POST", "PUT", "DELETE"}[r.IntN(5)]+fmt.Sprintf(" /r%d/{id}", k))
		}
		s.paths = append(s.paths, "GET /health")
		for range s.target {
			s.instances = append(s.instances, m.newInstance(s, r))
		}
		m.services = append(m.services, s)
	}
	for _, s := range m.services {
		for range 1 + r.IntN(4) {
			var d *service
			for d == nil || d == s || s.callsTo(d) != nil {
				d = m.services[r.IntN(len(m.services))]
				if d.ns != s.ns && r.Float64() < 0.8 {
					d = nil
				}
			}
			e := &edge{src: s, dst: d, rate: math.Exp(r.NormFloat64()*1.0 - 0.5), errRate: 0.001 + 0.004*r.Float64()}
			for _, p := range d.paths {
				if r.Float64() < 0.5 || len(e.paths) == 0 {
					e.paths = append(e.paths, p)
				}
			}
			s.calls = append(s.calls, e)
		}
	}
	return m
}

func (s *service) callsTo(d *service) *edge {
	for _, e := range s.calls {
		if e.dst == d {
			return e
		}
	}
	return nil
}

func (m *mesh) newInstance(s *service, r *rand.Rand) *instance {
	m.nextID++
	return &instance{id: fmt.Sprintf("%s-%d", s.name, m.nextID), host: s.hosts[r.IntN(len(s.hosts))], edges: map[*edge]*edgeCounters{}}
}

func identity(s *service) string { return "spiffe://trellis.local/ns/" + s.ns + "/sa/" + s.name }

// events are the normal changes: rollouts (instances replaced, sometimes
// with a new path their callers start using), scale-ups and -downs, now
// and then a new host.
func (m *mesh) events(o Options, r *rand.Rand, eng *anomaly.Engine, now time.Time) {
	perDay := o.Interval.Hours() / 24
	for _, s := range m.services {
		if r.Float64() < 0.15*perDay {
			// Rollout.
			for i := range s.instances {
				in := m.newInstance(s, r)
				in.since = now
				s.instances[i] = in
				eng.CertIssued(identity(s), in.host+fmt.Sprintf(":%d", 40000+r.IntN(20000)), now)
			}
			if r.Float64() < 0.5 {
				p := fmt.Sprintf("GET /v%d/feature%d/{id}", 2+r.IntN(3), r.IntN(1000))
				s.paths = append(s.paths, p)
				for _, c := range m.services {
					if e := c.callsTo(s); e != nil && r.Float64() < 0.7 {
						e.paths = append(e.paths, p)
					}
				}
			}
		}
		if r.Float64() < 0.3*perDay {
			// Scale by one.
			if len(s.instances) > 1 && r.Float64() < 0.5 {
				s.instances = s.instances[:len(s.instances)-1]
			} else if len(s.instances) < 6 {
				in := m.newInstance(s, r)
				in.since = now
				s.instances = append(s.instances, in)
				eng.CertIssued(identity(s), in.host+fmt.Sprintf(":%d", 40000+r.IntN(20000)), now)
			}
		}
		if r.Float64() < 0.01*perDay {
			s.hosts = append(s.hosts, fmt.Sprintf("10.200.%d.%d", r.IntN(250), r.IntN(250)))
		}
	}
}

// diurnal is the load's daily shape: 0.3 at night to 1 in the afternoon.
func diurnal(t time.Time) float64 {
	h := float64(t.Hour()) + float64(t.Minute())/60
	return 0.65 + 0.35*math.Sin(2*math.Pi*(h-9)/24)
}

// traffic adds one interval of every edge's requests to the callee's
// instances' counters.
func (m *mesh) traffic(o Options, r *rand.Rand, now time.Time) {
	for _, s := range m.services {
		for _, e := range s.calls {
			lambda := e.rate * diurnal(now) * o.Interval.Seconds()
			if e.boost != nil {
				lambda *= e.boost(now)
			}
			m.add(e, r, poisson(r, lambda), 0, "")
		}
	}
}

// add counts n requests on e (denied of them refused), spread over the
// callee's instances and the edge's paths; path forces one shape.
func (m *mesh) add(e *edge, r *rand.Rand, n, denied int, path string) {
	if n == 0 {
		return
	}
	ins := e.dst.instances
	for i := 0; i < n; {
		in := ins[r.IntN(len(ins))]
		k := min(n-i, 1+n/len(ins))
		c := in.edges[e]
		if c == nil {
			c = &edgeCounters{latency: make([]uint64, len(bounds)+1), shapes: map[string][2]uint64{}}
			in.edges[e] = c
		}
		c.requests += uint64(k)
		d := 0
		if denied > 0 {
			d = min(k, denied)
			denied -= d
			c.denied += uint64(d)
		}
		f := binomial(r, k-d, e.errRate)
		c.failures += uint64(f)
		for range k {
			b := 2 + r.IntN(3)
			if r.Float64() < 0.01 {
				b = 5 + r.IntN(3)
			}
			c.latency[b]++
		}
		p := path
		if p == "" {
			p = e.paths[r.IntN(len(e.paths))]
		}
		v := c.shapes[p]
		v[0] += uint64(k)
		v[1] += uint64(d)
		c.shapes[p] = v
		i += k
	}
}

// report sends every instance's cumulative counters to the engine.
func (m *mesh) report(eng *anomaly.Engine, now time.Time) {
	for _, s := range m.services {
		for _, in := range s.instances {
			st := &pb.TrafficStats{Service: s.name, Namespace: s.ns, CountersSince: pts(in.since), LatencyBoundsSeconds: bounds}
			for e, c := range in.edges {
				es := &pb.EdgeStats{SourceService: e.src.name, SourceNamespace: e.src.ns, DestinationService: s.name, DestinationNamespace: s.ns,
					Requests: c.requests, Failures: c.failures, Denied: c.denied, LatencyCounts: c.latency}
				for p, v := range c.shapes {
					var method, tmpl string
					fmt.Sscanf(p, "%s %s", &method, &tmpl)
					es.Shapes = append(es.Shapes, &pb.PathShape{Method: method, PathTemplate: tmpl, Requests: v[0], Denied: v[1]})
				}
				st.Edges = append(st.Edges, es)
			}
			eng.Record(in.id, st, now)
		}
	}
}

func poisson(r *rand.Rand, lambda float64) int {
	if lambda > 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*r.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

func binomial(r *rand.Rand, n int, p float64) int {
	if n > 50 {
		return poisson(r, float64(n)*p)
	}
	k := 0
	for range n {
		if r.Float64() < p {
			k++
		}
	}
	return k
}
