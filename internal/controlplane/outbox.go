package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/telemetry/emitter"
)

// outboxPrefix holds the control-plane events of every replica sharing an
// etcd store with an external collector, until the elected replica has
// had them acknowledged by the collector. An event is in etcd (replicated,
// outliving its replica) before the admin call that made it returns, so a
// replica killed at any moment loses none.
const outboxPrefix = "/audit/outbox/"

// Outbox bounds: a forwarded batch (etcd refuses transactions over 128
// operations by default), how long the collector may take to acknowledge
// it, how often an empty outbox is looked at, and how long a write of one
// event may take before the event goes to the local emitter instead.
const (
	outboxBatch        = 100
	outboxAckTimeout   = 30 * time.Second
	outboxPoll         = 250 * time.Millisecond
	outboxWriteTimeout = 3 * time.Second
)

// outbox writes this replica's events to the store and, on the leader,
// forwards everyone's through the replica's emitter.
type outbox struct {
	st      store.Store
	replica string
	events  *emitter.Emitter
	log     *slog.Logger
	clock   clock.Clock
	seq     atomic.Uint64
	wake    chan struct{}
}

func newOutbox(st store.Store, replica string, events *emitter.Emitter, log *slog.Logger, clk clock.Clock) *outbox {
	return &outbox{st: st, replica: replica, events: events, log: log, clock: clock.Or(clk), wake: make(chan struct{}, 1)}
}

// put stores ev in the outbox and reports whether it did; on false (the
// store is unavailable) the caller hands it to its emitter, which spools
// it locally.
func (o *outbox) put(ev *pb.Event) bool {
	b, err := proto.Marshal(ev)
	if err != nil {
		return false
	}
	key := fmt.Sprintf("%s%020d-%s-%010d", outboxPrefix, o.clock.Now().UnixNano(), o.replica, o.seq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), outboxWriteTimeout)
	defer cancel()
	if _, err := o.st.Txn(ctx, store.Op{Type: store.OpPut, Key: key, Value: b, IfModRevision: store.AnyRevision}); err != nil {
		o.log.Warn("audit outbox: event not written to the store; spooling it on this replica instead", "kind", ev.GetKind(), "err", err)
		return false
	}
	notify(o.wake)
	return true
}

// forward runs on the leader until ctx ends: it emits the outbox's
// events, oldest first, waits until the collector acknowledged them, and
// only then deletes them. A leader that dies in between leaves them for
// the next one, which sends them again (at least once).
func (o *outbox) forward(ctx context.Context) {
	for ctx.Err() == nil {
		n, err := o.forwardBatch(ctx)
		if err != nil && ctx.Err() == nil {
			o.log.Warn("audit outbox: forwarding to the collector failed; retrying", "err", err)
		}
		if n == outboxBatch && err == nil {
			continue
		}
		t := time.NewTimer(outboxPoll)
		select {
		case <-ctx.Done():
		case <-o.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (o *outbox) forwardBatch(ctx context.Context) (int, error) {
	kvs, _, err := o.st.List(ctx, outboxPrefix)
	if err != nil || len(kvs) == 0 {
		return 0, err
	}
	kvs = kvs[:min(len(kvs), outboxBatch)]
	for _, kv := range kvs {
		ev := &pb.Event{}
		if err := proto.Unmarshal(kv.Value, ev); err != nil {
			o.log.Error("audit outbox: unreadable event dropped", "key", kv.Key, "err", err)
			continue
		}
		o.events.Emit(ev)
	}
	fctx, cancel := context.WithTimeout(ctx, outboxAckTimeout)
	defer cancel()
	if err := o.events.Flush(fctx); err != nil {
		return 0, err
	}
	ops := make([]store.Op, 0, len(kvs))
	for _, kv := range kvs {
		ops = append(ops, store.Op{Type: store.OpDelete, Key: kv.Key, IfModRevision: store.AnyRevision})
	}
	if _, err := o.st.Txn(ctx, ops...); err != nil {
		return 0, fmt.Errorf("delete forwarded events: %w", err)
	}
	return len(kvs), nil
}
