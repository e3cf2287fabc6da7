package controlplane

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlplane/registry"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/bolt"
	"github.com/trellismesh/trellis/internal/testutil"
)

// Another replica's registry joins this one's view: its workloads are
// added unless this replica has the same instance (a proxy that moved
// here), its idle services unless registered; its own name is ignored;
// when its writes stop for longer than the grace, its workloads leave and
// a push round is kicked.
func TestPeersMerge(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := clock.NewFake(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	put := func(replica string, sh registry.Shared) {
		b, _ := json.Marshal(sh)
		if _, err := st.Txn(ctx, store.Op{Type: store.OpPut, Key: registry.ReplicasPrefix + replica, Value: b, IfModRevision: store.AnyRevision}); err != nil {
			t.Fatal(err)
		}
	}
	put("cp-b", registry.Shared{Updated: clk.Now(), Workloads: []registry.SavedWorkload{
		{Instance: "b1", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.1:15006", SPIFFEID: "spiffe://t/ns/shop/sa/catalog"},
		{Instance: "moved", Service: "ledger", Namespace: "shop", AdvertiseAddr: "10.0.0.2:15006"},
	}, Idle: []snapshot.IdleService{{Namespace: "shop", Name: "old"}, {Namespace: "shop", Name: "web"}}})
	put("cp-a", registry.Shared{Updated: clk.Now(), Workloads: []registry.SavedWorkload{{Instance: "self-stale-copy", Service: "x", Namespace: "shop"}}})
	var kicks atomic.Int32
	p := &peers{st: st, self: "cp-a", stale: 15 * time.Second, clock: clk, log: testutil.Logger(t), kick: func() { kicks.Add(1) }, shared: map[string]registry.Shared{}}
	go p.follow(ctx)
	own := []snapshot.Workload{{Instance: "moved", Service: "ledger", Namespace: "shop", AdvertiseAddr: "10.0.0.9:15006"}, {Instance: "a1", Service: "web", Namespace: "shop"}}
	instances := func() map[string]string {
		ws, _, _ := p.merge(own, nil, 7)
		m := map[string]string{}
		for _, w := range ws {
			m[w.Instance] = w.AdvertiseAddr
		}
		return m
	}
	testutil.Eventually(t, "cp-b's workloads merged", func() bool { return len(instances()) == 3 })
	got := instances()
	if got["moved"] != "10.0.0.9:15006" || got["b1"] != "10.0.0.1:15006" || got["self-stale-copy"] != "" {
		t.Errorf("merged %v: want this replica's moved instance, cp-b's b1, nothing from its own key", got)
	}
	_, idle, gen := p.merge(own, nil, 7)
	if len(idle) != 1 || idle[0].Name != "old" || gen <= 7 {
		t.Errorf("idle %v (web is registered here), gen %d", idle, gen)
	}

	before := kicks.Load()
	clk.Advance(16 * time.Second)
	testutil.Eventually(t, "cp-b gone stale", func() bool { return len(instances()) == 2 && kicks.Load() > before })
}
