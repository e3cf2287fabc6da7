package controlplane

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlplane/registry"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/store"
)

// registryHeartbeat is how often a replica sharing its store rewrites its
// registry even when nothing changed, so the others can tell it is alive.
const registryHeartbeat = 2 * time.Second

// peers follows the registries the other replicas sharing the store write
// (registry.PersistShared): their workloads join this replica's in every
// snapshot. A replica whose last write is older than the endpoint grace
// period is gone: its workloads leave, as a disconnected proxy's do.
type peers struct {
	st    store.Store
	self  string
	stale time.Duration
	clock clock.Clock
	log   *slog.Logger
	kick  func()

	mu     sync.Mutex
	shared map[string]registry.Shared // replica -> its registry
	live   map[string]bool            // replicas counted fresh at the last check
	gen    atomic.Uint64
}

// follow lists and watches the replicas' registries until ctx ends, and
// checks every second which are still fresh.
func (p *peers) follow(ctx context.Context) {
	go p.checkFresh(ctx)
	for ctx.Err() == nil {
		kvs, rev, err := p.st.List(ctx, registry.ReplicasPrefix)
		if err == nil {
			m := map[string]registry.Shared{}
			for _, kv := range kvs {
				p.parse(m, kv.Key, kv.Value)
			}
			p.mu.Lock()
			p.shared = m
			p.live = p.freshLocked()
			p.mu.Unlock()
			p.changed()
			var ch <-chan store.Event
			if ch, err = p.st.Watch(ctx, registry.ReplicasPrefix, rev); err == nil {
				for ev := range ch {
					p.mu.Lock()
					if ev.Type == store.EventDelete {
						delete(p.shared, strings.TrimPrefix(ev.KV.Key, registry.ReplicasPrefix))
					} else {
						p.parse(p.shared, ev.KV.Key, ev.KV.Value)
					}
					p.live = p.freshLocked()
					p.mu.Unlock()
					p.changed()
				}
			}
		}
		if err != nil && !errors.Is(err, store.ErrCompacted) && ctx.Err() == nil {
			p.log.Warn("the other replicas' registries cannot be read; their workloads stay as last seen", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (p *peers) parse(m map[string]registry.Shared, key string, val []byte) {
	name := strings.TrimPrefix(key, registry.ReplicasPrefix)
	if name == p.self {
		return
	}
	var sh registry.Shared
	if err := json.Unmarshal(val, &sh); err != nil {
		p.log.Warn("a replica's registry is unreadable; ignored", "replica", name, "err", err)
		return
	}
	m[name] = sh
}

// changed counts a change for the view and kicks a push round.
func (p *peers) changed() {
	p.gen.Add(1)
	p.kick()
}

// checkFresh notices replicas going stale (no write within the grace).
func (p *peers) checkFresh(ctx context.Context) {
	t := p.clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		p.mu.Lock()
		live := p.freshLocked()
		moved := len(live) != len(p.live)
		for r := range live {
			moved = moved || !p.live[r]
		}
		p.live = live
		p.mu.Unlock()
		if moved {
			p.changed()
		}
	}
}

func (p *peers) freshLocked() map[string]bool {
	now := p.clock.Now()
	live := map[string]bool{}
	for r, sh := range p.shared {
		if now.Sub(sh.Updated) <= p.stale {
			live[r] = true
		}
	}
	return live
}

// merge adds the fresh replicas' workloads and idle services to this
// replica's own (an instance this replica has wins: it is its proxy now),
// and returns a generation that moves with either.
func (p *peers) merge(own []snapshot.Workload, idle []snapshot.IdleService, gen uint64) ([]snapshot.Workload, []snapshot.IdleService, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	have := make(map[string]bool, len(own))
	registered := map[snapshot.ServiceKey]bool{}
	for _, w := range own {
		have[w.Instance] = true
		registered[snapshot.ServiceKey{Namespace: w.Namespace, Name: w.Service}] = true
	}
	ws := own
	var peerIdle []snapshot.IdleService
	for r := range p.freshLocked() {
		sh := p.shared[r]
		for _, s := range sh.Workloads {
			if s.Instance == "" || have[s.Instance] {
				continue
			}
			have[s.Instance] = true
			ws = append(ws, snapshot.Workload{Instance: s.Instance, SPIFFEID: s.SPIFFEID, Service: s.Service, Namespace: s.Namespace,
				AdvertiseAddr: s.AdvertiseAddr, Protocol: s.Protocol, Labels: s.Labels, Connected: true, ConnectedAt: sh.Updated})
			registered[snapshot.ServiceKey{Namespace: s.Namespace, Name: s.Service}] = true
		}
		peerIdle = append(peerIdle, sh.Idle...)
	}
	out := slices.Clone(idle)
	seen := map[snapshot.ServiceKey]bool{}
	for _, svc := range idle {
		seen[snapshot.ServiceKey{Namespace: svc.Namespace, Name: svc.Name}] = true
	}
	for _, svc := range peerIdle {
		k := snapshot.ServiceKey{Namespace: svc.Namespace, Name: svc.Name}
		if !seen[k] && !registered[k] {
			seen[k] = true
			out = append(out, svc)
		}
	}
	slices.SortFunc(out, func(a, b snapshot.IdleService) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	// Own idle services that a peer's workload registers are no longer idle.
	out = slices.DeleteFunc(out, func(svc snapshot.IdleService) bool {
		return registered[snapshot.ServiceKey{Namespace: svc.Namespace, Name: svc.Name}]
	})
	return ws, out, gen + p.gen.Load()
}
