package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/telemetry/collector"
	"github.com/trellismesh/trellis/internal/telemetry/emitter"
	"github.com/trellismesh/trellis/internal/telemetry/pipeline"
)

// spoolDir holds control-plane events not yet acknowledged by an external
// collector.
const spoolDir = "telemetry-spool"

// audit is where control-plane events (resources, tokens, certificates)
// go. By default the control plane embeds the collector (pipe): the
// durable event log under DATA_DIR/events, the Telemetry gRPC service
// proxies stream to, and one Deliverer per --audit-sink. With
// --collector-addr it streams its events to that collector like a proxy
// does (events), spooled on disk while the collector is unreachable.
type audit struct {
	log    *slog.Logger
	clock  clock.Clock
	pipe   *pipeline.Pipeline
	events *emitter.Emitter
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// self is the control plane's identity, the reporter of its events.
	self spiffeid.ID
	// outbox, with replicas on etcd and an external collector, takes the
	// events first (outbox.go).
	outbox *outbox
}

// openAudit opens the embedded collector, or with cfg.CollectorAddr the
// emitter to the external one (roots and cert serve its mTLS).
func openAudit(cfg Config, self spiffeid.ID, roots func() *x509.CertPool, cert func() (*tls.Certificate, error)) (*audit, error) {
	a := &audit{log: cfg.Logger, clock: clock.Or(cfg.Clock), self: self}
	if cfg.CollectorAddr != "" {
		collectorTLS := identity.SystemServerTLS{
			TrustDomain: self.TrustDomain(),
			Accounts:    []string{identity.CollectorServiceAccount},
			Roots:       roots,
			Certificate: cert,
			Hint:        "is --collector-addr a collector of this mesh?",
		}
		ev, err := emitter.New(emitter.Options{
			Addr:     cfg.CollectorAddr,
			TLS:      collectorTLS.Config,
			SpoolDir: filepath.Join(cfg.DataDir, spoolDir),
			Logger:   cfg.Logger.With("component", "telemetry"),
			Clock:    cfg.Clock,
		})
		if err != nil {
			return nil, fmt.Errorf("telemetry spool: %w", err)
		}
		a.events = ev
		return a, nil
	}
	p, err := pipeline.Open(pipeline.Options{DataDir: cfg.DataDir, Sinks: cfg.AuditSinks, Logger: cfg.Logger, Clock: cfg.Clock})
	if err != nil {
		return nil, err
	}
	a.pipe = p
	p.Collector.SetLocalReporter(self.String())
	return a, nil
}

// collector is the embedded collector, nil with an external one.
func (a *audit) collector() *collector.Server {
	if a == nil || a.pipe == nil {
		return nil
	}
	return a.pipe.Collector
}

// graphHandler serves the service graph from the embedded collector, or
// says where the external one is.
func (s *Server) graphHandler() http.Handler {
	if s.audit.pipe != nil {
		return s.audit.pipe.GraphHandler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no service graph here: telemetry goes to the collector at %s (--collector-addr); ask its admin API, e.g. `trellis top --api http://COLLECTOR_API_ADDR --token-file COLLECTOR_DATA_DIR/admin.token`", s.cfg.CollectorAddr))
	})
}

// shapesHandler serves the learned request shapes from the embedded
// collector, or says where the external one is.
func (s *Server) shapesHandler() http.Handler {
	if s.audit.pipe != nil {
		return s.audit.pipe.ShapesHandler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no learned request shapes here: telemetry goes to the collector at %s (--collector-addr); ask its admin API (--api http://COLLECTOR_API_ADDR --token-file COLLECTOR_DATA_DIR/admin.token)", s.cfg.CollectorAddr))
	})
}

// alertsHandler serves the anomaly alerts of the embedded collector, or
// says where the external one is.
func (s *Server) alertsHandler() http.Handler {
	if s.audit.pipe != nil {
		return s.audit.pipe.AlertsHandler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no anomaly alerts here: telemetry goes to the collector at %s (--collector-addr); ask its admin API (--api http://COLLECTOR_API_ADDR --token-file COLLECTOR_DATA_DIR/admin.token)", s.cfg.CollectorAddr))
	})
}

// auditVerifyHandler checks the embedded collector's event log, or says
// where the external collector is.
func (s *Server) auditVerifyHandler() http.Handler {
	if s.audit.pipe != nil {
		return s.audit.pipe.AuditVerifyHandler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no event log here: telemetry goes to the collector at %s (--collector-addr); ask its admin API, e.g. `trellis audit verify --api http://COLLECTOR_API_ADDR --token-file COLLECTOR_DATA_DIR/admin.token`", s.cfg.CollectorAddr))
	})
}

// register adds the Telemetry service when the collector is embedded.
func (a *audit) register(r grpc.ServiceRegistrar) {
	if c := a.collector(); c != nil {
		c.Register(r)
	}
}

// start runs the deliverers, or the stream to the external collector.
func (a *audit) start() {
	if a.pipe != nil {
		a.pipe.Start()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.events.Run(ctx)
	}()
}

// shutdown ends the embedded collector's streams (before GracefulStop).
func (a *audit) shutdown() {
	if c := a.collector(); c != nil {
		c.Shutdown()
	}
}

// record appends one control-plane event; failures are logged, never
// returned to the API caller whose change already happened.
func (a *audit) record(ev *pb.Event) {
	if a == nil {
		return
	}
	if ev.Time == nil {
		ev.Time = timestamppb.New(a.clock.Now())
	}
	if a.outbox != nil && a.outbox.put(ev) {
		return
	}
	if a.events != nil {
		// The collector sets the reporter from this stream's certificate.
		a.events.Emit(ev)
		return
	}
	if err := a.pipe.Collector.AppendLocal(a.self, ev); err != nil {
		a.log.Error("audit event not recorded", "kind", ev.GetKind(), "err", err)
	}
}

func (a *audit) close() error {
	if a == nil {
		return nil
	}
	if a.events != nil {
		if a.cancel != nil {
			a.cancel()
		}
		a.wg.Wait()
		// Close spools what the collector has not acknowledged.
		return a.events.Close()
	}
	return a.pipe.Close()
}

// auditEventsHandler serves the newest records of the embedded
// collector's event log (the console's audit stream), or says where the
// external collector is.
func (s *Server) auditEventsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.audit.pipe == nil {
			writeError(w, http.StatusNotFound, fmt.Errorf("no event log here: telemetry goes to the collector at %s (--collector-addr)", s.cfg.CollectorAddr))
			return
		}
		q := r.URL.Query()
		limit := adminapi.MaxAuditEvents
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				writeError(w, http.StatusBadRequest, fmt.Errorf("audit events: limit %q: want a positive number", v))
				return
			}
			limit = min(n, adminapi.MaxAuditEvents)
		}
		var after uint64
		if v := q.Get("after"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("audit events: after %q: want a record index", v))
				return
			}
			after = n
		}
		log := s.audit.pipe.Events
		last := log.LastIndex()
		from := after + 1
		if last >= from && last-from+1 > uint64(limit) {
			from = last - uint64(limit) + 1
		}
		out := adminapi.AuditEventList{Events: []adminapi.AuditEvent{}, Last: last}
		if from <= last {
			recs, err := log.Read(from, limit)
			if err != nil {
				writeError(w, http.StatusInternalServerError, fmt.Errorf("audit events: %w", err))
				return
			}
			for _, rec := range recs {
				out.Events = append(out.Events, auditEventOf(rec.Index, rec.Event))
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func auditEventOf(index uint64, ev *pb.Event) adminapi.AuditEvent {
	ref := func(svc, ns, id string) string {
		if svc != "" {
			return svc + "." + ns
		}
		return id
	}
	return adminapi.AuditEvent{
		Index: index, Time: ev.GetTime().AsTime(), Kind: ev.GetKind(), Reporter: ev.GetReporter(),
		Source:      ref(ev.GetSourceService(), ev.GetSourceNamespace(), ev.GetSourceId()),
		Destination: ref(ev.GetDestinationService(), ev.GetDestinationNamespace(), ev.GetDestinationId()),
		Method:      ev.GetMethod(), Path: ev.GetPath(), Decision: ev.GetDecision(), Policy: ev.GetPolicy(), Attributes: ev.GetAttributes(),
	}
}
