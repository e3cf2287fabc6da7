package dataplane

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// BenchmarkMetricsPerRequest is what one finished HTTP request costs in
// Prometheus recording, with every cache warm (the steady state):
//
//   - inbound: the authorization decision counter, the caller's metrics
//     entry (peer.sourceFor), then trellis_requests_total, the caller's edge
//     stats and trellis_request_duration_seconds (destMetrics.request);
//   - outbound: trellis_requests_total and the duration histogram
//     (destMetrics.outboundRequest).
//
// The request path must not allocate here; see TestRecordAllocatesNothing.
func BenchmarkMetricsPerRequest(b *testing.B) {
	const principal = "spiffe://td/ns/shop/sa/frontend"
	b.Run("inbound", func(b *testing.B) {
		m := metrics.New()
		d := m.Dest(metrics.Inbound, "catalog", "shop", "", "", "")
		snap := &meshconfig.Snapshot{ServiceOf: map[string]string{principal: "frontend"}}
		self := spiffeid.RequireFromString("spiffe://td/ns/shop/sa/catalog")
		p := newPeer(self, spiffeid.RequireFromString(principal), m, "catalog", "shop", snap)
		dec := admission.Decision{Allow: true, Policy: "shop/allow-frontend", Rule: 0}
		start := time.Now()
		record := func() {
			m.Decided(dec)
			d.Request(p.sourceFor(snap, m, "catalog", "shop"), "GET", "/items/42", 200, false, start)
		}
		record() // creates the counter children
		b.ReportAllocs()
		for b.Loop() {
			record()
		}
	})
	b.Run("outbound", func(b *testing.B) {
		m := metrics.New()
		d := m.Dest(metrics.Outbound, "catalog", "shop", "frontend", "shop", principal)
		start := time.Now()
		d.OutboundRequest(200, start)
		b.ReportAllocs()
		for b.Loop() {
			d.OutboundRequest(200, start)
		}
	})
}
