package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellismesh/trellis/internal/store"
)

// watch is one running Watch.
type watch struct {
	cancel context.CancelFunc
}

// Watch implements store.Store. fromRevision 0 is resolved to the current
// revision first, so a write that Watch's return precedes is never missed;
// a fromRevision above the current revision is accepted, its events
// arriving once the cluster gets there.
func (s *Store) Watch(ctx context.Context, prefix string, fromRevision int64) (<-chan store.Event, error) {
	what := fmt.Sprintf("etcd watch %q", prefix)
	if fromRevision < 0 {
		return nil, fmt.Errorf("%s: invalid fromRevision %d", what, fromRevision)
	}
	if err := s.check(ctx, what); err != nil {
		return nil, err
	}
	from := fromRevision
	if from == 0 {
		rev, err := s.revision(ctx)
		if err != nil {
			return nil, s.wrap(ctx, what, err)
		}
		from = rev
	} else if err := s.checkCompacted(ctx, from); err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			return nil, fmt.Errorf("%s from revision %d: %w (etcd compacted its history)", what, fromRevision, store.ErrCompacted)
		}
		return nil, s.wrap(ctx, what, err)
	}

	// A watch that requires a leader is cancelled by a member that lost
	// it, rather than staying silent while cut off from the quorum.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	w := &watch{cancel: cancel}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("%s: %w", what, store.ErrClosed)
	}
	s.watches[w] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()

	wch := s.cl.Watch(wctx, s.cfg.Prefix+prefix,
		clientv3.WithPrefix(), clientv3.WithRev(from+1+revOffset), clientv3.WithPrevKV())
	out := make(chan store.Event, s.cfg.WatchBuffer)
	go s.forward(w, wch, out)
	return out, nil
}

// checkCompacted asks for the first revision the watch needs: etcd
// refuses a read at a compacted revision as it would the watch, but says
// so synchronously. A revision not reached yet is fine.
func (s *Store) checkCompacted(ctx context.Context, from int64) error {
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	_, err := s.cl.Get(cctx, s.cfg.Prefix, clientv3.WithRev(from+1+revOffset), clientv3.WithCountOnly())
	if errors.Is(err, rpctypes.ErrFutureRev) {
		return nil
	}
	return err
}

// forward turns etcd's watch responses into events until the watch ends:
// ctx done or Close (etcd's channel closes), a compaction or cancellation
// reported by etcd, or out full (the watcher fell behind). It then closes
// out, and the caller lists again.
func (s *Store) forward(w *watch, wch clientv3.WatchChan, out chan<- store.Event) {
	defer s.wg.Done()
	defer close(out)
	defer func() {
		w.cancel()
		s.mu.Lock()
		delete(s.watches, w)
		s.mu.Unlock()
		// Let etcd's goroutine finish delivering to wch and close it.
		for range wch {
		}
	}()
	for resp := range wch {
		if resp.Canceled || resp.CompactRevision != 0 || resp.Err() != nil {
			return
		}
		for _, ev := range resp.Events {
			select {
			case out <- s.event(ev):
			default:
				return
			}
		}
	}
}

func (s *Store) event(ev *clientv3.Event) store.Event {
	rev := ev.Kv.ModRevision - revOffset
	if ev.Type != clientv3.EventTypeDelete {
		return store.Event{Type: store.EventPut, KV: s.kv(ev.Kv), Revision: rev}
	}
	kv := store.KV{Key: strings.TrimPrefix(string(ev.Kv.Key), s.cfg.Prefix), ModRevision: rev}
	if p := ev.PrevKv; p != nil {
		kv.Value, kv.CreateRevision = p.Value, p.CreateRevision-revOffset
	}
	return store.Event{Type: store.EventDelete, KV: kv, Revision: rev}
}
