package emitter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/backoff"
)

// Run delivers events until ctx ends or Close is called: it keeps one
// Telemetry stream to the collector, reconnecting with exponential backoff
// and jitter, and with a spool moves events to and from disk. While it is
// disconnected events wait in memory and then in the spool. Call it once;
// after Close it returns at once.
func (e *Emitter) Run(ctx context.Context) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	if e.runDone != nil {
		e.mu.Unlock()
		e.log.Error("telemetry emitter: Run called twice; ignoring")
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	e.stopRun, e.runDone = cancel, make(chan struct{})
	done := e.runDone
	e.mu.Unlock()
	defer close(done)
	defer cancel()

	var wg sync.WaitGroup
	defer wg.Wait()
	if e.spool != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.spoolLoop(ctx)
		}()
	}
	b := backoff.Backoff{Min: e.minWait, Max: e.maxWait}
	waiting := false // for an address
	for ctx.Err() == nil {
		addr := e.opts.Addr
		if e.opts.Resolve != nil {
			addr = e.opts.Resolve()
		}
		if addr == "" {
			// Not a failure (the proxy has no config yet, say): no
			// warning, no backoff; events wait in memory meanwhile.
			if !waiting {
				e.log.Debug("telemetry: collector address not known yet; events wait until it is")
				waiting = true
			}
			if !e.sleep(ctx, e.minWait) {
				return
			}
			continue
		}
		waiting = false
		start := e.opts.Clock.Now()
		err := e.stream(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errMoved) {
			e.log.Info("telemetry collector address changed; reconnecting", "from", addr)
			b.Reset()
			continue
		}
		// A stream that stayed up a while was healthy: back off from the
		// bottom again.
		if e.opts.Clock.Now().Sub(start) > time.Minute {
			b.Reset()
		}
		d := b.Next()
		st := e.Stats()
		e.log.Warn("telemetry stream down; events wait in memory and the spool", "collector", addr, "err", err,
			"retry_in", d.Round(time.Millisecond).String(), "queued", st.Queued, "spool_bytes", st.SpoolBytes)
		if !e.sleep(ctx, d) {
			return
		}
	}
}

// sleep waits d on the emitter's clock; false when ctx ended first.
func (e *Emitter) sleep(ctx context.Context, d time.Duration) bool {
	t := e.opts.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

type eventStream = grpc.BidiStreamingClient[pb.EventBatch, pb.EventAck]

// errMoved ends a stream whose collector address Resolve no longer gives.
var errMoved = errors.New("collector address changed")

// stream runs one Telemetry stream to addr until it fails or ctx ends.
func (e *Emitter) stream(ctx context.Context, addr string) error {
	var tlsCfg *tls.Config
	if e.opts.TLSFor != nil {
		tlsCfg = e.opts.TLSFor(addr)
	} else {
		tlsCfg = e.opts.TLS()
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithContextDialer(e.opts.Dialer), // nil: gRPC's own
	)
	if err != nil {
		return fmt.Errorf("collector address %s: %w", addr, err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := pb.NewTelemetryClient(conn).Stream(sctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	if err := st.Send(&pb.EventBatch{HelloInstance: e.instance}); err != nil {
		return fmt.Errorf("send hello: %w", recvCause(st, err))
	}
	first, err := st.Recv()
	if err != nil {
		return fmt.Errorf("await first ack: %w", err)
	}
	e.firstAck(first.GetThrough())
	e.up.Store(true)
	e.connects.Add(1)
	defer e.up.Store(false)
	e.log.Debug("telemetry stream up", "collector", addr, "instance", e.instance, "collector_has_through", first.GetThrough())

	recvErr := make(chan error, 1)
	go func() {
		for {
			a, err := st.Recv()
			if err != nil {
				recvErr <- err
				cancel()
				return
			}
			e.ack(a.GetThrough())
		}
	}()
	serr := e.sendLoop(sctx, st, addr)
	cancel()
	rerr := <-recvErr
	switch {
	case errors.Is(rerr, io.EOF):
		return errors.New("collector closed the stream")
	case rerr != nil && status.Code(rerr) != codes.Canceled:
		return rerr
	}
	return serr
}

// recvCause returns the stream's status after a failed Send (which only
// says io.EOF). Only for use while no other goroutine receives.
func recvCause(st eventStream, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, rerr := st.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return err
}

// firstAck applies the collector's first ack of a stream: everything
// in flight goes out again, except what the collector already holds.
func (e *Emitter) firstAck(through uint64) {
	e.mu.Lock()
	e.sent = 0
	if through >= e.next {
		// Only possible if two proxies share an instance or the spool was
		// replaced: our numbers would be taken for resends and dropped.
		e.log.Error("collector holds sequence numbers for this instance beyond any handed out here; skipping ahead (use a spool dir of its own per proxy)",
			"instance", e.instance, "collector_through", through, "next_seq", e.next)
		e.next = through + 1
	}
	e.mu.Unlock()
	e.ack(through)
}

// ack forgets the in-flight events with seq <= through.
func (e *Emitter) ack(through uint64) {
	e.mu.Lock()
	if through > e.acked {
		e.acked = through
		close(e.ackedCh)
		e.ackedCh = make(chan struct{})
	}
	n := 0
	for e.inflight.len() > 0 && e.inflight.at(0).ev.Seq <= through {
		e.inflight.pop()
		n++
	}
	e.sent = max(e.sent-n, 0)
	e.queued.Store(int64(e.inflight.len() + e.pending.len()))
	e.mu.Unlock()
	e.ackedN.Add(uint64(n))
	wake(e.notify)
	if e.spool != nil {
		wake(e.compactC)
	}
}

// sendLoop sends in-flight events in batches until ctx ends, a send
// fails or the collector moves (errMoved). A batch goes out when it is
// full, when nothing else is awaiting an ack, or when its oldest event has
// waited e.linger. With Options.Stats it also sends the stats, at once and
// then every StatsInterval: it is the stream's only sender after hello.
func (e *Emitter) sendLoop(ctx context.Context, st eventStream, addr string) error {
	timer := e.opts.Clock.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var statsC, recheckC <-chan time.Time
	statsDue, recheckDue := e.opts.Stats != nil, false
	if statsDue {
		t := e.opts.Clock.NewTicker(e.opts.StatsInterval)
		defer t.Stop()
		statsC = t.C()
	}
	if e.opts.Resolve != nil {
		t := e.opts.Clock.NewTicker(e.recheck)
		defer t.Stop()
		recheckC = t.C()
	}
	var since time.Time // when the oldest unsent event was first seen
	for {
		// Checked on every turn too, so that a steady flow of batches
		// cannot hold them back.
		select {
		case <-statsC:
			statsDue = true
		case <-recheckC:
			recheckDue = true
		default:
		}
		if statsDue {
			statsDue = false
			if err := e.sendStats(st); err != nil {
				return err
			}
		}
		if recheckDue {
			recheckDue = false
			// Unacknowledged events go out again on the next stream.
			if a := e.opts.Resolve(); a != "" && a != addr {
				return errMoved
			}
		}
		e.refill()
		e.mu.Lock()
		unsent := e.inflight.len() - e.sent
		outstanding := e.sent
		e.mu.Unlock()

		var wait <-chan time.Time
		send := unsent >= e.batchMax || (unsent > 0 && outstanding == 0)
		if unsent > 0 && !send {
			if since.IsZero() {
				since = e.now()
			}
			if d := e.linger - e.now().Sub(since); d > 0 {
				timer.Reset(d)
				wait = timer.C()
			} else {
				send = true
			}
		}
		if send {
			if err := e.sendBatch(st); err != nil {
				return err
			}
			since = time.Time{}
			continue
		}
		if unsent == 0 {
			since = time.Time{}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.notify:
		case <-wait:
		case <-statsC:
			statsDue = true
		case <-recheckC:
			recheckDue = true
		}
	}
}

// sendStats sends the current traffic stats, if any.
func (e *Emitter) sendStats(st eventStream) error {
	s := e.opts.Stats()
	if s == nil {
		return nil
	}
	if err := st.Send(&pb.EventBatch{Stats: s}); err != nil {
		return fmt.Errorf("send stats: %w", err)
	}
	return nil
}

func (e *Emitter) sendBatch(st eventStream) error {
	e.mu.Lock()
	n := min(e.inflight.len()-e.sent, e.batchMax)
	evs := make([]*pb.Event, n)
	for i := range n {
		evs[i] = e.inflight.at(e.sent + i).ev
	}
	e.sent += n
	e.mu.Unlock()
	// On failure the receiving goroutine learns the stream's status: only
	// one goroutine may call Recv.
	if err := st.Send(&pb.EventBatch{Events: evs}); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// refill tops inflight up: from the spool while it has events (they are
// older than pending), else from pending.
func (e *Emitter) refill() {
	e.spoolMu.Lock()
	defer e.spoolMu.Unlock()
	e.mu.Lock()
	room := e.window - e.inflight.len()
	acked := e.acked
	e.mu.Unlock()
	if room <= 0 {
		return
	}
	if e.spool != nil && e.spool.unread > 0 {
		evs, lost := e.spool.read(room, acked)
		if lost > 0 {
			e.dropped[dropSpool].Add(uint64(lost))
		}
		e.mu.Lock()
		for _, ev := range evs {
			e.inflight.push(entry{ev: ev, durable: true})
		}
		e.queued.Store(int64(e.inflight.len() + e.pending.len()))
		e.mu.Unlock()
		room -= len(evs)
		if e.spool.unread > 0 || room == 0 {
			return
		}
	}
	// In chunks, and sanitizing outside the lock, so Emit never waits
	// long. The chunk is in neither queue meanwhile; everything that
	// looks at both holds spoolMu, as we do.
	var chunk [256]*pb.Event
	for room > 0 {
		e.mu.Lock()
		n := min(room, e.pending.len(), len(chunk))
		for i := range n {
			chunk[i] = e.pending.pop()
		}
		e.mu.Unlock()
		if n == 0 {
			return
		}
		for _, ev := range chunk[:n] {
			sanitize(ev)
		}
		e.mu.Lock()
		for _, ev := range chunk[:n] {
			if ev.Seq > e.acked {
				e.inflight.push(entry{ev: ev})
			}
		}
		e.queued.Store(int64(e.inflight.len() + e.pending.len()))
		e.mu.Unlock()
		room -= n
	}
}

// spoolLoop writes pending to the spool when it grows, deletes
// acknowledged segments and keeps the spool's state file current.
func (e *Emitter) spoolLoop(ctx context.Context) {
	t := e.opts.Clock.NewTicker(time.Second)
	defer t.Stop()
	var spoolFull bool
	var retryAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.spillC:
			if !spoolFull && e.now().After(retryAt) {
				full, err := e.spill()
				spoolFull = full
				if err != nil {
					e.log.Error("cannot write the telemetry spool; events wait in memory and are dropped when it is full", "spool", e.opts.SpoolDir, "err", err)
					retryAt = e.now().Add(time.Second)
				}
			}
		case <-e.compactC:
			if e.compact(false) {
				spoolFull = false
			}
		case <-t.C():
			if e.compact(true) {
				spoolFull = false
			}
			wake(e.spillC)
		}
	}
}

// spill moves pending to the spool once it holds spillAt events, and
// extends the sequence reservation when due. full says the spool had no
// room for all of it.
func (e *Emitter) spill() (full bool, err error) {
	e.spoolMu.Lock()
	defer e.spoolMu.Unlock()
	e.mu.Lock()
	var evs []*pb.Event
	if n := e.pending.len(); n >= e.spillAt {
		evs = make([]*pb.Event, n)
		for i := range n {
			evs[i] = e.pending.at(i)
		}
	}
	reserve := e.next+reserveBlock/2 >= e.reserved
	e.mu.Unlock()
	if reserve {
		if err := e.saveState(reserveBlock); err != nil {
			e.log.Error("cannot reserve telemetry sequence numbers in the spool; a crash now may reuse some", "err", err)
		}
	}
	if len(evs) == 0 {
		return false, nil
	}
	for _, ev := range evs {
		sanitize(ev)
	}
	consumed, bad, err := e.spool.append(evs)
	e.mu.Lock()
	for range consumed {
		e.pending.pop()
	}
	e.queued.Store(int64(e.inflight.len() + e.pending.len()))
	e.mu.Unlock()
	e.spooled.Add(uint64(consumed - bad))
	e.dropped[dropSpool].Add(uint64(bad))
	e.spoolBytes.Store(e.spool.size)
	wake(e.notify)
	if err != nil {
		return false, err
	}
	if consumed < len(evs) {
		e.log.Warn("telemetry spool is full; events wait in memory and are dropped when it is full too", "spool", e.opts.SpoolDir, "spool_limit_bytes", e.opts.SpoolLimitBytes)
		return true, nil
	}
	return false, nil
}

// compact deletes acknowledged segments and, when they went or on a tick,
// writes the acked mark to the state file. It says whether space was
// freed.
func (e *Emitter) compact(tick bool) bool {
	e.spoolMu.Lock()
	defer e.spoolMu.Unlock()
	e.mu.Lock()
	acked, saved := e.acked, e.savedAck
	e.mu.Unlock()
	removed := e.spool.compact(acked)
	e.spoolBytes.Store(e.spool.size)
	if (removed || tick) && acked != saved {
		if err := e.saveState(0); err != nil {
			e.log.Warn("cannot save the telemetry spool state; a restart resends a little more", "err", err)
		}
	}
	return removed
}

// saveState writes the spool's state, reserving extend more sequence
// numbers past the next one when extend > 0. spoolMu must be held.
func (e *Emitter) saveState(extend uint64) error {
	e.mu.Lock()
	st := spoolState{Instance: e.instance, SeqReserved: e.reserved, Acked: e.acked}
	if extend > 0 {
		st.SeqReserved = e.next + extend
	}
	e.mu.Unlock()
	if err := e.spool.saveState(st); err != nil {
		return err
	}
	e.mu.Lock()
	e.reserved = max(e.reserved, st.SeqReserved)
	e.savedAck = st.Acked
	e.mu.Unlock()
	return nil
}
