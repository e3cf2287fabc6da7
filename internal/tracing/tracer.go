package tracing

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// Attribute keys of the spans (docs/tracing.md).
const (
	AttrSource      = "trellis.source.spiffe_id"
	AttrDestination = "trellis.destination.spiffe_id"
	AttrDecision    = "trellis.policy.decision" // allow, deny, audit
	AttrPolicy      = "trellis.policy.name"
	AttrRoute       = "trellis.route.name"
	AttrRouteRule   = "trellis.route.rule"
	AttrService     = "trellis.destination.service"
)

// Tracer makes the spans of one tracing configuration. A nil *Tracer
// traces nothing. It is safe for concurrent use.
type Tracer struct {
	cfg meshconfig.Tracing
	tp  *sdktrace.TracerProvider
	tr  trace.Tracer
}

// Sample decides whether a request with the caller's context p is
// traced: the caller's decision when it made one, else the root rate.
func (t *Tracer) Sample(p *Parent) bool {
	if t == nil {
		return false
	}
	if p.Decided {
		return p.Sampled
	}
	return t.cfg.Rate > 0 && (t.cfg.Rate >= 1 || rand.Float64() < t.cfg.Rate)
}

// Kind of span: a proxy is the client of the hop it sends on (outbound,
// gateway) and the server of the one it receives (inbound).
type Kind uint8

// Kinds.
const (
	Client Kind = iota
	Server
)

// Start starts the span of a sampled request (see Sample), child of p
// when p has ids, a new trace's root otherwise; h is the request's
// header (a caller that sent B3 headers gets b3 from the span). A nil
// Tracer gives a zero Span, which does nothing.
func (t *Tracer) Start(kind Kind, name string, p *Parent, h Header, start time.Time) Span {
	if t == nil {
		return Span{}
	}
	ctx := context.Background()
	if p.HasIDs {
		ctx = trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: p.TraceID, SpanID: p.SpanID, TraceFlags: trace.FlagsSampled, Remote: true,
		}))
	}
	k := trace.SpanKindClient
	if kind == Server {
		k = trace.SpanKindServer
	}
	_, s := t.tr.Start(ctx, name, trace.WithSpanKind(k), trace.WithTimestamp(start))
	b3 := p.Format == FormatB3 || p.Format == FormatB3Multi || h.Get("B3") != "" || h.Get("X-B3-Traceid") != ""
	return Span{s: s, b3: b3}
}

// Span is a started span; the zero Span does nothing.
type Span struct {
	s  trace.Span
	b3 bool
}

// Recording reports whether the span is real.
func (s Span) Recording() bool { return s.s != nil }

// Traceparent is the traceparent the next hop gets: the span as parent.
func (s Span) Traceparent() string {
	sc := s.s.SpanContext()
	return Traceparent(sc.TraceID(), sc.SpanID(), true)
}

// B3 is the b3 single header the next hop gets when the caller sent B3
// headers (its multi headers are replaced by it), or "".
func (s Span) B3() string {
	if !s.b3 {
		return ""
	}
	sc := s.s.SpanContext()
	return B3(sc.TraceID(), sc.SpanID(), true)
}

// TraceID is the span's trace id in hex.
func (s Span) TraceID() string { return s.s.SpanContext().TraceID().String() }

// Attrs are what a span records; empty fields are left out.
type Attrs struct {
	Source, Destination string
	// Service is the destination service ("name.namespace").
	Service string
	// Authorized: the inbound's authorization ran, with Allow, Policy
	// and AuditDenied its outcome.
	Authorized  bool
	Allow       bool
	Policy      string
	AuditDenied string
	// Route is the Route ("namespace/name") whose rule RouteRule took
	// the request (-1: its spec.unmatched).
	Route     string
	RouteRule int
	Method    string
	Path      string
	Authority string
	Status    int
	// GRPCStatus is the call's grpc-status, -1 without one.
	GRPCStatus int
	Err        string
}

// End records a and ends the span at end.
func (s Span) End(a *Attrs, end time.Time) {
	if s.s == nil {
		return
	}
	kv := make([]attribute.KeyValue, 0, 12)
	str := func(k, v string) {
		if v != "" {
			kv = append(kv, attribute.String(k, v))
		}
	}
	str(AttrSource, a.Source)
	str(AttrDestination, a.Destination)
	str(AttrService, a.Service)
	if a.Authorized {
		d, pol := "allow", a.Policy
		switch {
		case !a.Allow:
			d = "deny"
		case a.AuditDenied != "":
			d, pol = "audit", a.AuditDenied
		}
		str(AttrDecision, d)
		str(AttrPolicy, pol)
	}
	if a.Route != "" {
		str(AttrRoute, a.Route)
		kv = append(kv, attribute.Int(AttrRouteRule, a.RouteRule))
	}
	str("http.request.method", a.Method)
	str("url.path", a.Path)
	str("server.address", a.Authority)
	if a.Status > 0 {
		kv = append(kv, attribute.Int("http.response.status_code", a.Status))
	}
	if a.GRPCStatus >= 0 {
		kv = append(kv, attribute.Int("rpc.grpc.status_code", a.GRPCStatus))
	}
	s.s.SetAttributes(kv...)
	switch {
	case a.Err != "":
		s.s.SetStatus(codes.Error, a.Err)
	case a.Status >= 500 || a.Status == 0:
		s.s.SetStatus(codes.Error, "status "+strconv.Itoa(a.Status))
	}
	s.s.End(trace.WithTimestamp(end))
}

// Manager holds the proxy's current Tracer, rebuilt when the Mesh's
// tracing changes. Its methods are safe for concurrent use; a nil
// *Manager traces nothing.
type Manager struct {
	service, namespace, id string
	log                    *slog.Logger
	mu                     sync.Mutex // serializes Apply and Close
	cur                    atomic.Pointer[Tracer]
	closed                 bool
}

// NewManager makes a Manager for the workload service.namespace whose
// SPIFFE ID is id (the spans' resource: service.name is
// "service.namespace").
func NewManager(service, namespace, id string, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{service: service, namespace: namespace, id: id, log: log}
}

// Tracer is the current Tracer, nil when tracing is off.
func (m *Manager) Tracer() *Tracer {
	if m == nil {
		return nil
	}
	return m.cur.Load()
}

// Apply switches to cfg (nil: off). An unchanged configuration keeps
// its Tracer; a replaced one is flushed and shut down in the
// background. The exporter connects lazily: a receiver that is down
// costs dropped spans, never requests.
func (m *Manager) Apply(cfg *meshconfig.Tracing) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.cur.Load()
	if m.closed || (old == nil && cfg == nil) || (old != nil && cfg != nil && old.cfg == *cfg) {
		return
	}
	var t *Tracer
	if cfg != nil {
		var err error
		if t, err = m.newTracer(*cfg); err != nil {
			m.log.Error("tracing: exporter not started; no spans until the Mesh's tracing changes", "provider", cfg.Provider, "address", cfg.Address, "err", err)
		} else {
			m.log.Info("tracing on", "provider", cfg.Provider, "address", cfg.Address, "rate", cfg.Rate)
		}
	}
	m.cur.Store(t)
	if old != nil {
		go old.shutdown()
	}
}

// Close flushes and stops the current Tracer (within ctx); later Applys
// do nothing.
func (m *Manager) Close(ctx context.Context) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.closed = true
	t := m.cur.Swap(nil)
	m.mu.Unlock()
	if t != nil {
		_ = t.tp.Shutdown(ctx)
	}
}

// BatchTimeout is how long a finished span may wait before it is
// exported.
const BatchTimeout = time.Second

func (m *Manager) newTracer(cfg meshconfig.Tracing) (*Tracer, error) {
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(cfg.Address), otlptracegrpc.WithInsecure())
	if err != nil {
		return nil, err
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", m.service+"."+m.namespace),
		attribute.String("service.namespace", m.namespace),
		attribute.String("trellis.spiffe_id", m.id),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		// The proxy decides (Sample) before a span starts: what reaches
		// the SDK is sampled.
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(BatchTimeout)),
	)
	return &Tracer{cfg: cfg, tp: tp, tr: tp.Tracer("github.com/trellismesh/trellis/internal/tracing")}, nil
}

func (t *Tracer) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = t.tp.Shutdown(ctx)
}
