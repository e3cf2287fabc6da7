package collector_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/telemetry"
	"github.com/trellismesh/trellis/internal/telemetry/collector"
	"github.com/trellismesh/trellis/internal/telemetry/collector/collectortest"
	"github.com/trellismesh/trellis/internal/testutil"
)

type stream = grpc.BidiStreamingClient[pb.EventBatch, pb.EventAck]

func dial(t *testing.T, addr string, tlsCfg func() *tls.Config) pb.TelemetryClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewTelemetryClient(conn)
}

// hello opens a stream for instance and returns it with the first ack.
func hello(t *testing.T, c pb.TelemetryClient, instance string) (stream, uint64) {
	t.Helper()
	st, err := c.Stream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.EventBatch{HelloInstance: instance}); err != nil {
		t.Fatal(err)
	}
	ack, err := st.Recv()
	if err != nil {
		t.Fatalf("first ack: %v", err)
	}
	return st, ack.GetThrough()
}

// send sends one batch and returns the ack.
func send(t *testing.T, st stream, evs ...*pb.Event) uint64 {
	t.Helper()
	if err := st.Send(&pb.EventBatch{Events: evs}); err != nil {
		t.Fatal(err)
	}
	ack, err := st.Recv()
	if err != nil {
		t.Fatalf("ack: %v", err)
	}
	return ack.GetThrough()
}

func events(kind string, seqs ...uint64) []*pb.Event {
	evs := make([]*pb.Event, len(seqs))
	for i, s := range seqs {
		evs[i] = &pb.Event{Seq: s, Kind: kind, Time: timestamppb.New(time.Unix(1700000000, 0)), Path: "/items", Decision: "deny"}
	}
	return evs
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// stored returns (reporter, seq) of every record, in log order.
func stored(t *testing.T, c *collectortest.Collector) []string {
	t.Helper()
	var out []string
	for _, r := range c.Records(t) {
		out = append(out, r.Event.GetReporter()+"#"+itoa(r.Event.GetSeq()))
	}
	return out
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func want(reporter string, seqs ...uint64) []string {
	out := make([]string, len(seqs))
	for i, s := range seqs {
		out[i] = reporter + "#" + itoa(s)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStreamNeedsVerifiedClientCertificate(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	st, err := dial(t, c.Addr, pki.AnonymousTLS()).Stream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&pb.EventBatch{HelloInstance: "a", Events: events("authz.deny", 1)})
	_, err = st.Recv()
	if got := status.Code(err); got != codes.Unauthenticated {
		t.Fatalf("stream without a client certificate: got %v (%v), want Unauthenticated", got, err)
	}
	if n := len(c.Records(t)); n != 0 {
		t.Errorf("records after a refused stream: got %d, want 0", n)
	}
	if got := c.Metric(t, "trellis_collector_streams_refused_total", "code=Unauthenticated"); got != 1 {
		t.Errorf("refused streams metric: got %v, want 1", got)
	}
}

func TestStreamProtocolViolations(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	client := dial(t, c.Addr, pki.ClientTLS(t, pki.WorkloadID(t, "shop", "frontend")))
	tests := []struct {
		name    string
		batches []*pb.EventBatch
		msg     string
	}{
		{"events before hello", []*pb.EventBatch{{Events: events("access", 1)}}, "must set hello_instance"},
		{"hello twice", []*pb.EventBatch{{HelloInstance: "p1"}, {HelloInstance: "p1"}}, "only be set on the first batch"},
		{"seq zero", []*pb.EventBatch{{HelloInstance: "p2"}, {Events: events("access", 0)}}, "seq 0"},
		{"seq not growing", []*pb.EventBatch{{HelloInstance: "p3"}, {Events: events("access", 2, 2)}}, "must grow"},
		{"seq going back", []*pb.EventBatch{{HelloInstance: "p4"}, {Events: events("access", 3, 1)}}, "must grow"},
		{"instance with a space", []*pb.EventBatch{{HelloInstance: "p 5"}}, "printable"},
		{"instance too long", []*pb.EventBatch{{HelloInstance: strings.Repeat("x", 129)}}, "at most 128"},
		{"closed before hello", nil, "closed before hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := client.Stream(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range tt.batches {
				if err := st.Send(b); err != nil {
					break
				}
			}
			_ = st.CloseSend()
			for {
				_, err = st.Recv()
				if err != nil {
					break
				}
			}
			if got := status.Code(err); got != codes.InvalidArgument || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want InvalidArgument containing %q", err, tt.msg)
			}
		})
	}
	if n := len(c.Records(t)); n != 0 {
		t.Errorf("records after refused batches: got %d, want 0", n)
	}
}

func TestStreamDropsResendsAndOverwritesReporter(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	id := pki.WorkloadID(t, "shop", "frontend")
	client := dial(t, c.Addr, pki.ClientTLS(t, id))

	st, first := hello(t, client, "inst-1")
	if first != 0 {
		t.Fatalf("first ack of a new instance: got %d, want 0", first)
	}
	forged := events("authz.deny", seqRange(1, 10)...)
	for _, ev := range forged {
		ev.Reporter = "spiffe://trellis.local/ns/trellis-system/sa/control"
		ev.Instance = "someone-else"
	}
	if got := send(t, st, forged[:4]...); got != 4 {
		t.Fatalf("ack: got %d, want 4", got)
	}
	if got := send(t, st, forged[4:]...); got != 10 {
		t.Fatalf("ack: got %d, want 10", got)
	}
	_ = st.CloseSend()

	// A reconnect learns what is stored; resent events are dropped.
	st, first = hello(t, client, "inst-1")
	if first != 10 {
		t.Fatalf("first ack after reconnect: got %d, want 10", first)
	}
	if got := send(t, st, events("authz.deny", seqRange(6, 12)...)...); got != 12 {
		t.Fatalf("ack: got %d, want 12", got)
	}
	if got := send(t, st, events("authz.deny", 3, 5)...); got != 12 {
		t.Fatalf("ack of an all-duplicate batch: got %d, want 12 (the stored mark)", got)
	}

	if got, w := stored(t, c), want(id.String(), seqRange(1, 12)...); !equal(got, w) {
		t.Fatalf("stored:\n got %v\nwant %v", got, w)
	}
	for _, r := range c.Records(t) {
		if got := r.Event.GetInstance(); got != "inst-1" {
			t.Fatalf("seq %d: instance %q, want the stream's hello_instance inst-1", r.Event.GetSeq(), got)
		}
	}
	for _, m := range []struct {
		name string
		want float64
	}{
		{"trellis_collector_events_received_total", 19},
		{"trellis_collector_events_appended_total", 12},
		{"trellis_collector_events_duplicate_total", 7},
	} {
		if got := c.Metric(t, m.name, "kind=authz.deny"); got != m.want {
			t.Errorf("%s{kind=authz.deny}: got %v, want %v", m.name, got, m.want)
		}
	}
	if got := c.Metric(t, "trellis_collector_seq_gaps_total"); got != 0 {
		t.Errorf("gaps: got %v, want 0", got)
	}
}

func TestStreamCountsGapsAndBoundsKindLabel(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	id := pki.WorkloadID(t, "shop", "frontend")
	st, _ := hello(t, dial(t, c.Addr, pki.ClientTLS(t, id)), "inst")
	send(t, st, events("made.up.kind", 1, 2)...)
	// 3..6 and 8 were dropped by the proxy: accepted, counted.
	if got := send(t, st, events("made.up.kind", 7, 9)...); got != 9 {
		t.Fatalf("ack: got %d, want 9", got)
	}
	if got := c.Metric(t, "trellis_collector_seq_gaps_total"); got != 5 {
		t.Errorf("gaps: got %v, want 5", got)
	}
	if got := c.Metric(t, "trellis_collector_events_appended_total", "kind=other"); got != 4 {
		t.Errorf("appended{kind=other}: got %v, want 4", got)
	}
	if got := c.Metric(t, "trellis_collector_events_appended_total", "kind=made.up.kind"); got != 0 {
		t.Errorf("appended{kind=made.up.kind}: got %v, want 0 (unknown kinds are \"other\")", got)
	}
	if got, w := stored(t, c), want(id.String(), 1, 2, 7, 9); !equal(got, w) {
		t.Fatalf("stored:\n got %v\nwant %v", got, w)
	}
}

func TestHighWaterMarksSurviveRestart(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	id := pki.WorkloadID(t, "shop", "frontend")
	tlsCfg := pki.ClientTLS(t, id)
	st, _ := hello(t, dial(t, c.Addr, tlsCfg), "inst")
	send(t, st, events("access", seqRange(1, 10)...)...)

	c = c.Restart(t)
	st, first := hello(t, dial(t, c.Addr, tlsCfg), "inst")
	if first != 10 {
		t.Fatalf("first ack after a collector restart: got %d, want 10", first)
	}
	send(t, st, events("access", seqRange(1, 12)...)...)
	if got, w := stored(t, c), want(id.String(), seqRange(1, 12)...); !equal(got, w) {
		t.Fatalf("stored:\n got %v\nwant %v", got, w)
	}
}

// A crash after an append but before its high-water mark reaches the disk
// makes the resend a duplicate: at least once, never lost.
func TestCrashBeforeMarkWriteDuplicatesNeverLoses(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	id := pki.WorkloadID(t, "shop", "frontend")
	tlsCfg := pki.ClientTLS(t, id)
	st, _ := hello(t, dial(t, c.Addr, tlsCfg), "inst")
	send(t, st, events("access", seqRange(1, 5)...)...)
	c = c.Restart(t)
	markFile := filepath.Join(c.Config.StateDir, "highwater.json")
	old, err := os.ReadFile(markFile)
	if err != nil {
		t.Fatal(err)
	}
	st, _ = hello(t, dial(t, c.Addr, tlsCfg), "inst")
	send(t, st, events("access", seqRange(6, 8)...)...)
	c.Stop(t)
	if err := os.WriteFile(markFile, old, 0o600); err != nil {
		t.Fatal(err)
	}

	c = c.Restart(t)
	st, first := hello(t, dial(t, c.Addr, tlsCfg), "inst")
	if first != 5 {
		t.Fatalf("first ack with the stale mark: got %d, want 5", first)
	}
	send(t, st, events("access", seqRange(6, 9)...)...)
	w := want(id.String(), 1, 2, 3, 4, 5, 6, 7, 8, 6, 7, 8, 9)
	if got := stored(t, c); !equal(got, w) {
		t.Fatalf("stored:\n got %v\nwant %v", got, w)
	}
}

// A proxy naming another identity's instance gets a sequence space of its
// own: it can neither suppress nor pose as the other's events.
func TestInstancesAreScopedByIdentity(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	a, b := pki.WorkloadID(t, "shop", "frontend"), pki.WorkloadID(t, "shop", "evil")
	st, _ := hello(t, dial(t, c.Addr, pki.ClientTLS(t, a)), "shared")
	send(t, st, events("authz.deny", 1, 2, 3)...)

	st, first := hello(t, dial(t, c.Addr, pki.ClientTLS(t, b)), "shared")
	if first != 0 {
		t.Fatalf("first ack for another identity's instance: got %d, want 0", first)
	}
	send(t, st, events("authz.deny", 1, 2, 3, 4)...)
	st, first = hello(t, dial(t, c.Addr, pki.ClientTLS(t, a)), "shared")
	if first != 3 {
		t.Fatalf("first ack of the real owner: got %d, want 3", first)
	}
	send(t, st, events("authz.deny", 4)...)
	w := append(want(a.String(), 1, 2, 3), append(want(b.String(), 1, 2, 3, 4), want(a.String(), 4)...)...)
	if got := stored(t, c); !equal(got, w) {
		t.Fatalf("stored:\n got %v\nwant %v", got, w)
	}
}

// Two streams of one instance (a reconnect racing the old stream's
// teardown) append each seq once.
func TestOverlappingStreamsOfOneInstance(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	id := pki.WorkloadID(t, "shop", "frontend")
	client := dial(t, c.Addr, pki.ClientTLS(t, id))
	var wg sync.WaitGroup
	for range 4 {
		st, _ := hello(t, client, "inst")
		wg.Go(func() {
			for from := uint64(1); from <= 200; from += 20 {
				if err := st.Send(&pb.EventBatch{Events: events("access", seqRange(from, from+19)...)}); err != nil {
					t.Error(err)
					return
				}
				if _, err := st.Recv(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, w := stored(t, c), want(id.String(), seqRange(1, 200)...); !equal(got, w) {
		t.Fatalf("stored %d records, want %d, each seq once in order:\n got %v", len(got), len(w), got)
	}
}

func TestAppendLocal(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	cp := identity.ControlPlaneID(pki.TrustDomain)
	ev := &pb.Event{Seq: 7, Kind: "resource.applied", Reporter: "spiffe://trellis.local/ns/shop/sa/frontend", Attributes: map[string]string{"kind": "AuthorizationPolicy"}}
	if err := c.AppendLocal(cp, ev); err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 7 || ev.Time != nil {
		t.Errorf("AppendLocal modified the caller's event: %v", ev)
	}
	recs := c.Records(t)
	if len(recs) != 1 {
		t.Fatalf("records: got %d, want 1", len(recs))
	}
	got := recs[0].Event
	if got.GetReporter() != cp.String() || got.GetSeq() != 0 || got.GetTime() == nil || got.GetAttributes()["kind"] != "AuthorizationPolicy" {
		t.Errorf("stored %v, want reporter %s, seq 0, a time and the attributes", got, cp)
	}
	if got := c.Metric(t, "trellis_collector_events_appended_total", "kind=resource.applied"); got != 1 {
		t.Errorf("appended{kind=resource.applied}: got %v, want 1", got)
	}
}

func TestAppendLocalNeedsReporter(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	if err := c.AppendLocal(identity.ControlPlaneID(pki.TrustDomain)); err != nil {
		t.Errorf("AppendLocal of no events: %v", err)
	}
	if err := c.AppendLocal(spiffeid.ID{}, &pb.Event{Kind: "token.created"}); err == nil || !strings.Contains(err.Error(), "no reporter") {
		t.Errorf("AppendLocal with a zero reporter: got %v, want an error naming the missing reporter", err)
	}
	if n := len(c.Records(t)); n != 0 {
		t.Errorf("records: got %d, want 0", n)
	}
}

// failingAppender fails its first n appends, then appends to memory.
type failingAppender struct {
	mu   sync.Mutex
	fail int
	evs  []*pb.Event
}

func (f *failingAppender) Append(evs ...*pb.Event) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return 0, errors.New("disk on fire")
	}
	f.evs = append(f.evs, evs...)
	return uint64(len(f.evs)), nil
}

var _ telemetry.Appender = (*failingAppender)(nil)

func TestAppendFailureIsUnavailableAndNotAcked(t *testing.T) {
	pki := collectortest.NewPKI(t)
	app := &failingAppender{fail: 1}
	c := pki.StartCollector(t, collectortest.Config{App: app})
	client := dial(t, c.Addr, pki.ClientTLS(t, pki.WorkloadID(t, "shop", "frontend")))
	st, _ := hello(t, client, "inst")
	if err := st.Send(&pb.EventBatch{Events: events("access", 1, 2)}); err != nil {
		t.Fatal(err)
	}
	_, err := st.Recv()
	if got := status.Code(err); got != codes.Unavailable {
		t.Fatalf("after a failed append: got %v (%v), want Unavailable", got, err)
	}
	if got := c.Metric(t, "trellis_collector_append_errors_total"); got != 1 {
		t.Errorf("append errors: got %v, want 1", got)
	}
	st, first := hello(t, client, "inst")
	if first != 0 {
		t.Fatalf("first ack after a failed append: got %d, want 0 (nothing stored)", first)
	}
	if got := send(t, st, events("access", 1, 2)...); got != 2 {
		t.Fatalf("ack of the resend: got %d, want 2", got)
	}
	if len(app.evs) != 2 {
		t.Errorf("appended: got %d events, want 2", len(app.evs))
	}
}

func TestCorruptStateIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "highwater.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := collector.New(&failingAppender{}, dir, testutil.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("New with a corrupt state file: got %v, want an error saying it is corrupt", err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := collector.New(nil, t.TempDir(), nil); err == nil {
		t.Error("New without an appender: got nil error")
	}
	if _, err := collector.New(&failingAppender{}, "", nil); err == nil {
		t.Error("New without a state dir: got nil error")
	}
}

func TestShutdownEndsStreamsAndCloseSavesMarks(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	client := dial(t, c.Addr, pki.ClientTLS(t, pki.WorkloadID(t, "shop", "frontend")))
	st, _ := hello(t, client, "inst")
	send(t, st, events("access", 1, 2, 3)...)

	c.Shutdown()
	if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("open stream after Shutdown: got %v, want Unavailable", err)
	}
	st2, err := client.Stream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = st2.Send(&pb.EventBatch{HelloInstance: "inst"})
	if _, err := st2.Recv(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("new stream after Shutdown: got %v, want Unavailable saying the collector is shutting down", err)
	}
	if err := c.Server.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(c.Config.StateDir, "highwater.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"instance":"inst","seq":3`) {
		t.Errorf("marks after Close: got %s, want instance inst at seq 3", data)
	}
}
