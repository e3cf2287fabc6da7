package controlplane

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
// change. A restarted control plane reads them back as disconnected
// workloads in their grace period: proxies that reconnect within it keep
// their place, and until then they stay endpoints in everyone's snapshots.
// Without it, the first proxies to reconnect after a restart would be sent
// snapshots missing every service whose proxies had not reconnected yet.
const registryKey = "/registry/workloads"

// registryWriteEvery bounds how often the registry is written: a
// reconnect storm of thousands of proxies costs one write per interval,
// and a crash loses at most this much of the registry's history.
const registryWriteEvery = 250 * time.Millisecond

// savedWorkload is one registry entry as stored.
type savedWorkload struct {
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

// saved returns every entry for storing, and a generation that moves with
// the workload set and with every version number handed out (so that a
// crash never makes versions repeat).
func (r *registry) saved() ([]savedWorkload, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]savedWorkload, 0, len(r.entries))
	for _, e := range r.entries {
		out = append(out, savedWorkload{
			Instance: e.w.Instance, SPIFFEID: e.w.SPIFFEID, Service: e.w.Service, Namespace: e.w.Namespace,
			AdvertiseAddr: e.w.AdvertiseAddr, Protocol: e.w.Protocol, Labels: e.w.Labels, Counter: e.counter,
		})
	}
	return out, r.gen + r.versions
}

// restore adds saved workloads as disconnected now: they stay endpoints for
// the grace period unless their proxies reconnect. Instances already
// registered are left alone.
func (r *registry) restore(ws []savedWorkload) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	n := 0
	for _, s := range ws {
		if s.Instance == "" || r.entries[s.Instance] != nil {
			continue
		}
		e := &proxyEntry{counter: s.Counter, disconnectedAt: now}
		e.w = workload{
			Instance: s.Instance, SPIFFEID: s.SPIFFEID, Service: s.Service, Namespace: s.Namespace,
			AdvertiseAddr: s.AdvertiseAddr, Protocol: s.Protocol, Labels: s.Labels,
		}
		r.entries[s.Instance] = e
		n++
	}
	if n > 0 {
		r.gen++
	}
	return n
}

// loadRegistry reads the saved workloads (none at first start).
func loadRegistry(ctx context.Context, st store.Store) ([]savedWorkload, error) {
	kv, err := st.Get(ctx, registryKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read registry: %w", err)
	}
	var ws []savedWorkload
	if err := json.Unmarshal(kv.Value, &ws); err != nil {
		// Only a hint for a faster recovery: start without it.
		return nil, fmt.Errorf("registry %s: %w", registryKey, err)
	}
	return ws, nil
}

// saveRegistry writes the registry whenever its generation moved, at most
// every registryWriteEvery, until ctx ends; then once more.
func saveRegistry(ctx context.Context, st store.Store, r *registry, log *slog.Logger) {
	var written uint64
	write := func(ctx context.Context) {
		ws, gen := r.saved()
		if gen == written {
			return
		}
		data, err := json.Marshal(ws)
		if err == nil {
			_, err = st.Txn(ctx, store.Op{Type: store.OpPut, Key: registryKey, Value: data, IfModRevision: store.AnyRevision})
		}
		if err != nil {
			log.Warn("cannot save the proxy registry; a control plane restart will relearn it from reconnecting proxies", "err", err)
			return
		}
		written = gen
	}
	t := time.NewTicker(registryWriteEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			write(final)
			cancel()
			return
		case <-t.C:
			write(ctx)
		}
	}
}
