package controlplane

import (
	"context"
	"log/slog"
	"sync"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// proxyStream is the push side of one open config stream. The push loop
// offers snapshots; the stream's handler sends them. The slot holds at most
// one unsent snapshot and a newer one replaces it, so a slow proxy only ever
// falls behind to the latest content and never holds up the push loop.
type proxyStream struct {
	slot   chan *pb.Snapshot
	cancel context.CancelCauseFunc

	mu sync.Mutex // makes offer's drain-and-put one step
}

func newProxyStream(cancel context.CancelCauseFunc) *proxyStream {
	return &proxyStream{slot: make(chan *pb.Snapshot, 1), cancel: cancel}
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

// close ends the stream; cause says why (errStreamReplaced,
// errShuttingDown).
func (s *proxyStream) close(cause error) { s.cancel(cause) }

// pusher rebuilds snapshots when something a proxy needs changes and offers
// the changed ones to their streams. One goroutine (run) does all building,
// so versions are assigned in the order content was built.
type pusher struct {
	reg            *registry
	res            *resourceCache
	roots          func() [][]byte
	reportInterval time.Duration
	collectorAddr  string
	debounce       time.Duration
	sweepEvery     time.Duration
	log            *slog.Logger
	metrics        *metrics

	changed chan struct{} // something changed for possibly every proxy
	joined  chan struct{} // a stream waits for its first snapshot

	// Owned by run.
	view             *meshView
	viewReg, viewRes uint64
}

func newPusher(res *resourceCache, roots func() [][]byte, cfg *Config, m *metrics) *pusher {
	p := &pusher{
		res:            res,
		roots:          roots,
		reportInterval: cfg.ReportInterval,
		collectorAddr:  cfg.CollectorAddr,
		debounce:       cfg.PushDebounce,
		sweepEvery:     min(max(cfg.EndpointGracePeriod/4, 5*time.Millisecond), time.Second),
		log:            cfg.Logger,
		metrics:        m,
		changed:        make(chan struct{}, 1),
		joined:         make(chan struct{}, 1),
	}
	p.reg = newRegistry(cfg.Now, cfg.EndpointGracePeriod, p.kick, m.connectedProxies.Set)
	return p
}

// kick asks for a debounced push round to every proxy.
func (p *pusher) kick() { notify(p.changed) }

// kickJoined asks for the first snapshot of new streams at once.
func (p *pusher) kickJoined() { notify(p.joined) }

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run pushes until ctx is done. A burst of changes is gathered for at most
// the debounce interval, counted from the first change (never extended, so
// a steady trickle of changes cannot starve proxies).
func (p *pusher) run(ctx context.Context) {
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	sweep := time.NewTicker(p.sweepEvery)
	defer sweep.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.joined:
			p.round(true)
		case <-p.changed:
			if !pending {
				pending = true
				debounce.Reset(p.debounce)
			}
		case <-debounce.C:
			pending = false
			p.round(false)
		case <-sweep.C:
			p.reg.expire()
		}
	}
}

// round builds the snapshot of every connected proxy (with initialOnly,
// of the streams still waiting for their first one) and offers those whose
// content changed.
func (p *pusher) round(initialOnly bool) {
	start := time.Now()
	v, err := p.currentView()
	if err != nil {
		p.log.Error("config push: build snapshots", "err", err)
		return
	}
	targets := p.reg.targets(initialOnly)
	sent := 0
	for i := range targets {
		t := &targets[i]
		snap, err := buildSnapshot(v, &t.w)
		if err != nil {
			p.log.Error("config push", "instance", t.w.Instance, "err", err)
			continue
		}
		if p.reg.offer(t.w.Instance, t.stream, snap) {
			sent++
		}
	}
	if sent > 0 {
		p.metrics.pushDuration.Observe(time.Since(start).Seconds())
		p.log.Debug("config push", "proxies", len(targets), "changed", sent, "initial_only", initialOnly, "took", time.Since(start))
	}
}

// currentView returns the shared part of snapshots, rebuilt only when the
// registry or the resources changed since the last build.
func (p *pusher) currentView() (*meshView, error) {
	ws, regGen := p.reg.workloads()
	mesh, policies, resGen := p.res.state()
	if p.view != nil && regGen == p.viewReg && resGen == p.viewRes {
		return p.view, nil
	}
	v, err := newMeshView(snapshotInput{
		Mesh:           mesh,
		TrustBundle:    p.roots(),
		Workloads:      ws,
		Policies:       policies,
		ReportInterval: p.reportInterval,
		CollectorAddr:  p.collectorAddr,
	})
	if err != nil {
		return nil, err
	}
	p.view, p.viewReg, p.viewRes = v, regGen, resGen
	return v, nil
}
