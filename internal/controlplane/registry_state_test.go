package controlplane

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/clock"
)

// TestRegistryStates walks one proxy through every sync state on a stepped
// clock: the boundaries are Config.AckTimeout and Config.DriftGrace.
func TestRegistryStates(t *testing.T) {
	const ackTimeout, driftGrace = 5 * time.Second, 10 * time.Second
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	r := newRegistry(registryOptions{now: clk.Now, grace: time.Minute, ackTimeout: ackTimeout, driftGrace: driftGrace, changed: func() {}, connectedGauge: func(float64) {}})
	s := newProxyStream(func(error) {})
	w := workload{Instance: "i-1", SPIFFEID: "spiffe://td/ns/shop/sa/a", Service: "a", Namespace: "shop"}
	if err := r.connect(w, "test", "", "", s); err != nil {
		t.Fatal(err)
	}
	connectedAt := clk.Now()

	check := func(step, wantState string, wantSince time.Time, wantErr string) {
		t.Helper()
		info, _, _, ok := r.proxy("i-1")
		if !ok {
			t.Fatalf("%s: instance not registered", step)
		}
		var since time.Time
		if info.Since != nil {
			since = *info.Since
		}
		if info.State != wantState || !since.Equal(wantSince) || info.Error != wantErr {
			t.Errorf("%s: got %s since %s error %q, want %s since %s error %q", step, info.State, since, info.Error, wantState, wantSince, wantErr)
		}
	}
	offer := func(hash string) *pb.Snapshot {
		t.Helper()
		snap := &pb.Snapshot{Hash: hash}
		if !r.offer("i-1", s, snap) {
			t.Fatalf("offer %s refused", hash)
		}
		return snap
	}
	ack := func(snap *pb.Snapshot) {
		t.Helper()
		if _, ok := r.ack("i-1", s, &pb.Ack{Version: snap.GetVersion(), Hash: snap.GetHash()}); !ok {
			t.Fatal("ack refused")
		}
	}
	report := func(hash string) {
		r.report("i-1", s, &pb.Report{RunningVersion: "1", RunningHash: hash})
	}
	repairs := func(step string, want int) {
		t.Helper()
		if got := r.driftRepairs(); len(got) != want {
			t.Errorf("%s: %d drift repairs, want %d", step, len(got), want)
		}
	}

	check("registered, nothing sent", adminapi.ProxySyncing, connectedAt, "")
	s1 := offer("h1")
	sent := clk.Now()
	clk.Advance(ackTimeout - time.Millisecond)
	check("sent, within the ack timeout", adminapi.ProxySyncing, sent, "")
	clk.Advance(time.Millisecond)
	check("sent, ack timeout passed", adminapi.ProxyStale, sent, "")
	ack(s1)
	acked := clk.Now()
	check("acked", adminapi.ProxySynced, acked, "")
	report("h1")
	check("reports what it acked", adminapi.ProxySynced, acked, "")

	clk.Advance(time.Second)
	report("tampered")
	driftFrom := clk.Now()
	check("reports other content, within the drift grace", adminapi.ProxySyncing, driftFrom, "")
	clk.Advance(driftGrace - time.Millisecond)
	report("tampered")
	check("still within the drift grace", adminapi.ProxySyncing, driftFrom, "")
	repairs("within the drift grace", 0)
	clk.Advance(time.Millisecond)
	check("drift grace passed", adminapi.ProxyDrifted, driftFrom, "")
	got := r.driftRepairs()
	if len(got) != 1 || got[0].snap != s1 || got[0].stream != s || got[0].count != 1 || !got[0].since.Equal(driftFrom) {
		t.Fatalf("repairs %+v, want one re-send of the desired snapshot", got)
	}
	repairs("right after a repair", 0)
	clk.Advance(driftGrace - time.Millisecond)
	repairs("within a grace period of the last repair", 0)
	clk.Advance(time.Millisecond)
	repairs("a grace period after the last repair, still drifted", 1)
	info, _, _, _ := r.proxy("i-1")
	if info.DriftRepairs != 2 || info.LastDriftRepair == nil || !info.LastDriftRepair.Equal(clk.Now()) {
		t.Errorf("repairs recorded %d at %v, want 2 at %s", info.DriftRepairs, info.LastDriftRepair, clk.Now())
	}
	ack(s1) // the proxy re-applied the re-sent snapshot
	check("re-acked after the repair", adminapi.ProxySynced, clk.Now(), "")
	report("h1")
	check("reports the desired content again", adminapi.ProxySynced, clk.Now(), "")
	repairs("synced", 0)

	s2 := offer("h2")
	r.nack("i-1", s, &pb.Nack{Version: s2.GetVersion(), Error: "policy engine: boom"})
	nacked := clk.Now()
	check("nacked", adminapi.ProxyNacked, nacked, "policy engine: boom")
	report("h1") // still runs the last good config: not drift
	clk.Advance(time.Hour)
	check("nacked, reporting the last good config", adminapi.ProxyNacked, nacked, "policy engine: boom")
	repairs("nacked", 0)
	ack(s2)
	check("acked after a nack", adminapi.ProxySynced, clk.Now(), "")

	// An ACK for a version a newer one superseded finds its content.
	s3 := offer("h3")
	s4 := offer("h4")
	ack(s3)
	if _, desired, ackedSnap, _ := r.proxy("i-1"); desired != s4 || ackedSnap != s3 {
		t.Errorf("desired %v acked %v, want the snapshots of versions %s and %s", desired.GetVersion(), ackedSnap.GetVersion(), s4.GetVersion(), s3.GetVersion())
	}
	check("acked a superseded version", adminapi.ProxySyncing, clk.Now(), "")

	if counts := r.stateCounts(); counts[adminapi.ProxySyncing] != 1 || len(counts) != 1 {
		t.Errorf("state counts %v, want one SYNCING", counts)
	}
	r.disconnect("i-1", s)
	check("disconnected", adminapi.ProxyDisconnected, clk.Now(), "")
}

func TestRegistryReportFields(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	r := newRegistry(registryOptions{now: clk.Now, grace: time.Minute, changed: func() {}, connectedGauge: func(float64) {}})
	s := newProxyStream(func(error) {})
	for _, w := range []workload{
		{Instance: "b", SPIFFEID: "spiffe://td/ns/shop/sa/b", Service: "b", Namespace: "shop"},
		{Instance: "a", SPIFFEID: "spiffe://td/ns/shop/sa/a", Service: "a", Namespace: "shop"},
	} {
		if err := r.connect(w, "", "", "", s); err != nil {
			t.Fatal(err)
		}
	}
	notAfter := clk.Now().Add(24 * time.Hour)
	r.report("b", s, &pb.Report{CertNotAfter: timestamp(notAfter), CertIssuer: "issuer", TrustRoots: []string{"r1", "r2"}})
	info, _, _, _ := r.proxy("b")
	if info.CertExpiry == nil || !info.CertExpiry.Equal(notAfter) || info.CertIssuer != "issuer" || len(info.TrustRoots) != 2 {
		t.Errorf("info %+v, want the reported certificate fields", info)
	}
	got := r.certStates()
	if len(got) != 2 || got[0].Instance != "a" || got[1].Instance != "b" || got[1].CertIssuer != "issuer" || !got[1].CertNotAfter.Equal(notAfter) ||
		got[1].TrustRoots[1] != "r2" || !got[1].Connected || got[0].CertIssuer != "" {
		t.Errorf("certStates %+v", got)
	}
	got[1].TrustRoots[0] = "changed"
	if again := r.certStates(); again[1].TrustRoots[0] != "r1" {
		t.Error("certStates shares its TrustRoots with the registry")
	}
	r.disconnect("b", s)
	if got := r.certStates(); got[1].Connected || got[1].CertIssuer != "issuer" {
		t.Errorf("after disconnect %+v, want b listed, not connected, its last report kept", got[1])
	}
}

func TestConvergence(t *testing.T) {
	var observed []time.Duration
	abandoned := 0
	c := &convergence{observe: func(d time.Duration) { observed = append(observed, d) }, abandon: func() { abandoned++ }}
	start := time.Now()

	c.offered(1, start, "a", "2")
	c.offered(1, start, "b", "5")
	c.acked("a", "2") // before the round is sealed
	c.seal(1)
	c.acked("b", "4") // an older version: still waiting
	if len(observed) != 0 {
		t.Fatalf("observed %v before every proxy acked", observed)
	}
	c.acked("b", "5")
	if len(observed) != 1 || abandoned != 0 {
		t.Fatalf("observed %v abandoned %d, want one sample", observed, abandoned)
	}
	c.acked("b", "5")
	if len(observed) != 1 {
		t.Fatalf("a second ACK observed again: %v", observed)
	}

	c.offered(2, start, "a", "3")
	c.seal(2)
	c.offered(3, start, "a", "4") // supersedes round 2
	c.seal(3)
	c.acked("a", "3")
	if abandoned != 1 || len(observed) != 1 {
		t.Fatalf("observed %v abandoned %d, want round 2 abandoned", observed, abandoned)
	}
	c.gone("a") // a proxy that left is not waited for
	if len(observed) != 2 {
		t.Fatalf("observed %v, want round 3 done once its only proxy left", observed)
	}
	c.seal(4) // a round that offered nothing
	if len(observed) != 2 || abandoned != 1 {
		t.Fatalf("observed %v abandoned %d after an empty round", observed, abandoned)
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
