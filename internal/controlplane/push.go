package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlplane/registry"
	"github.com/trellismesh/trellis/internal/controlplane/resstore"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/controlplane/vips"
)

// proxyStream is the push side of one open config stream. The push loop
// offers snapshots; the stream's handler sends them. The slot holds at most
// one unsent snapshot and a newer one replaces it, so a slow proxy only ever
// falls behind to the latest content and never holds up the push loop.
type proxyStream struct {
	slot   chan *pb.Snapshot
	resync chan string // versions the proxy NACKed (delta.go)
	cancel context.CancelCauseFunc

	mu sync.Mutex // makes offer's drain-and-put one step
}

func newProxyStream(cancel context.CancelCauseFunc) *proxyStream {
	return &proxyStream{slot: make(chan *pb.Snapshot, 1), resync: make(chan string, 4), cancel: cancel}
}

// askResync passes a NACKed version to the send loop, which sends it whole
// if it went as a delta. It never blocks; a full queue drops it (the
// drift repair re-sends the desired snapshot later).
func (s *proxyStream) askResync(version string) {
	select {
	case s.resync <- version:
	default:
	}
}

// offer queues snap, replacing an unsent older one. It never blocks.
func (s *proxyStream) offer(snap *pb.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.slot:
	default:
	}
	s.slot <- snap
}

// CloseReplaced ends the stream: the registry took a newer one of the same
// proxy instance (registry.Stream).
func (s *proxyStream) CloseReplaced() { s.cancel(errStreamReplaced) }

// pusher rebuilds snapshots when something a proxy needs changes and offers
// the changed ones to their streams. One goroutine (run) does all building,
// so versions are assigned in the order content was built.
type pusher struct {
	reg            *registry.Registry[*proxyStream]
	clock          clock.Clock
	res            *resstore.Cache
	roots          func() [][]byte
	issuer         func() string // the CA's active issuer (Snapshot.issuer); see trust
	trustDomain    spiffeid.TrustDomain
	reportInterval time.Duration
	collectorAddr  string
	debounce       time.Duration
	sweepEvery     time.Duration
	log            *slog.Logger
	metrics        *metrics
	// vips assigns services' virtual IPs before each build (nil: none).
	vips *vips.Allocator
	// workloads, when set, gives the workloads and virtual IPs instead
	// of the registry and vips (Config.Workloads).
	workloads WorkloadSource
	// peers, when set, adds the other replicas' workloads (Config.ReplicaID).
	peers *peers

	changed chan struct{} // something changed for possibly every proxy
	joined  chan struct{} // a stream waits for its first snapshot
	wanted  chan struct{} // a proxy asked for services (wantedBy)

	wantMu   sync.Mutex
	wantedBy map[string]bool // instances whose Wants grew since their last build
	conv     *convergence

	// shared is the latest view, for stream goroutines (serviceByVIP).
	viewMu sync.Mutex
	shared *snapshot.View

	// Owned by run.
	view             *snapshot.View
	viewReg, viewRes uint64
	viewAt           time.Time // when view was built (real time)
	rounds           uint64    // debounced rounds so far
}

// WorkloadSource gives the mesh's workloads and their services' virtual
// IPs from outside the config streams (Kubernetes mode: EndpointSlices and
// Pods, internal/kube/workloads), with a generation that grows with each
// change and a signal after changes.
type WorkloadSource interface {
	Workloads() ([]snapshot.Workload, map[snapshot.ServiceKey]string, uint64, error)
	Changed() <-chan struct{}
}

// followWorkloads kicks a push round after each change of the workload
// source, until ctx is done.
func (p *pusher) followWorkloads(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.workloads.Changed():
			p.kick()
		}
	}
}

// pushSettings are everything a pusher works from, given when it is made.
type pushSettings struct {
	resources *resstore.Cache
	roots     func() [][]byte // the trust bundle, DER
	issuer    func() string   // the CA's active issuer; nil: none
	vips      *vips.Allocator // nil: services get no virtual IP
	workloads WorkloadSource  // nil: the registry's workloads
	// trustDomain holds every workload a snapshot names (consistency).
	trustDomain spiffeid.TrustDomain
	// From Config, defaults applied.
	reportInterval, debounce         time.Duration
	endpointGrace, ackTimeout, drift time.Duration
	collectorAddr                    string
	clock                            clock.Clock
	log                              *slog.Logger
	metrics                          *metrics
}

func newPusher(ps pushSettings) *pusher {
	m := ps.metrics
	p := &pusher{
		res:            ps.resources,
		roots:          ps.roots,
		issuer:         ps.issuer,
		vips:           ps.vips,
		workloads:      ps.workloads,
		trustDomain:    ps.trustDomain,
		reportInterval: ps.reportInterval,
		collectorAddr:  ps.collectorAddr,
		debounce:       ps.debounce,
		// The sweep expires workloads and repairs drift.
		sweepEvery: min(max(min(ps.endpointGrace, ps.drift)/4, 5*time.Millisecond), time.Second),
		clock:      ps.clock,
		log:        ps.log,
		metrics:    m,
		changed:    make(chan struct{}, 1),
		joined:     make(chan struct{}, 1),
		wanted:     make(chan struct{}, 1),
		wantedBy:   map[string]bool{},
		conv: &convergence{
			observe: func(d time.Duration) { m.convergence.Observe(d.Seconds()) },
			abandon: m.convergenceAbandoned.Inc,
		},
	}
	p.reg = registry.New[*proxyStream](registry.Options{
		Clock: ps.clock, Grace: ps.endpointGrace, AckTimeout: ps.ackTimeout, DriftGrace: ps.drift,
		Changed: p.kick, ConnectedGauge: m.connectedProxies.Set, OnAck: p.conv.acked,
	})
	m.watchProxyStates(p.reg.StateCounts)
	return p
}

// kick asks for a debounced push round to every proxy.
func (p *pusher) kick() { notify(p.changed) }

// kickJoined asks for the first snapshot of new streams at once.
func (p *pusher) kickJoined() { notify(p.joined) }

// kickWanted asks for a snapshot of instance at once, without waiting for
// the debounce: its proxy holds a first request until the services it
// asked for arrive (Discover).
func (p *pusher) kickWanted(instance string) {
	p.wantMu.Lock()
	p.wantedBy[instance] = true
	p.wantMu.Unlock()
	notify(p.wanted)
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run pushes until ctx is done. A burst of changes is gathered for at most
// the debounce interval, counted from the first change (never extended, so
// a steady trickle of changes cannot starve proxies). The debounce and the
// sweep run on the control plane's clock.
func (p *pusher) run(ctx context.Context) {
	debounce := p.clock.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	sweep := p.clock.NewTicker(p.sweepEvery)
	defer sweep.Stop()
	pending := false
	// The first change of the pending round, in real time: the
	// convergence metric measures the latency proxies see.
	var changedAt time.Time
	// Under load a round may take longer than the debounce: the next one
	// then waits as long as the last took (real time, cooldown), so the
	// loop batches more changes per round instead of rebuilding
	// back-to-back and starving the streams it feeds.
	var readyAt time.Time
	cooldown := time.NewTimer(time.Hour)
	cooldown.Stop()
	defer cooldown.Stop()
	debounced := func() {
		start := time.Now()
		p.round(false, changedAt)
		if d := time.Since(start); d > p.debounce {
			readyAt = time.Now().Add(d)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.joined:
			p.round(true, time.Time{})
		case <-p.wanted:
			p.wantMu.Lock()
			instances := p.wantedBy
			p.wantedBy = map[string]bool{}
			p.wantMu.Unlock()
			p.roundFor(instances)
		case <-p.changed:
			if !pending {
				pending, changedAt = true, time.Now()
				debounce.Reset(p.debounce)
			}
		case <-debounce.C():
			if wait := time.Until(readyAt); wait > 0 {
				cooldown.Reset(wait)
				continue
			}
			pending = false
			debounced()
		case <-cooldown.C:
			pending = false
			debounced()
		case <-sweep.C():
			p.reg.Expire()
			p.repairDrift()
		}
	}
}

// round builds the snapshot of every connected proxy (with initialOnly,
// of the streams still waiting for their first one) and offers those whose
// content changed. A debounced round (not initialOnly) is timed for the
// convergence metric from changedAt.
func (p *pusher) round(initialOnly bool, changedAt time.Time) {
	start := time.Now()
	v, err := p.joinView(initialOnly)
	if err != nil {
		p.buildFailed("", err)
		return
	}
	var id uint64
	if !initialOnly {
		p.rounds++
		id = p.rounds
		defer p.conv.seal(id)
	}
	targets := p.reg.Targets(initialOnly)
	sent := 0
	for i := range targets {
		t := &targets[i]
		snap, err := snapshot.BuildFrom(v, &t.Workload, t.Desired)
		if err != nil {
			p.buildFailed(t.Workload.Instance, err)
			continue
		}
		if !p.reg.Offer(t.Workload.Instance, t.Stream, snap) {
			continue
		}
		if !initialOnly {
			p.conv.offered(id, changedAt, t.Workload.Instance, snap.GetVersion())
		}
		t.Stream.offer(snap)
		sent++
	}
	if sent > 0 {
		p.metrics.pushDuration.Observe(time.Since(start).Seconds())
		p.log.Debug("config push", "proxies", len(targets), "changed", sent, "initial_only", initialOnly, "took", time.Since(start))
	}
}

// roundFor builds and offers the snapshots of the given connected
// instances only (their own scope changed, nothing shared did).
func (p *pusher) roundFor(instances map[string]bool) {
	v, err := p.currentView()
	if err != nil {
		p.buildFailed("", err)
		return
	}
	for inst := range instances {
		t, ok := p.reg.Target(inst)
		if !ok {
			continue
		}
		snap, err := snapshot.BuildFrom(v, &t.Workload, t.Desired)
		if err != nil {
			p.buildFailed(inst, err)
			continue
		}
		if p.reg.Offer(inst, t.Stream, snap) {
			t.Stream.offer(snap)
		}
	}
}

// buildFailed logs why no snapshot was built for instance ("": for any
// proxy) and counts an inconsistent one. Nothing is sent: the proxies keep
// their last config.
func (p *pusher) buildFailed(instance string, err error) {
	var ie *snapshot.InconsistentError
	if !errors.As(err, &ie) {
		if instance == "" {
			p.log.Error("config push: build snapshots", "err", err)
		} else {
			p.log.Error("config push", "instance", instance, "err", err)
		}
		return
	}
	p.metrics.inconsistentSnapshots.Inc()
	if instance == "" {
		p.log.Error("config push: snapshots failed the consistency check and are not sent; every proxy keeps its last config", "problems", len(ie.Problems), "err", err)
	} else {
		p.log.Error("config push: snapshot failed the consistency check and is not sent; the proxy keeps its last config", "instance", instance, "problems", len(ie.Problems), "err", err)
	}
}

// repairDrift re-sends the desired snapshot to every proxy DRIFTED past
// the drift grace period (at most once per period per proxy). It runs on
// the push loop, so a repair never overtakes a newer snapshot in a
// stream's slot.
func (p *pusher) repairDrift() {
	now := p.clock.Now()
	for _, d := range p.reg.DriftRepairs() {
		p.metrics.driftRepairs.Inc()
		p.log.Warn("config drift: proxy reports running other content than it acknowledged; re-sending its snapshot",
			"instance", d.Workload.Instance, "spiffe_id", d.Workload.SPIFFEID, "service", d.Workload.Service, "namespace", d.Workload.Namespace,
			"desired_version", d.Snap.GetVersion(), "desired_hash", shortHash(d.Snap.GetHash()),
			"running_version", d.Running.Version, "running_hash", shortHash(d.Running.Hash),
			"drifted_for", now.Sub(d.Since).Round(time.Millisecond).String(), "repairs", d.Count)
		d.Stream.offer(d.Snap)
	}
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// trust is the bundle and issuer snapshots are built with.
func (p *pusher) trust() ([][]byte, string) {
	var issuer string
	if p.issuer != nil {
		issuer = p.issuer()
	}
	return p.roots(), issuer
}

// vipRanges are where virtual IPs come from: the allocator's range, or
// around those the workload source assigned.
func (p *pusher) vipRanges(vipOf map[snapshot.ServiceKey]string) []netip.Prefix {
	if p.vips != nil && p.workloads == nil {
		return []netip.Prefix{p.vips.Range()}
	}
	return vips.Covering(vipOf)
}

// Join storms: with more than joinStormProxies connected, a round of first
// snapshots may use a view up to joinViewAge old when only the registry
// changed since (proxies joined): rebuilding the whole view for every
// batch of joins would cost more than the joins. The registry change
// kicked a debounced round, which sends the current view to everyone.
const (
	joinStormProxies = 1000
	joinViewAge      = 250 * time.Millisecond
)

// joinView is currentView, or for a round of first snapshots during a
// join storm the last view (see joinStormProxies).
func (p *pusher) joinView(initialOnly bool) (*snapshot.View, error) {
	if initialOnly && p.view != nil && time.Since(p.viewAt) < joinViewAge && p.reg.Connected() > joinStormProxies {
		_, _, resGen := p.res.State()
		if roots, issuer := p.trust(); resGen == p.viewRes && p.view.SameTrust(roots, issuer) {
			return p.view, nil
		}
	}
	return p.currentView()
}

// currentView returns the shared part of snapshots, rebuilt only when the
// registry or the resources changed since the last build.
func (p *pusher) currentView() (*snapshot.View, error) {
	ws, idle, regGen := p.reg.View()
	if p.peers != nil {
		ws, idle, regGen = p.peers.merge(ws, idle, regGen)
	}
	var vipOf map[snapshot.ServiceKey]string
	if p.workloads != nil {
		var err error
		if ws, vipOf, regGen, err = p.workloads.Workloads(); err != nil {
			return nil, fmt.Errorf("read workloads: %w", err)
		}
		idle = nil
	}
	mesh, policies, resGen := p.res.State()
	roots, issuer := p.trust()
	if p.view != nil && regGen == p.viewReg && resGen == p.viewRes && p.view.SameTrust(roots, issuer) {
		return p.view, nil
	}
	if p.vips != nil && p.workloads == nil {
		vipOf = p.vips.Assign(vips.ServiceKeys(ws, idle))
	}
	v, err := snapshot.NewView(snapshot.Input{
		Mesh:            mesh,
		TrustBundle:     roots,
		Issuer:          issuer,
		Workloads:       ws,
		Idle:            idle,
		Policies:        policies,
		JWTAuthns:       p.res.JWTAuthns(),
		RateLimits:      p.res.RateLimits(),
		GatewayRoutes:   p.res.GatewayRoutes(),
		EgressPolicies:  p.res.EgressPolicies(),
		TrafficPolicies: p.res.TrafficPolicies(),
		Routes:          p.res.Routes(),
		ReportInterval:  p.reportInterval,
		CollectorAddr:   p.collectorAddr,
		VIPs:            vipOf,
		VIPRanges:       p.vipRanges(vipOf),
		TrustDomain:     p.trustDomain,
		Previous:        p.view,
		WorkloadsGen:    regGen,
	})
	if err != nil {
		return nil, err
	}
	// Not kept when inconsistent: the next round builds and checks again.
	if err := v.Consistent(); err != nil {
		return nil, err
	}
	p.view, p.viewReg, p.viewRes, p.viewAt = v, regGen, resGen, time.Now()
	p.viewMu.Lock()
	p.shared = v
	p.viewMu.Unlock()
	return v, nil
}

// serviceByVIP returns the service a virtual IP belongs to in the current
// view. Called from stream goroutines, so it reads the view under viewMu.
func (p *pusher) serviceByVIP(ip string) (snapshot.ServiceKey, bool) {
	p.viewMu.Lock()
	v := p.shared
	p.viewMu.Unlock()
	if v == nil {
		return snapshot.ServiceKey{}, false
	}
	return v.ServiceByVIP(ip)
}
