package collector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/telemetry"
	"github.com/trellismesh/trellis/internal/telemetry/anomaly"
	"github.com/trellismesh/trellis/internal/telemetry/graph"
	"github.com/trellismesh/trellis/internal/telemetry/shapes"
)

// minStatsGap is the shortest interval between two stats reports of one
// stream that both count (proxies refuse --stats-interval below 1s).
const minStatsGap = 900 * time.Millisecond

// maxInstanceLen bounds hello_instance (proxies send 16 hex digits).
const maxInstanceLen = 128

// Server receives event streams from proxies and appends them to the
// event log, and records their traffic counters in a service graph. It
// implements Telemetry.Stream (rules in telemetry.proto) and is a
// prometheus.Collector for its metrics and the graph's mesh-wide ones.
// Safe for concurrent use.
type Server struct {
	// statsGap is minStatsGap; tests shorten it.
	statsGap atomic.Int64
	app      telemetry.Appender
	log      *slog.Logger
	marks    *highWater
	metrics  *metrics
	graph    *graph.Graph
	shapes   *shapes.Store
	saved    chan struct{} // closed when the shapes saver has stopped
	anomaly  *anomaly.Engine
	ticked   chan struct{} // closed when the anomaly ticker has stopped
	// localReporter names the collector's own events (SetLocalReporter).
	localReporter string

	// base ends every stream on Shutdown; handlers counts running ones.
	base     context.Context
	shutdown context.CancelFunc
	mu       sync.Mutex
	down     bool
	handlers sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// errShuttingDown ends streams on Shutdown; proxies keep their events and
// reconnect.
var errShuttingDown = status.Error(codes.Unavailable, "collector shutting down; reconnect with backoff")

// New returns a Server appending to app, which must be safe for
// concurrent use (streams append in parallel). stateDir holds the
// per-instance high-water marks that make resent events drop as
// duplicates across collector restarts; it is created when missing and
// must belong to one Server at a time. Call Close when done.
func New(app telemetry.Appender, stateDir string, log *slog.Logger) (*Server, error) {
	if app == nil {
		return nil, errors.New("collector: no event log to append to")
	}
	if stateDir == "" {
		return nil, errors.New("collector: no state dir: set the collector's data dir")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{app: app, log: log, metrics: newMetrics(), graph: graph.New(graph.Options{})}
	s.statsGap.Store(int64(minStatsGap))
	s.base, s.shutdown = context.WithCancel(context.Background())
	marks, err := loadHighWater(stateDir, time.Now, func(err error) {
		log.Error("cannot persist telemetry high-water marks; a collector restart may duplicate resent events", "err", err)
	})
	if err != nil {
		return nil, err
	}
	s.marks = marks
	if s.shapes, err = shapes.Open(filepath.Join(stateDir, shapesFile), nil); err != nil {
		return nil, err
	}
	s.saved = make(chan struct{})
	go s.saveShapes()
	s.anomaly = anomaly.New(anomaly.Config{}, nil)
	s.seedAnomalies()
	s.ticked = make(chan struct{})
	go s.tickAnomalies()
	return s, nil
}

// shapesFile holds the learned request shapes in the state dir.
const shapesFile = "shapes.json"

// shapesSaveEvery is how often changed shapes are written to disk; the
// last ones are written on Close.
const shapesSaveEvery = 10 * time.Second

// saveShapes writes the shapes every shapesSaveEvery until Shutdown, then
// once more.
func (s *Server) saveShapes() {
	defer close(s.saved)
	t := time.NewTicker(shapesSaveEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.base.Done():
			if err := s.shapes.Save(); err != nil {
				s.log.Error("cannot save the learned request shapes", "err", err)
			}
			return
		}
		if err := s.shapes.Save(); err != nil {
			s.log.Error("cannot save the learned request shapes; they are kept in memory and retried", "err", err)
		}
	}
}

// Shapes returns the request shapes learned from the proxies' reports.
func (s *Server) Shapes() *shapes.Store {
	return s.shapes
}

// Graph returns the service graph the proxies' traffic counters feed.
// Its metrics are the Server's: register the Server, not the Graph.
func (s *Server) Graph() *graph.Graph {
	return s.graph
}

// Register adds the Telemetry service to a gRPC server. The server's TLS
// configuration must request client certificates and verify them against
// the mesh roots (tls.VerifyClientCertIfGiven is enough: streams without
// a verified certificate are refused here).
func (s *Server) Register(r grpc.ServiceRegistrar) {
	pb.RegisterTelemetryServer(r, &telemetryService{s: s})
}

// Shutdown ends every open stream (after the batch it is appending, if
// any) with Unavailable and refuses new ones, so that a GracefulStop of
// the gRPC server need not wait for proxies to hang up. It does not wait;
// Close does.
func (s *Server) Shutdown() {
	s.mu.Lock()
	s.down = true
	s.mu.Unlock()
	s.shutdown()
}

// Close shuts down (see Shutdown), waits for the stream handlers to
// return, and writes the high-water marks a last time, so that a restart
// drops every resend of what was appended. A handler blocked sending an
// ack to a proxy that stopped reading returns only when its connection
// closes: stop the gRPC server before Close. AppendLocal still works
// after Close. Calling it again returns the first result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.Shutdown()
		s.handlers.Wait()
		<-s.saved
		<-s.ticked
		s.closeErr = s.marks.close()
	})
	return s.closeErr
}

// AppendLocal appends events the collector's own process makes (control
// plane events) with one Append call, reporter set to reporter (the
// control plane's SPIFFE ID) and seq to 0, since the log numbers them. A
// missing time is set to now. The events are copied; the caller keeps
// ownership.
func (s *Server) AppendLocal(reporter spiffeid.ID, events ...*pb.Event) error {
	if reporter.IsZero() {
		return errors.New("collector: append local events: no reporter; pass the control plane's SPIFFE ID")
	}
	if len(events) == 0 {
		return nil
	}
	now := timestamppb.Now()
	evs := make([]*pb.Event, len(events))
	for i, ev := range events {
		c := proto.Clone(ev).(*pb.Event)
		c.Seq = 0
		c.Reporter = reporter.String()
		if c.Time == nil {
			c.Time = now
		}
		evs[i] = c
	}
	if _, err := s.app.Append(evs...); err != nil {
		s.metrics.appendErrors.Inc()
		return fmt.Errorf("collector: append local events: %w", err)
	}
	for _, ev := range evs {
		s.metrics.kind(ev.GetKind()).appended.Inc()
	}
	s.observeEvents(evs)
	return nil
}

// Describe implements prometheus.Collector.
func (s *Server) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.metrics.collectors() {
		c.Describe(ch)
	}
	s.graph.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Server) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.metrics.collectors() {
		c.Collect(ch)
	}
	s.graph.Collect(ch)
}

// telemetryService keeps the generated server plumbing off Server's API.
type telemetryService struct {
	pb.UnimplementedTelemetryServer
	s *Server
}

func (t *telemetryService) Stream(stream pb.Telemetry_StreamServer) error {
	err := t.s.stream(stream)
	if code := status.Code(err); code != codes.OK && code != codes.Canceled {
		t.s.metrics.refused.WithLabelValues(code.String()).Inc()
	}
	return err
}

func (s *Server) stream(stream pb.Telemetry_StreamServer) error {
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		return errShuttingDown
	}
	s.handlers.Add(1)
	s.mu.Unlock()
	defer s.handlers.Done()

	ctx := stream.Context()
	reporter, err := peerID(ctx)
	if err != nil {
		s.log.Warn("telemetry stream refused", "err", err, "peer", peerAddr(ctx))
		return err
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "telemetry stream closed before hello")
	}
	if err != nil {
		return err
	}
	instance := first.GetHelloInstance()
	if err := checkInstance(instance); err != nil {
		s.log.Warn("telemetry stream refused", "err", err, "spiffe_id", reporter, "peer", peerAddr(ctx))
		return err
	}
	log := s.log.With("spiffe_id", reporter, "instance", instance)
	st := s.marks.acquire(instanceKey{reporter: reporter, instance: instance})
	defer s.marks.release(st)
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()

	// The first ack tells the proxy what is already stored, so it skips it.
	through := st.seq.Load()
	if err := stream.Send(&pb.EventAck{Through: through}); err != nil {
		return err
	}
	log.Debug("telemetry stream open", "through", through, "peer", peerAddr(ctx))

	// Receive on a goroutine of its own so that Shutdown can end the
	// stream between batches. When this handler returns, gRPC ends the
	// stream and the pending Recv returns.
	batches := make(chan *pb.EventBatch)
	recvErr := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			b, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case batches <- b:
			case <-done:
				return
			}
		}
	}()
	// Stats on the hello batch count like any other. Proxies send them
	// every few seconds (at least 1s apart): faster ones are dropped
	// unread, so a stream cannot keep the graph busy.
	var warned bool
	var lastStats time.Time
	batch := first
	for {
		if stats := batch.GetStats(); stats != nil {
			if now := time.Now(); now.Sub(lastStats) >= time.Duration(s.statsGap.Load()) {
				lastStats = now
				s.recordStats(ctx, reporter, instance, stats, &warned, log)
			} else {
				s.metrics.statsRejected.WithLabelValues(rejectTooFrequent).Inc()
			}
		}
		if len(batch.GetEvents()) > 0 {
			through, err := s.appendBatch(st, reporter, instance, batch.GetEvents(), log)
			if err != nil {
				return err
			}
			if err := stream.Send(&pb.EventAck{Through: through}); err != nil {
				return err
			}
		}
		select {
		case batch = <-batches:
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				log.Debug("telemetry stream closed by the proxy")
				return nil
			}
			return err
		case <-s.base.Done():
			return errShuttingDown
		}
		if batch.GetHelloInstance() != "" {
			return status.Error(codes.InvalidArgument, "hello_instance may only be set on the first batch; open a new stream to say hello again")
		}
	}
}

// recordStats records a batch's traffic counters in the graph. A refused
// report leaves the stream open: counters are cumulative, so the next
// good one makes up for it. Only the stream's first refusal is a warning.
func (s *Server) recordStats(ctx context.Context, reporter, instance string, stats *pb.TrafficStats, warned *bool, log *slog.Logger) {
	err := graph.CheckBinding(reporter, stats)
	if err == nil {
		err = s.graph.Record(reporter, instance, stats)
	}
	if err == nil {
		s.shapes.Record(instance, stats)
		s.anomaly.Record(instance, stats, time.Now())
		s.deliverAlerts()
		s.metrics.statsReports.Inc()
		return
	}
	reason := rejectInvalid
	if errors.Is(err, graph.ErrTooManyInstances) {
		reason = rejectTooManyInstances
	}
	s.metrics.statsRejected.WithLabelValues(reason).Inc()
	level := slog.LevelDebug
	if !*warned {
		level, *warned = slog.LevelWarn, true
	}
	log.Log(ctx, level, "traffic stats refused; later refusals on this stream log at debug", "err", err)
}

// appendBatch appends the events of one batch not yet in the log, with
// the stream's identity as reporter and its hello_instance as instance,
// and returns the new high-water mark.
func (s *Server) appendBatch(st *instanceState, reporter, instance string, events []*pb.Event, log *slog.Logger) (uint64, error) {
	var prev uint64
	for _, ev := range events {
		seq := ev.GetSeq()
		if seq == 0 {
			return 0, status.Error(codes.InvalidArgument, "event with seq 0: proxy sequence numbers start at 1")
		}
		if seq <= prev {
			return 0, status.Errorf(codes.InvalidArgument, "seq %d follows seq %d in one batch: sequence numbers must grow", seq, prev)
		}
		prev = seq
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	hw := st.seq.Load()
	last := hw
	var gaps uint64
	keep := make([]*pb.Event, 0, len(events))
	for _, ev := range events {
		kc := s.metrics.kind(ev.GetKind())
		kc.received.Inc()
		if ev.Seq <= last {
			kc.duplicates.Inc()
			continue
		}
		// With no mark (a new instance, or lost collector state) a first
		// seq above 1 is not known to be a gap.
		if last > 0 && ev.Seq > last+1 {
			gaps += ev.Seq - last - 1
		}
		ev.Reporter = reporter
		ev.Instance = instance
		keep = append(keep, ev)
		last = ev.Seq
	}
	if gaps > 0 {
		s.metrics.gaps.Add(float64(gaps))
		log.Warn("proxy skipped sequence numbers: it dropped events (see its trellis_telemetry_events_dropped_total) or lost them in a crash", "missing", gaps, "through", last)
	}
	if len(keep) == 0 {
		return hw, nil
	}
	if _, err := s.app.Append(keep...); err != nil {
		s.metrics.appendErrors.Inc()
		log.Error("cannot append events to the log; the proxy will resend them", "events", len(keep), "err", err)
		return 0, status.Errorf(codes.Unavailable, "append to event log: %v; resend after reconnecting", err)
	}
	st.seq.Store(last)
	s.marks.changed()
	for _, ev := range keep {
		s.metrics.kind(ev.GetKind()).appended.Inc()
	}
	s.observeEvents(keep)
	return last, nil
}

// peerID returns the SPIFFE ID in the stream's verified client
// certificate: the stream and everything it reports are bound to it.
func peerID(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	var info credentials.TLSInfo
	if ok {
		info, ok = p.AuthInfo.(credentials.TLSInfo)
	}
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", status.Error(codes.Unauthenticated, "telemetry stream needs a client certificate: connect with the workload certificate")
	}
	id, err := identity.SPIFFEIDFromCert(info.State.VerifiedChains[0][0])
	if err != nil {
		return "", status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	return id.String(), nil
}

func checkInstance(instance string) error {
	if instance == "" {
		return status.Error(codes.InvalidArgument, "the first batch on a telemetry stream must set hello_instance (the proxy instance id)")
	}
	if len(instance) > maxInstanceLen {
		return status.Errorf(codes.InvalidArgument, "hello_instance is %d bytes; at most %d allowed", len(instance), maxInstanceLen)
	}
	for _, r := range instance {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return status.Errorf(codes.InvalidArgument, "hello_instance %q: only printable characters without spaces are allowed", instance)
		}
	}
	return nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
