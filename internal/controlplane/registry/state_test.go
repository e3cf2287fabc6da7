package registry

import (
	"errors"
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
	r := New[*testStream](Options{Clock: clk, Grace: time.Minute, AckTimeout: ackTimeout, DriftGrace: driftGrace, Changed: func() {}, ConnectedGauge: func(float64) {}})
	s := &testStream{}
	w := workload{Instance: "i-1", SPIFFEID: "spiffe://td/ns/shop/sa/a", Service: "a", Namespace: "shop"}
	if err := r.Connect(w, "test", "", "", s); err != nil {
		t.Fatal(err)
	}
	connectedAt := clk.Now()

	check := func(step, wantState string, wantSince time.Time, wantErr string) {
		t.Helper()
		info, _, _, ok := r.Proxy("i-1")
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
		if !r.Offer("i-1", s, snap) {
			t.Fatalf("offer %s refused", hash)
		}
		return snap
	}
	ack := func(snap *pb.Snapshot) {
		t.Helper()
		if _, ok := r.Ack("i-1", s, &pb.Ack{Version: snap.GetVersion(), Hash: snap.GetHash()}); !ok {
			t.Fatal("ack refused")
		}
	}
	report := func(hash string) {
		r.Report("i-1", s, &pb.Report{RunningVersion: "1", RunningHash: hash})
	}
	repairs := func(step string, want int) {
		t.Helper()
		if got := r.DriftRepairs(); len(got) != want {
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
	got := r.DriftRepairs()
	if len(got) != 1 || got[0].Snap != s1 || got[0].Stream != s || got[0].Count != 1 || !got[0].Since.Equal(driftFrom) {
		t.Fatalf("repairs %+v, want one re-send of the desired snapshot", got)
	}
	repairs("right after a repair", 0)
	clk.Advance(driftGrace - time.Millisecond)
	repairs("within a grace period of the last repair", 0)
	clk.Advance(time.Millisecond)
	repairs("a grace period after the last repair, still drifted", 1)
	info, _, _, _ := r.Proxy("i-1")
	if info.DriftRepairs != 2 || info.LastDriftRepair == nil || !info.LastDriftRepair.Equal(clk.Now()) {
		t.Errorf("repairs recorded %d at %v, want 2 at %s", info.DriftRepairs, info.LastDriftRepair, clk.Now())
	}
	ack(s1) // the proxy re-applied the re-sent snapshot
	check("re-acked after the repair", adminapi.ProxySynced, clk.Now(), "")
	report("h1")
	check("reports the desired content again", adminapi.ProxySynced, clk.Now(), "")
	repairs("synced", 0)

	s2 := offer("h2")
	r.Nack("i-1", s, &pb.Nack{Version: s2.GetVersion(), Error: "policy engine: boom"})
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
	if _, desired, ackedSnap, _ := r.Proxy("i-1"); desired != s4 || ackedSnap != s3 {
		t.Errorf("desired %v acked %v, want the snapshots of versions %s and %s", desired.GetVersion(), ackedSnap.GetVersion(), s4.GetVersion(), s3.GetVersion())
	}
	check("acked a superseded version", adminapi.ProxySyncing, clk.Now(), "")

	if counts := r.StateCounts(); counts[adminapi.ProxySyncing] != 1 || len(counts) != 1 {
		t.Errorf("state counts %v, want one SYNCING", counts)
	}
	r.Disconnect("i-1", s)
	check("disconnected", adminapi.ProxyDisconnected, clk.Now(), "")
}

func TestRegistryReportFields(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	r := New[*testStream](Options{Clock: clk, Grace: time.Minute, Changed: func() {}, ConnectedGauge: func(float64) {}})
	s := &testStream{}
	for _, w := range []workload{
		{Instance: "b", SPIFFEID: "spiffe://td/ns/shop/sa/b", Service: "b", Namespace: "shop"},
		{Instance: "a", SPIFFEID: "spiffe://td/ns/shop/sa/a", Service: "a", Namespace: "shop"},
	} {
		if err := r.Connect(w, "", "", "", s); err != nil {
			t.Fatal(err)
		}
	}
	notAfter := clk.Now().Add(24 * time.Hour)
	r.Report("b", s, &pb.Report{CertNotAfter: timestamp(notAfter), CertIssuer: "issuer", TrustRoots: []string{"r1", "r2"}})
	info, _, _, _ := r.Proxy("b")
	if info.CertExpiry == nil || !info.CertExpiry.Equal(notAfter) || info.CertIssuer != "issuer" || len(info.TrustRoots) != 2 {
		t.Errorf("info %+v, want the reported certificate fields", info)
	}
	got := r.CertStates()
	if len(got) != 2 || got[0].Instance != "a" || got[1].Instance != "b" || got[1].CertIssuer != "issuer" || !got[1].CertNotAfter.Equal(notAfter) ||
		got[1].TrustRoots[1] != "r2" || !got[1].Connected || got[0].CertIssuer != "" {
		t.Errorf("CertStates %+v", got)
	}
	got[1].TrustRoots[0] = "changed"
	if again := r.CertStates(); again[1].TrustRoots[0] != "r1" {
		t.Error("CertStates shares its TrustRoots with the registry")
	}
	r.Disconnect("b", s)
	if got := r.CertStates(); got[1].Connected || got[1].CertIssuer != "issuer" {
		t.Errorf("after disconnect %+v, want b listed, not connected, its last report kept", got[1])
	}
}

// A newer stream of an instance replaces the older one, which is closed
// once; the older stream's answers and end then change nothing.
func TestConnectReplacesStream(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	connected := 0.0
	r := New[*testStream](Options{Clock: clk, Grace: time.Minute, Changed: func() {}, ConnectedGauge: func(n float64) { connected = n }})
	w := workload{Instance: "i-1", SPIFFEID: "spiffe://td/ns/shop/sa/a", Service: "a", Namespace: "shop"}
	old, cur := &testStream{}, &testStream{}
	if err := r.Connect(w, "", "", "", old); err != nil {
		t.Fatal(err)
	}
	if err := r.Connect(w, "", "", "", cur); err != nil {
		t.Fatal(err)
	}
	if old.replaced != 1 || cur.replaced != 0 || connected != 1 {
		t.Errorf("replaced old %d cur %d times, connected %v; want 1, 0, 1", old.replaced, cur.replaced, connected)
	}
	if r.Offer("i-1", old, &pb.Snapshot{Hash: "h"}) || r.Disconnect("i-1", old) {
		t.Error("the replaced stream still counts")
	}
	other := w
	other.SPIFFEID = "spiffe://td/ns/shop/sa/b"
	if err := r.Connect(other, "", "", "", &testStream{}); !errors.Is(err, ErrInstanceTaken) {
		t.Errorf("another identity's connect: %v, want ErrInstanceTaken", err)
	}
	if !r.Disconnect("i-1", cur) || connected != 0 {
		t.Errorf("disconnect of the current stream: connected %v, want 0", connected)
	}
}

// testStream is a config stream handle that counts its replacements.
type testStream struct{ replaced int }

func (s *testStream) CloseReplaced() { s.replaced++ }

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
