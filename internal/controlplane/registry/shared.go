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

// Replicas sharing one store (etcd) each write their registry under
// ReplicasPrefix + their name, with the time of the write, when it
// changes and at least every heartbeat. Every replica builds snapshots
// from its own registry and the others' (the control plane's peers.go),
// so a proxy connected to any replica is an endpoint in every replica's
// snapshots, and a replica that dies leaves its proxies' endpoints in
// place until they have reconnected elsewhere.
const ReplicasPrefix = "/registry/replicas/"

// Shared is one replica's registry as stored for the others.
type Shared struct {
	Updated   time.Time       `json:"updated"`
	Workloads []SavedWorkload `json:"workloads"`
	Idle      []idleService   `json:"idle,omitempty"`
}

// LoadShared reads the registry replica wrote last (at its restart).
func LoadShared(ctx context.Context, st store.Store, replica string) (Saved, error) {
	kv, err := st.Get(ctx, ReplicasPrefix+replica)
	if errors.Is(err, store.ErrNotFound) {
		return Saved{}, nil
	}
	if err != nil {
		return Saved{}, fmt.Errorf("read registry: %w", err)
	}
	var sh Shared
	if err := json.Unmarshal(kv.Value, &sh); err != nil {
		return Saved{}, fmt.Errorf("registry %s: %w", kv.Key, err)
	}
	return Saved{Workloads: sh.Workloads, Idle: sh.Idle}, nil
}

// PersistShared writes the registry under replica's key when its
// generation moved (at most every registryWriteEvery) and at least every
// heartbeat, until ctx ends. Run it on a goroutine of its own.
func (r *Registry[S]) PersistShared(ctx context.Context, st store.Store, replica string, heartbeat time.Duration, log *slog.Logger) {
	var written uint64
	var at time.Time
	write := func(ctx context.Context) {
		saved, gen := r.saved()
		now := r.clock.Now()
		if gen == written && now.Sub(at) < heartbeat {
			return
		}
		val, err := json.Marshal(Shared{Updated: now.UTC(), Workloads: saved.Workloads, Idle: saved.Idle})
		if err == nil {
			_, err = st.Txn(ctx, store.Op{Type: store.OpPut, Key: ReplicasPrefix + replica, Value: val, IfModRevision: store.AnyRevision})
		}
		if err != nil {
			log.Warn("cannot share the proxy registry with the other replicas; they keep the last one for the endpoint grace period", "err", err)
			return
		}
		written, at = gen, now
	}
	t := r.clock.NewTicker(registryWriteEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return // not written again: a stopping replica's proxies move to the others
		case <-t.C():
			write(ctx)
		}
	}
}
