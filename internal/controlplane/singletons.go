package controlplane

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane/registry"
	"github.com/trellismesh/trellis/internal/store"
)

// Elector runs singletons on one replica at a time: whenever this replica
// (id) wins the election called name, run is called with a context that
// ends when it stops leading; Lead returns when ctx ends. A dead leader's
// lease lapses after ttl, and another replica takes over. The etcd store
// implements it with an etcd lease election.
type Elector interface {
	Lead(ctx context.Context, name, id string, ttl time.Duration, log *slog.Logger, run func(ctx context.Context))
}

// The singletons' election: its name, and how long a dead leader's lease
// outlives it.
const (
	electionName = "control-singletons"
	leaderTTL    = 10 * time.Second
)

// replicaRecordExpire is how long a replica's registry record may go
// unrefreshed before the leader deletes it (it stopped being read after
// the endpoint grace period; this is only housekeeping).
const replicaRecordExpire = time.Hour

// lead campaigns until ctx ends; while this replica leads, it runs the
// work that must happen once for all replicas. Per-replica work (each
// replica's own proxies: grace expiry, drift repair, its registry record,
// its certificate reports) runs on every replica; root rotation is
// serialized by the store (/ca/version), not by the election.
func (s *Server) lead(ctx context.Context) {
	s.cfg.Elector.Lead(ctx, electionName, s.cfg.ReplicaID, leaderTTL, s.log, func(lctx context.Context) {
		s.metrics.leader.Set(1)
		defer s.metrics.leader.Set(0)
		var wg sync.WaitGroup
		wg.Go(func() { s.collectGoneReplicas(lctx) })
		if s.outbox != nil {
			wg.Go(func() { s.outbox.forward(lctx) })
		}
		wg.Wait()
	})
}

// collectGoneReplicas deletes the registry records of replicas silent for
// replicaRecordExpire, every minute while leading.
func (s *Server) collectGoneReplicas(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		s.deleteGoneReplicas(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) deleteGoneReplicas(ctx context.Context) {
	kvs, _, err := s.store.List(ctx, registry.ReplicasPrefix)
	if err != nil {
		return
	}
	now := s.cfg.Clock.Now()
	for _, kv := range kvs {
		var sh registry.Shared
		if json.Unmarshal(kv.Value, &sh) != nil || now.Sub(sh.Updated) < replicaRecordExpire {
			continue
		}
		// Conditioned on the revision read: a replica that came back and
		// wrote meanwhile keeps its record.
		if _, err := s.store.Txn(ctx, store.Op{Type: store.OpDelete, Key: kv.Key, IfModRevision: kv.ModRevision}); err == nil {
			s.log.Info("deleted the registry record of a gone replica", "replica", strings.TrimPrefix(kv.Key, registry.ReplicasPrefix), "updated", sh.Updated)
		}
	}
}
