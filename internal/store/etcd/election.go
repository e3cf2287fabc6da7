package etcd

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// Lead runs run on one replica at a time, under an etcd lease election
// (concurrency.Election) named name under the store's prefix: whenever
// this replica, id, wins the election, run is called with a context that
// ends when it stops leading (its lease lost: it could not renew for
// ttl, or ctx ended). It returns when ctx ends. Another replica takes over
// at most ttl after the leader dies.
func (s *Store) Lead(ctx context.Context, name, id string, ttl time.Duration, log *slog.Logger, run func(ctx context.Context)) {
	secs := max(int(ttl/time.Second), 1)
	for ctx.Err() == nil {
		s.leadOnce(ctx, name, id, secs, log, run)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) leadOnce(ctx context.Context, name, id string, secs int, log *slog.Logger, run func(ctx context.Context)) {
	sess, err := concurrency.NewSession(s.cl, concurrency.WithTTL(secs), concurrency.WithContext(ctx))
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("election: no etcd session; retrying", "election", name, "err", err)
		}
		return
	}
	defer sess.Close()
	e := concurrency.NewElection(sess, s.cfg.Prefix+"/election/"+name)
	if err := e.Campaign(ctx, id); err != nil {
		if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			log.Warn("election: campaign failed; retrying", "election", name, "err", err)
		}
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	log.Info("election won: running the singletons", "election", name, "replica", id)
	run(lctx)
	if ctx.Err() == nil {
		log.Warn("election: leadership lost", "election", name, "replica", id)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
	defer rcancel()
	_ = e.Resign(rctx)
}
