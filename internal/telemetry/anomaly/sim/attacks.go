package sim

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/trellismesh/trellis/internal/telemetry/anomaly"
)

// plan places AttacksPerKind attacks of each class at random times
// between from and to.
func (m *mesh) plan(o Options, r *rand.Rand, from, to time.Time) []*attack {
	var out []*attack
	span := to.Sub(from)
	for _, k := range Kinds {
		for range o.AttacksPerKind {
			start := from.Add(time.Duration(r.Int64N(int64(span)))).Truncate(o.Interval)
			src := m.services[r.IntN(len(m.services))]
			a := &attack{kind: k, src: src, start: start}
			switch k {
			case AttackScan:
				a.end = start.Add(30 * time.Minute)
			case AttackDenyBurst:
				a.dst = src.calls[r.IntN(len(src.calls))].dst
				a.end = start.Add(10 * time.Minute)
			case AttackLateral:
				for a.dst == nil || a.dst == src || src.callsTo(a.dst) != nil {
					a.dst = m.services[r.IntN(len(m.services))]
				}
				a.end = start.Add(20 * time.Minute)
			case AttackAdminPath:
				a.dst = src.calls[r.IntN(len(src.calls))].dst
				a.end = start.Add(15 * time.Minute)
				a.path = []string{"GET /admin/users", "POST /admin/export", "GET /actuator/env", "GET /debug/pprof/heap", "GET /internal/keys", "DELETE /admin/cache"}[r.IntN(6)]
			case AttackExfil:
				a.dst = src.calls[r.IntN(len(src.calls))].dst
				a.end = start.Add(8 * time.Hour)
			case AttackStolenCert:
				a.end = start.Add(o.Interval)
			}
			out = append(out, a)
		}
	}
	return out
}

// attackStep applies one interval of a running attack.
func (m *mesh) attackStep(a *attack, r *rand.Rand, eng *anomaly.Engine, now time.Time, interval time.Duration) {
	if now.Before(a.start) || !now.Before(a.end) {
		if a.kind == AttackExfil && !now.Before(a.end) {
			if e := a.src.callsTo(a.dst); e != nil {
				e.boost = nil
			}
		}
		return
	}
	switch a.kind {
	case AttackScan:
		// Two services it never calls per interval, a few paths each,
		// mostly refused.
		for range 2 {
			d := m.services[r.IntN(len(m.services))]
			if d == a.src || a.src.callsTo(d) != nil {
				continue
			}
			e := m.attackEdge(a.src, d, 0.3)
			for j := range 3 {
				m.add(e, r, 2, 2, fmt.Sprintf("GET /%s", []string{"admin", "api/v1/users", "debug/vars", ".env", "internal/config"}[(j+r.IntN(5))%5]))
			}
		}
	case AttackDenyBurst:
		e := a.src.callsTo(a.dst)
		n := 40 + r.IntN(40)
		m.add(e, r, n, n, e.paths[0])
	case AttackLateral:
		e := m.attackEdge(a.src, a.dst, 0.01)
		m.add(e, r, 2+r.IntN(4), 0, "")
	case AttackAdminPath:
		e := a.src.callsTo(a.dst)
		n := 1 + r.IntN(3)
		m.add(e, r, n, n, a.path)
	case AttackExfil:
		e := a.src.callsTo(a.dst)
		start, end := a.start, a.start.Add(6*time.Hour)
		e.boost = func(t time.Time) float64 {
			f := t.Sub(start).Seconds() / end.Sub(start).Seconds()
			return 1 + 3*min(1, max(0, f))
		}
	case AttackStolenCert:
		eng.CertIssued(identity(a.src), fmt.Sprintf("203.0.113.%d:%d", 1+r.IntN(250), 40000+r.IntN(20000)), now)
	}
}
