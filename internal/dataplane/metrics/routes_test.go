package metrics

import "testing"

// A Route's counters are found without allocating once created, and
// count under their labels.
func TestRouteCounters(t *testing.T) {
	m := New()
	m.Route("catalog", "shop", "shop/canary", 1).Inc(RouteHit)
	if a := testing.AllocsPerRun(1000, func() {
		c := m.Route("catalog", "shop", "shop/canary", 1)
		c.Inc(RouteHit)
		c.Inc(RouteMirrored)
	}); a != 0 {
		t.Errorf("Route and Inc: %v allocations, want 0", a)
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	hits := -1.0
	for _, mf := range mfs {
		if mf.GetName() != "trellis_route_events_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["event"] == RouteHit && labels["route"] == "shop/canary" && labels["rule"] == "1" && labels["destination_service"] == "catalog" {
				hits = mt.GetCounter().GetValue()
			}
		}
	}
	if hits != 1002 {
		t.Errorf("hits: got %v, want 1002", hits)
	}
	var nilM *Metrics
	nilM.Route("a", "b", "c", 0).Inc(RouteAborted) // counts nothing, no panic
}
