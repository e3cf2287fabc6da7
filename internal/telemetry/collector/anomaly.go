package collector

import (
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry/anomaly"
)

// Anomalies returns the detector engine the proxies' reports feed.
func (s *Server) Anomalies() *anomaly.Engine {
	return s.anomaly
}

// SetAnomalyConfig changes the detectors' thresholds (the Mesh's
// spec.anomaly), keeping what they learned.
func (s *Server) SetAnomalyConfig(cfg anomaly.Config) {
	s.anomaly.SetConfig(cfg)
}

// SetLocalReporter names the collector's own events (anomaly alerts) in
// the event log: the control plane's SPIFFE ID when it embeds the
// collector, the collector's own otherwise.
func (s *Server) SetLocalReporter(id string) {
	s.mu.Lock()
	s.localReporter = id
	s.mu.Unlock()
}

// seedAnomalies teaches the engine the edges and shapes the collector
// already knows (persisted), so a restart does not take them for new.
func (s *Server) seedAnomalies() {
	for _, e := range s.shapes.Edges("") {
		for _, sh := range e.Shapes {
			s.anomaly.Seed(e.SourceService, e.SourceNamespace, e.Service, e.Namespace, sh.Method+" "+sh.Template, sh.FirstSeen)
		}
	}
}

// tickAnomalies closes the detectors' intervals until Shutdown.
func (s *Server) tickAnomalies() {
	defer close(s.ticked)
	for {
		t := time.NewTimer(s.anomaly.Config().Interval)
		select {
		case <-s.base.Done():
			t.Stop()
			return
		case now := <-t.C:
			s.anomaly.Tick(now)
			s.deliverAlerts()
		}
	}
}

// observeEvents shows the detectors the events they watch: certificates
// issued, with the peer address they went to.
func (s *Server) observeEvents(evs []*pb.Event) {
	seen := false
	for _, ev := range evs {
		if ev.GetKind() == "cert.issued" && ev.GetSourceId() != "" {
			s.anomaly.CertIssued(ev.GetSourceId(), ev.GetAttributes()["peer"], ev.GetTime().AsTime())
			seen = true
		}
	}
	if seen {
		s.deliverAlerts()
	}
}

// deliverAlerts counts, logs and appends to the event log (and so to
// every SIEM sink) the alerts raised since the last delivery.
func (s *Server) deliverAlerts() {
	alerts := s.anomaly.Drain()
	if len(alerts) == 0 {
		return
	}
	s.mu.Lock()
	reporter := s.localReporter
	s.mu.Unlock()
	if reporter == "" {
		reporter = "trellis-collector"
	}
	evs := make([]*pb.Event, 0, len(alerts))
	for _, a := range alerts {
		s.metrics.anomalies.WithLabelValues(a.Detector).Inc()
		s.log.Warn("anomaly", "detector", a.Detector, "severity", a.Severity, "principal", a.Principal, "service", a.Service, "detail", a.Detail, "explanation", a.Explanation)
		ev := &pb.Event{Kind: "anomaly." + a.Detector, Time: timestamppb.New(a.Started), Reporter: reporter, Reason: a.Explanation,
			Attributes: map[string]string{
				"detector": a.Detector, "severity": a.Severity, "principal": a.Principal, "service": a.Service, "detail": a.Detail,
				"baseline": fmtFloat(a.Baseline), "observed": fmtFloat(a.Observed), "threshold": fmtFloat(a.Threshold),
			}}
		if strings.HasPrefix(a.Principal, "spiffe://") {
			ev.SourceId = a.Principal
		} else if svc, ns, ok := strings.Cut(a.Principal, "."); ok {
			ev.SourceService, ev.SourceNamespace = svc, ns
		}
		if svc, ns, ok := strings.Cut(a.Service, "."); ok {
			ev.DestinationService, ev.DestinationNamespace = svc, ns
		}
		evs = append(evs, ev)
	}
	if _, err := s.app.Append(evs...); err != nil {
		s.metrics.appendErrors.Inc()
		s.log.Error("cannot append anomaly alerts to the event log; they stay in trellis alerts and the metrics", "alerts", len(evs), "err", err)
		return
	}
	for _, ev := range evs {
		s.metrics.kind(ev.GetKind()).appended.Inc()
	}
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }
