package registry

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/bolt"
	"github.com/trellismesh/trellis/internal/testutil"
)

// TestRegistrySurvivesRestart: what Persist writes, a new registry
// restores as RESTORED workloads that stay endpoints for the restore grace
// period (longer than the ordinary one) and then expire, leaving their
// services listed without endpoints; versions keep growing; a corrupt
// record is reported, not fatal.
func TestRegistrySurvivesRestart(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := clock.NewFake(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))
	nop := func() {}
	gauge := func(float64) {}
	save := func(r *Registry[*testStream]) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.Persist(ctx, st, testutil.Logger(t)) }()
		cancel() // the final write happens on the way out
		<-done
	}

	r := New[*testStream](Options{Clock: clk, Grace: 15 * time.Second, Changed: nop, ConnectedGauge: gauge})
	for _, w := range []workload{
		{Instance: "a1", SPIFFEID: "spiffe://td/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.1:15006", Protocol: "http", Labels: map[string]string{"v": "1"}},
		{Instance: "b1", SPIFFEID: "spiffe://td/ns/shop/sa/ledger", Service: "ledger", Namespace: "shop", AdvertiseAddr: "10.0.0.2:15006", Protocol: "tcp"},
		{Instance: "c1", SPIFFEID: "spiffe://td/ns/shop/sa/frontend", Service: "frontend", Namespace: "shop", Protocol: "http"},
	} {
		if err := r.Connect(w, "dev", "41", "abc", &testStream{}); err != nil {
			t.Fatal(err)
		}
	}
	save(r)

	saved, err := Load(context.Background(), st)
	if err != nil || len(saved.Workloads) != 3 {
		t.Fatalf("Load: %d workloads, %v; want 3", len(saved.Workloads), err)
	}
	r2 := New[*testStream](Options{Clock: clk, Grace: 15 * time.Second, Changed: nop, ConnectedGauge: gauge})
	if n := r2.Restore(saved); n != 3 {
		t.Fatalf("restored %d, want 3", n)
	}
	got, _ := r2.workloads()
	if len(got) != 3 {
		t.Fatalf("restored registry has %d workloads, want 3 (endpoints during the restore grace period)", len(got))
	}
	for _, w := range got {
		if w.Connected {
			t.Errorf("%s restored as connected; it must wait for its proxy", w.Instance)
		}
		if w.Instance == "a1" && (w.AdvertiseAddr != "10.0.0.1:15006" || w.Labels["v"] != "1" || w.Protocol != "http") {
			t.Errorf("a1 restored as %+v", w)
		}
	}
	// A restored workload has its own state, since the restart.
	for _, p := range r2.Proxies("") {
		if p.State != adminapi.ProxyRestored || p.Since == nil || !p.Since.Equal(clk.Now()) {
			t.Errorf("%s: state %s since %v, want %s since the restore", p.Instance, p.State, p.Since, adminapi.ProxyRestored)
		}
	}
	// A reconnect within the grace period continues the version counter
	// and ends the RESTORED state.
	if r2.entries["a1"].counter < 41 {
		t.Errorf("a1's version counter restored as %d, want at least 41", r2.entries["a1"].counter)
	}
	clk.Advance(20 * time.Second)
	if err := r2.Connect(workload{Instance: "c1", SPIFFEID: "spiffe://td/ns/shop/sa/frontend", Service: "frontend", Namespace: "shop", Protocol: "http"}, "dev", "41", "abc", &testStream{}); err != nil {
		t.Fatal(err)
	}
	if p, _, _, _ := r2.Proxy("c1"); p.State == adminapi.ProxyRestored || !p.Connected {
		t.Errorf("c1 after its reconnect: state %s connected %v, want connected and not RESTORED", p.State, p.Connected)
	}
	// Past the ordinary grace period (15 s), short of the restore grace
	// period: the workloads whose proxies have not reconnected stay.
	if r2.Expire() {
		t.Errorf("restored workloads expired after %s, before the restore grace period (%s) ended", 20*time.Second, r2.restoreGrace)
	}
	clk.Advance(restoreGracePeriod - 20*time.Second)
	if !r2.Expire() {
		t.Error("restored workloads did not expire after the restore grace period")
	}
	ws, idle, _ := r2.View()
	if len(ws) != 1 || ws[0].Instance != "c1" {
		t.Errorf("workloads left after expiry: %+v, want c1 only", ws)
	}
	// Their services stay known, without endpoints.
	if len(idle) != 2 || idle[0].Name != "catalog" || idle[1].Name != "ledger" || idle[1].Protocol != "tcp" {
		t.Fatalf("idle services after expiry: %+v, want catalog and ledger (tcp)", idle)
	}
	svcs := snapshot.ServicesOf(ws, idle)
	if len(svcs) != 3 {
		t.Fatalf("snapshot services %v, want catalog, frontend, ledger", svcs)
	}
	for _, s := range svcs {
		if len(s.GetEndpoints()) != 0 {
			t.Errorf("%s.%s has endpoints %v; no instance is left (and frontend advertises none)", s.GetName(), s.GetNamespace(), s.GetEndpoints())
		}
	}

	// Idle services survive a restart too, and leave after the retention.
	save(r2)
	saved, err = Load(context.Background(), st)
	if err != nil || len(saved.Idle) != 2 {
		t.Fatalf("Load: %d idle services, %v; want 2", len(saved.Idle), err)
	}
	r3 := New[*testStream](Options{Clock: clk, Grace: 15 * time.Second, Changed: nop, ConnectedGauge: gauge})
	r3.Restore(saved)
	if _, idle, _ := r3.View(); len(idle) != 2 {
		t.Errorf("restored %d idle services, want 2", len(idle))
	}
	// An instance registering again makes its service live again.
	if err := r3.Connect(workload{Instance: "a2", SPIFFEID: "spiffe://td/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.3:15006"}, "dev", "", "", &testStream{}); err != nil {
		t.Fatal(err)
	}
	if _, idle, _ := r3.View(); len(idle) != 1 || idle[0].Name != "ledger" {
		t.Errorf("idle services after catalog re-registered: %+v, want ledger only", idle)
	}
	// After the retention ledger is forgotten; frontend, whose restored
	// instance never reconnected here, has only just become idle.
	clk.Advance(serviceRetention)
	if !r3.Expire() {
		t.Error("nothing expired after the service retention")
	}
	if _, idle, _ := r3.View(); len(idle) != 1 || idle[0].Name != "frontend" {
		t.Errorf("idle services after the retention: %+v, want frontend only", idle)
	}

	if _, err := st.Txn(context.Background(), store.Op{Type: store.OpPut, Key: registryKey, Value: []byte("{"), IfModRevision: store.AnyRevision}); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(context.Background(), st); err == nil {
		t.Error("Load accepted a corrupt record")
	}
}

// Persist writes a changed registry on its clock's ticks, not only on the
// way out.
func TestPersistWritesOnTheClock(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := clock.NewFake(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))
	r := New[*testStream](Options{Clock: clk, Grace: 15 * time.Second, Changed: func() {}, ConnectedGauge: func(float64) {}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Persist(ctx, st, testutil.Logger(t)) }()
	t.Cleanup(func() { cancel(); <-done })

	w := workload{Instance: "a1", SPIFFEID: "spiffe://td/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop"}
	if err := r.Connect(w, "dev", "", "", &testStream{}); err != nil {
		t.Fatal(err)
	}
	saved := func() int {
		s, err := Load(context.Background(), st)
		if err != nil {
			t.Fatal(err)
		}
		return len(s.Workloads)
	}
	clk.BlockUntil(1) // Persist's ticker
	clk.Advance(registryWriteEvery - time.Millisecond)
	if n := saved(); n != 0 {
		t.Fatalf("saved before the first tick: %d workloads, want 0", n)
	}
	clk.Advance(time.Millisecond)
	testutil.Eventually(t, "the registry written on the tick", func() bool { return saved() == 1 })
}
