package dataplane

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// A peer cached from before the start-over (a long-lived connection, the
// plaintext peer) is looked up again: its traffic is reported after it.
func TestPeerRebindsAfterCacheStartsOver(t *testing.T) {
	m := metrics.New()
	snap := &meshconfig.Snapshot{ServiceOf: map[string]string{"spiffe://td/ns/shop/sa/frontend": "frontend"}}
	p := newPeer(spiffeid.RequireFromString("spiffe://td/ns/shop/sa/catalog"), spiffeid.RequireFromString("spiffe://td/ns/shop/sa/frontend"), m, "catalog", "shop", snap)
	old := p.sourceFor(snap, m, "catalog", "shop")
	m.SetMaxCallers(64)
	for i := 1; i < 64; i++ {
		m.ForSource("c"+strconv.Itoa(i), fmt.Sprintf("spiffe://td/ns/shop/sa/c%d", i), "shop", true, "catalog", "shop")
	}
	m.ForSource("web", "spiffe://td/ns/shop/sa/web", "shop", true, "catalog", "shop")
	cur := p.sourceFor(snap, m, "catalog", "shop")
	if cur == old {
		t.Fatal("peer kept its entry from before the start-over")
	}
	m.Dest(metrics.Inbound, "catalog", "shop", "", "", "").Request(cur, "GET", "/", 200, false, time.Now())
	found := false
	for _, e := range m.TrafficStats("catalog", "shop", time.Now().Add(-time.Hour)).GetEdges() {
		found = found || e.GetSourceService() == "frontend" && e.GetRequests() == 1
	}
	if !found {
		t.Error("traffic of a peer cached before the start-over is not reported")
	}
	if again := p.sourceFor(snap, m, "catalog", "shop"); again != cur {
		t.Error("peer rebinds on every request; it should once per start-over")
	}
}
