package emitter_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/telemetry"
	"github.com/trellismesh/trellis/internal/telemetry/collector/collectortest"
	"github.com/trellismesh/trellis/internal/telemetry/emitter"
	"github.com/trellismesh/trellis/internal/testutil"
)

// proxy is an emitter as a proxy runs it: with a workload certificate,
// delivering in the background.
type proxy struct {
	*emitter.Emitter
	ID  spiffeid.ID
	reg *prometheus.Registry
}

// startProxy creates an emitter for workload shop/frontend reporting to
// addr and runs it until the test ends (or Close).
func startProxy(t testing.TB, pki *collectortest.PKI, addr string, opts emitter.Options) *proxy {
	t.Helper()
	p := newProxy(t, pki, addr, opts)
	p.run(t)
	return p
}

func newProxy(t testing.TB, pki *collectortest.PKI, addr string, opts emitter.Options) *proxy {
	t.Helper()
	id := pki.WorkloadID(t, "shop", "frontend")
	opts.Addr = addr
	if opts.TLS == nil {
		opts.TLS = pki.ClientTLS(t, id)
	}
	if opts.Logger == nil {
		opts.Logger = testutil.Logger(t)
	}
	em, err := emitter.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	emitter.SetTimings(em, 20*time.Millisecond, 200*time.Millisecond, 20*time.Millisecond)
	reg := prometheus.NewRegistry()
	reg.MustRegister(em)
	t.Cleanup(func() {
		if err := em.Close(); err != nil {
			t.Errorf("close emitter: %v", err)
		}
	})
	return &proxy{Emitter: em, ID: id, reg: reg}
}

func (p *proxy) run(t testing.TB) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(context.Background())
	}()
	t.Cleanup(func() {
		p.Close()
		<-done
	})
}

func (p *proxy) flush(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v (stats %+v)", err, p.Stats())
	}
}

func (p *proxy) metric(t testing.TB, name string, match ...string) float64 {
	t.Helper()
	return collectortest.GatherValue(t, p.reg, name, match...)
}

var kinds = []string{"authz.deny", "authz.audit_would_deny", "cert.renewed", "access"}

var eventTime = timestamppb.New(time.Unix(1700000000, 0))

func event(i int) *pb.Event {
	return &pb.Event{
		Time: eventTime, Kind: kinds[i%len(kinds)],
		SourceId: "spiffe://trellis.local/ns/shop/sa/frontend", DestinationId: "spiffe://trellis.local/ns/shop/sa/catalog",
		DestinationService: "catalog", DestinationNamespace: "shop", Protocol: "http", Method: "GET",
		Path: fmt.Sprintf("/items/%d", i), ResponseCode: 403, Decision: "deny", Policy: "shop/deny-writes", Rule: 0,
	}
}

// emitPaced emits events [from, to), each once the memory queue holds at
// most max, so a test that must not drop does not outrun the spool writer.
func emitPaced(t testing.TB, p *proxy, from, to int, max int64) {
	t.Helper()
	for i := from; i < to; i++ {
		testutil.Eventually(t, fmt.Sprintf("queue <= %d", max), func() bool { return p.Stats().Queued <= max })
		p.Emit(event(i))
	}
}

// seqsOf returns the seqs the log holds for reporter, in log order.
func seqsOf(recs []telemetry.Record, reporter spiffeid.ID) []uint64 {
	var out []uint64
	for _, r := range recs {
		if r.Event.GetReporter() == reporter.String() {
			out = append(out, r.Event.GetSeq())
		}
	}
	return out
}

// checkExactlyOnce fails unless seqs is exactly from..to in order.
func checkExactlyOnce(t testing.TB, seqs []uint64, from, to uint64) {
	t.Helper()
	if uint64(len(seqs)) != to-from+1 {
		t.Fatalf("log holds %d events, want %d (seq %d..%d once each); first problems: %s", len(seqs), to-from+1, from, to, seqProblems(seqs, from, to))
	}
	for i, s := range seqs {
		if s != from+uint64(i) {
			t.Fatalf("log position %d holds seq %d, want %d; problems: %s", i, s, from+uint64(i), seqProblems(seqs, from, to))
		}
	}
}

func seqProblems(seqs []uint64, from, to uint64) string {
	count := map[uint64]int{}
	for _, s := range seqs {
		count[s]++
	}
	var p []string
	for s := from; s <= to && len(p) < 10; s++ {
		switch count[s] {
		case 0:
			p = append(p, fmt.Sprintf("%d missing", s))
		case 1:
		default:
			p = append(p, fmt.Sprintf("%d x%d", s, count[s]))
		}
	}
	return strings.Join(p, ", ")
}

// freeAddr is a loopback address nothing listens on (yet).
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestEndToEnd(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	p := startProxy(t, pki, c.Addr, emitter.Options{Instance: "inst-e2e"})
	const n = 2000
	for i := range n {
		ev := event(i)
		ev.Reporter = "spiffe://trellis.local/ns/trellis-system/sa/control" // forged; the collector overwrites it
		if i == 7 {
			ev.Path = "/bad\xffutf8"
		}
		p.Emit(ev)
	}
	p.flush(t)

	recs := c.Records(t)
	checkExactlyOnce(t, seqsOf(recs, p.ID), 1, n)
	for i, r := range recs {
		if got, want := r.Event.GetKind(), kinds[i%len(kinds)]; got != want {
			t.Fatalf("record %d kind: got %q, want %q", i, got, want)
		}
	}
	if got := recs[7].Event.GetPath(); got != "/bad\uFFFDutf8" {
		t.Errorf("invalid UTF-8 path: got %q, want it repaired to %q", got, "/bad\uFFFDutf8")
	}
	if got := recs[8].Event.GetPath(); got != "/items/8" {
		t.Errorf("record 8 path: got %q, want /items/8", got)
	}
	st := p.Stats()
	if st.Emitted != n || st.Acked != n || st.Dropped != 0 || st.Queued != 0 || !st.Connected {
		t.Errorf("stats: got %+v, want %d emitted and acked, none dropped or queued, connected", st, n)
	}
	for _, m := range []struct {
		name string
		want float64
	}{
		{"trellis_telemetry_events_emitted_total", n},
		{"trellis_telemetry_events_acked_total", n},
		{"trellis_telemetry_events_dropped_total", 0},
		{"trellis_telemetry_stream_up", 1},
	} {
		if got := p.metric(t, m.name); got != m.want {
			t.Errorf("%s: got %v, want %v", m.name, got, m.want)
		}
	}
	if got := c.Metric(t, "trellis_collector_events_appended_total", "kind=authz.deny"); got != n/4 {
		t.Errorf("collector appended{kind=authz.deny}: got %v, want %d", got, n/4)
	}
}

// Restarting the collector under traffic loses nothing; a graceful stop
// saves the high-water marks, so nothing is duplicated either.
func TestCollectorRestartUnderTraffic(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	p := startProxy(t, pki, c.Addr, emitter.Options{})
	const n = 6000
	var wg sync.WaitGroup
	emitted := make(chan int, n)
	wg.Go(func() {
		for i := range n {
			p.Emit(event(i))
			emitted <- i
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	for k, at := range []int{1500, 3500} {
		for i := range emitted {
			if i >= at {
				break
			}
		}
		c = c.Restart(t)
		// The next restart waits for the proxy to be back on this one
		// (on a loaded machine both could pass before it reconnects).
		testutil.Eventually(t, "the proxy reconnects after a collector restart", func() bool {
			return p.metric(t, "trellis_telemetry_stream_connects_total") >= float64(k+2)
		})
	}
	wg.Wait()
	p.flush(t)
	checkExactlyOnce(t, seqsOf(c.Records(t), p.ID), 1, n)
	if d := p.Dropped(); d != 0 {
		t.Errorf("dropped: got %d, want 0", d)
	}
	if got := p.metric(t, "trellis_telemetry_stream_connects_total"); got < 3 {
		t.Errorf("stream connects: got %v, want at least 3 (two collector restarts)", got)
	}
}

// A proxy restart with a spool resends what was not acknowledged and
// continues the sequence.
func TestProxyRestartResumesSequence(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	spool := filepath.Join(t.TempDir(), "spool")
	p := startProxy(t, pki, c.Addr, emitter.Options{SpoolDir: spool, Instance: "first"})
	emitPaced(t, p, 0, 100, 1000)
	p.flush(t)
	c.Stop(t)
	emitPaced(t, p, 100, 200, 1000) // in memory, unacknowledged
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	p2 := newProxy(t, pki, c.Addr, emitter.Options{SpoolDir: spool, Instance: "second"})
	if got := p2.Instance(); got != "first" {
		t.Errorf("instance after restart: got %q, want the spool's %q", got, "first")
	}
	ev := event(200)
	p2.Emit(ev)
	if ev.GetSeq() != 201 {
		t.Errorf("first seq after restart: got %d, want 201", ev.GetSeq())
	}
	emitPaced(t, p2, 201, 250, 1000)
	c = c.Restart(t)
	p2.run(t)
	p2.flush(t)
	checkExactlyOnce(t, seqsOf(c.Records(t), p.ID), 1, 250)
	if d := p.Dropped() + p2.Dropped(); d != 0 {
		t.Errorf("dropped: got %d, want 0", d)
	}
}

// blockingAppender stands for a collector whose log is stuck: Append
// waits until release, then fails. Stopping its collector waits for
// Append to return, so it must be released first: startStuckCollector
// arranges that at cleanup.
type blockingAppender struct {
	release chan struct{}
	once    sync.Once
}

func newBlockingAppender() *blockingAppender {
	return &blockingAppender{release: make(chan struct{})}
}

// startStuckCollector starts a collector with a blockingAppender.
func startStuckCollector(t testing.TB, pki *collectortest.PKI, cfg collectortest.Config) (*collectortest.Collector, *blockingAppender) {
	t.Helper()
	stuck := newBlockingAppender()
	cfg.App = stuck
	c := pki.StartCollector(t, cfg)
	t.Cleanup(stuck.unblock) // runs before the collector's Stop
	return c, stuck
}

func (b *blockingAppender) Append(...*pb.Event) (uint64, error) {
	<-b.release
	return 0, fmt.Errorf("log unavailable")
}

func (b *blockingAppender) unblock() { b.once.Do(func() { close(b.release) }) }

// Events in flight (sent, never acknowledged), in the spool and in
// memory when a proxy stops all come back, in order, after its restart.
func TestProxyRestartWithEventsInFlight(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c, stuck := startStuckCollector(t, pki, collectortest.Config{})
	spool := filepath.Join(t.TempDir(), "spool")
	p := startProxy(t, pki, c.Addr, emitter.Options{SpoolDir: spool, MemoryLimit: 400})
	emitPaced(t, p, 0, 1000, 300)
	testutil.Eventually(t, "a full window in flight", func() bool { return p.Stats().Queued >= 100 })
	st := p.Stats()
	if st.Spooled == 0 || st.Acked != 0 {
		t.Fatalf("stats before restart: got %+v, want events spooled and none acked", st)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	stuck.unblock()
	c.Stop(t)

	c = pki.StartCollector(t, collectortest.Config{Addr: c.Addr})
	p2 := startProxy(t, pki, c.Addr, emitter.Options{SpoolDir: spool, MemoryLimit: 400})
	p2.flush(t)
	checkExactlyOnce(t, seqsOf(c.Records(t), p.ID), 1, 1000)
	if d := p.Dropped() + p2.Dropped(); d != 0 {
		t.Errorf("dropped: got %d, want 0", d)
	}
	testutil.Eventually(t, "the spool to empty", func() bool { return p2.Stats().SpoolBytes == 0 })
}

// While the collector is away events wait in memory, then on disk, and
// all arrive once it is back.
func TestCollectorDownSpillsToDisk(t *testing.T) {
	pki := collectortest.NewPKI(t)
	addr := freeAddr(t)
	spool := filepath.Join(t.TempDir(), "spool")
	p := startProxy(t, pki, addr, emitter.Options{SpoolDir: spool, MemoryLimit: 100})
	const n = 3000
	emitPaced(t, p, 0, n, 70)
	st := p.Stats()
	if st.Spooled < n-100 || st.SpoolBytes == 0 || st.Dropped != 0 || st.Connected {
		t.Fatalf("stats while the collector is down: got %+v, want at least %d spooled, none dropped, not connected", st, n-100)
	}
	segs, _ := filepath.Glob(filepath.Join(spool, "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no spool segments on disk while the collector is down")
	}

	c := pki.StartCollector(t, collectortest.Config{Addr: addr})
	p.flush(t)
	checkExactlyOnce(t, seqsOf(c.Records(t), p.ID), 1, n)
	testutil.Eventually(t, "acknowledged segments to be deleted", func() bool {
		segs, _ := filepath.Glob(filepath.Join(spool, "*.seg"))
		return len(segs) == 0 && p.Stats().SpoolBytes == 0
	})
	if got, want := p.metric(t, "trellis_telemetry_events_spooled_total"), p.Stats().Spooled; got != float64(want) || want < st.Spooled {
		t.Errorf("spooled metric: got %v, want %d (and at least the %d spooled while down)", got, want, st.Spooled)
	}
}

// With memory and spool full, events are dropped and counted; the
// collector sees the drops as sequence gaps.
func TestSpoolFullDropsAndCounts(t *testing.T) {
	pki := collectortest.NewPKI(t)
	addr := freeAddr(t)
	const limit = 16 << 10
	p := startProxy(t, pki, addr, emitter.Options{SpoolDir: t.TempDir(), MemoryLimit: 40, SpoolLimitBytes: limit})
	const n = 3000
	var maxSpool int64
	for i := range n {
		p.Emit(event(i))
		if i%20 == 0 {
			time.Sleep(100 * time.Microsecond)
			maxSpool = max(maxSpool, p.Stats().SpoolBytes)
		}
	}
	st := p.Stats()
	if st.Dropped == 0 || st.Emitted != n || st.Spooled == 0 {
		t.Fatalf("stats: got %+v, want %d emitted, some spooled and some dropped", st, n)
	}
	if maxSpool > limit {
		t.Errorf("spool grew to %d bytes, over its %d limit", maxSpool, limit)
	}
	if got := p.metric(t, "trellis_telemetry_events_dropped_total", "reason=queue_full"); got != float64(st.Dropped) {
		t.Errorf("dropped metric{reason=queue_full}: got %v, want %d", got, st.Dropped)
	}

	c := pki.StartCollector(t, collectortest.Config{Addr: addr})
	p.flush(t)
	seqs := seqsOf(c.Records(t), p.ID)
	if got, want := uint64(len(seqs)), n-st.Dropped; got != want {
		t.Fatalf("delivered %d events, want %d emitted - %d dropped = %d", got, n, st.Dropped, want)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("seq %d after %d: delivery out of order or duplicated", seqs[i], seqs[i-1])
		}
	}
	last := seqs[len(seqs)-1]
	if gaps := c.Metric(t, "trellis_collector_seq_gaps_total"); gaps != float64(last-uint64(len(seqs))) {
		t.Errorf("collector gaps: got %v, want %d (seqs below %d never delivered)", gaps, last-uint64(len(seqs)), last)
	}
	if got := p.Dropped(); got != st.Dropped {
		t.Errorf("dropped after delivery: got %d, want still %d", got, st.Dropped)
	}
}

func TestMemoryOnlyCloseCountsLostEvents(t *testing.T) {
	pki := collectortest.NewPKI(t)
	p := startProxy(t, pki, freeAddr(t), emitter.Options{})
	for i := range 10 {
		p.Emit(event(i))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := p.Dropped(); got != 10 {
		t.Errorf("dropped after closing with 10 unacknowledged events and no spool: got %d, want 10", got)
	}
	p.Emit(event(10))
	if got := p.Dropped(); got != 11 {
		t.Errorf("dropped after an Emit after Close: got %d, want 11", got)
	}
	if got := p.metric(t, "trellis_telemetry_events_dropped_total", "reason=shutdown"); got != 11 {
		t.Errorf("dropped metric{reason=shutdown}: got %v, want 11", got)
	}
}

func TestSpoolBelongsToOneEmitter(t *testing.T) {
	pki := collectortest.NewPKI(t)
	spool := t.TempDir()
	newProxy(t, pki, freeAddr(t), emitter.Options{SpoolDir: spool})
	_, err := emitter.New(emitter.Options{Addr: "127.0.0.1:1", TLS: pki.AnonymousTLS(), SpoolDir: spool})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second emitter on one spool: got %v, want an error saying it is in use", err)
	}
}

func TestNewValidates(t *testing.T) {
	tlsCfg := collectortest.NewPKI(t).AnonymousTLS()
	for _, tt := range []struct {
		name string
		opts emitter.Options
		msg  string
	}{
		{"no address", emitter.Options{TLS: tlsCfg}, "no collector address"},
		{"no tls", emitter.Options{Addr: "127.0.0.1:1"}, "no TLS"},
		{"bad instance", emitter.Options{Addr: "127.0.0.1:1", TLS: tlsCfg, Instance: "a b"}, "printable"},
		{"negative memory", emitter.Options{Addr: "127.0.0.1:1", TLS: tlsCfg, MemoryLimit: -1}, "negative"},
		{"corrupt spool state", emitter.Options{Addr: "127.0.0.1:1", TLS: tlsCfg, SpoolDir: corruptSpool(t)}, "corrupt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := emitter.New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want an error containing %q", err, tt.msg)
			}
		})
	}
}

func corruptSpool(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A proxy without a workload certificate delivers nothing; it retries
// after a backoff on its clock.
func TestNoClientCertificateDeliversNothing(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	clk := clock.NewFake(time.Now())
	p := startProxy(t, pki, c.Addr, emitter.Options{TLS: pki.AnonymousTLS(), Clock: clk})
	p.Emit(event(0))
	refused := func(n float64) func() bool {
		return func() bool {
			return c.Metric(t, "trellis_collector_streams_refused_total", "code=Unauthenticated") >= n
		}
	}
	testutil.Eventually(t, "the collector to refuse a stream", refused(1))
	clk.BlockUntil(1)        // the backoff before the retry
	clk.Advance(time.Minute) // past the longest backoff
	testutil.Eventually(t, "the collector to refuse the retry", refused(2))
	if st := p.Stats(); st.Acked != 0 || st.Queued != 1 || st.Connected {
		t.Errorf("stats: got %+v, want nothing acked, the event still queued, not connected", st)
	}
	if n := len(c.Records(t)); n != 0 {
		t.Errorf("records: got %d, want 0", n)
	}
}

// The spool's upkeep runs on the emitter's clock: the acked mark reaches
// the spool's state file (so a restart resends less) on its next tick.
func TestSpoolStateSavedOnTick(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	spool := filepath.Join(t.TempDir(), "spool")
	clk := clock.NewFake(time.Now())
	p := startProxy(t, pki, c.Addr, emitter.Options{SpoolDir: spool, Clock: clk})
	for i := range 10 {
		p.Emit(event(i))
	}
	p.flush(t)
	// Nothing went through the spool, so no segment was deleted to save
	// the mark with.
	if got := spoolAcked(t, spool); got != 0 {
		t.Fatalf("acked mark before the upkeep tick: got %d, want 0", got)
	}
	testutil.Eventually(t, "the acked mark in the spool state", func() bool {
		clk.Advance(time.Second)
		return spoolAcked(t, spool) == 10
	})
}

// spoolAcked is the acked mark in dir's state file.
func spoolAcked(t testing.TB, dir string) uint64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Acked uint64 `json:"acked"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("spool state %s: %v", data, err)
	}
	return st.Acked
}
