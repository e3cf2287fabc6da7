package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/trellismesh/trellis/internal/store"
)

// registryKey holds the registered workloads, written a moment after each
// change. A restarted control plane reads them back as RESTORED workloads
// in their restore grace period: proxies that reconnect within it keep
// their place, and until then they stay endpoints in everyone's snapshots.
// Without it, the first proxies to reconnect after a restart would be sent
// snapshots missing every service whose proxies had not reconnected yet.
// idleServicesKey holds the services without an instance left, written
// with it, so they stay known across a restart too.
const (
	registryKey     = "/registry/workloads"
	idleServicesKey = "/registry/idle-services"
)

// registryWriteEvery bounds how often the registry is written: a
// reconnect storm of thousands of proxies costs one write per interval,
// and a crash loses at most this much of the registry's history.
const registryWriteEvery = 250 * time.Millisecond

// SavedWorkload is one registry entry as stored.
type SavedWorkload struct {
	Instance      string            `json:"instance"`
	SPIFFEID      string            `json:"spiffeID"`
	Service       string            `json:"service"`
	Namespace     string            `json:"namespace"`
	AdvertiseAddr string            `json:"advertiseAddr,omitempty"`
	Protocol      string            `json:"protocol,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	// Counter is the last snapshot version handed out, so versions keep
	// growing across a restart.
	Counter uint64 `json:"counter,omitempty"`
}

// Saved is what is stored: the workloads, and the idle services.
type Saved struct {
	Workloads []SavedWorkload
	Idle      []idleService
}

// saved returns every entry and idle service for storing, and a generation
// that moves with them and with every version number handed out (so that a
// crash never makes versions repeat).
func (r *Registry[S]) saved() (Saved, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Saved{Workloads: make([]SavedWorkload, 0, len(r.entries)), Idle: make([]idleService, 0, len(r.idle))}
	for _, e := range r.entries {
		out.Workloads = append(out.Workloads, SavedWorkload{
			Instance: e.w.Instance, SPIFFEID: e.w.SPIFFEID, Service: e.w.Service, Namespace: e.w.Namespace,
			AdvertiseAddr: e.w.AdvertiseAddr, Protocol: e.w.Protocol, Labels: e.w.Labels, Counter: e.counter,
		})
	}
	for _, svc := range r.idle {
		out.Idle = append(out.Idle, svc)
	}
	return out, r.gen + r.versions
}

// Restore adds saved workloads as RESTORED now: they stay endpoints for the
// restore grace period unless their proxies reconnect. Instances already
// registered are left alone. Saved idle services are listed again with
// their retention counted from when they became idle. It returns the
// number of workloads restored.
func (r *Registry[S]) Restore(saved Saved) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	n := 0
	for _, s := range saved.Workloads {
		if s.Instance == "" || r.entries[s.Instance] != nil {
			continue
		}
		e := &proxyEntry[S]{counter: s.Counter, disconnectedAt: now, restored: true}
		e.w = workload{
			Instance: s.Instance, SPIFFEID: s.SPIFFEID, Service: s.Service, Namespace: s.Namespace,
			AdvertiseAddr: s.AdvertiseAddr, Protocol: s.Protocol, Labels: s.Labels,
		}
		r.entries[s.Instance] = e
		r.perID[s.SPIFFEID]++
		n++
	}
	registered := map[serviceKey]bool{}
	for _, e := range r.entries {
		registered[serviceKey{Namespace: e.w.Namespace, Name: e.w.Service}] = true
	}
	idle := 0
	for _, svc := range saved.Idle {
		k := serviceKey{Namespace: svc.Namespace, Name: svc.Name}
		if svc.Name == "" || registered[k] || now.Sub(svc.Since) >= r.retention {
			continue
		}
		if _, ok := r.idle[k]; !ok {
			r.idle[k] = svc
			idle++
		}
	}
	if n > 0 || idle > 0 {
		r.gen++
	}
	return n
}

// Load reads the saved workloads and idle services (none at first start).
// An error is only a hint lost: start without it.
func Load(ctx context.Context, st store.Store) (Saved, error) {
	var out Saved
	for _, k := range []struct {
		key string
		v   any
	}{{registryKey, &out.Workloads}, {idleServicesKey, &out.Idle}} {
		kv, err := st.Get(ctx, k.key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return Saved{}, fmt.Errorf("read registry: %w", err)
		}
		if err := json.Unmarshal(kv.Value, k.v); err != nil {
			// Only a hint for a faster recovery: start without it.
			return Saved{}, fmt.Errorf("registry %s: %w", k.key, err)
		}
	}
	return out, nil
}

// Persist writes the registry to st whenever its generation moved, at most
// every registryWriteEvery on the registry's clock, until ctx ends; then
// once more. Run it on a goroutine of its own.
func (r *Registry[S]) Persist(ctx context.Context, st store.Store, log *slog.Logger) {
	var written uint64
	write := func(ctx context.Context) {
		saved, gen := r.saved()
		if gen == written {
			return
		}
		ws, err := json.Marshal(saved.Workloads)
		var idle []byte
		if err == nil {
			idle, err = json.Marshal(saved.Idle)
		}
		if err == nil {
			_, err = st.Txn(ctx,
				store.Op{Type: store.OpPut, Key: registryKey, Value: ws, IfModRevision: store.AnyRevision},
				store.Op{Type: store.OpPut, Key: idleServicesKey, Value: idle, IfModRevision: store.AnyRevision})
		}
		if err != nil {
			log.Warn("cannot save the proxy registry; a control plane restart will relearn it from reconnecting proxies", "err", err)
			return
		}
		written = gen
	}
	t := r.clock.NewTicker(registryWriteEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			write(final)
			cancel()
			return
		case <-t.C():
			write(ctx)
		}
	}
}
