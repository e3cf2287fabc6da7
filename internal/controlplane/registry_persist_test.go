package controlplane

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/bolt"
	"github.com/trellismesh/trellis/internal/testutil"
)

// TestRegistrySurvivesRestart: what saveRegistry writes, a new registry
// restores as disconnected workloads that stay endpoints for the grace
// period and then expire; versions keep growing; a corrupt record is
// reported, not fatal.
func TestRegistrySurvivesRestart(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := testutil.NewClock(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))
	nop := func() {}
	gauge := func(float64) {}

	r := newRegistry(clock.Now, 15*time.Second, nop, gauge)
	for _, w := range []workload{
		{Instance: "a1", SPIFFEID: "spiffe://td/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.1:15006", Protocol: "http", Labels: map[string]string{"v": "1"}},
		{Instance: "b1", SPIFFEID: "spiffe://td/ns/shop/sa/ledger", Service: "ledger", Namespace: "shop", AdvertiseAddr: "10.0.0.2:15006", Protocol: "tcp"},
	} {
		if err := r.connect(w, "dev", "41", "abc", &proxyStream{}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); saveRegistry(ctx, st, r, testutil.Logger(t)) }()
	cancel() // the final write happens on the way out
	<-done

	ws, err := loadRegistry(context.Background(), st)
	if err != nil || len(ws) != 2 {
		t.Fatalf("loadRegistry: %d workloads, %v; want 2", len(ws), err)
	}
	r2 := newRegistry(clock.Now, 15*time.Second, nop, gauge)
	if n := r2.restore(ws); n != 2 {
		t.Fatalf("restored %d, want 2", n)
	}
	got, _ := r2.workloads()
	if len(got) != 2 {
		t.Fatalf("restored registry has %d workloads, want 2 (endpoints during the grace period)", len(got))
	}
	for _, w := range got {
		if w.Connected {
			t.Errorf("%s restored as connected; it must wait for its proxy", w.Instance)
		}
		if w.Instance == "a1" && (w.AdvertiseAddr != "10.0.0.1:15006" || w.Labels["v"] != "1" || w.Protocol != "http") {
			t.Errorf("a1 restored as %+v", w)
		}
	}
	// A reconnect within the grace period continues the version counter.
	if r2.entries["a1"].counter < 41 {
		t.Errorf("a1's version counter restored as %d, want at least 41", r2.entries["a1"].counter)
	}
	clock.Advance(14 * time.Second)
	if r2.expire() {
		t.Error("restored workloads expired before the grace period ended")
	}
	clock.Advance(2 * time.Second)
	if !r2.expire() {
		t.Error("restored workloads did not expire after the grace period")
	}
	if ws, _ := r2.workloads(); len(ws) != 0 {
		t.Errorf("%d workloads left after expiry", len(ws))
	}

	if _, err := st.Txn(context.Background(), store.Op{Type: store.OpPut, Key: registryKey, Value: []byte("{"), IfModRevision: store.AnyRevision}); err != nil {
		t.Fatal(err)
	}
	if _, err := loadRegistry(context.Background(), st); err == nil {
		t.Error("loadRegistry accepted a corrupt record")
	}
}
