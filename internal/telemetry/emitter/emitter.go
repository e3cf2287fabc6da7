package emitter

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/clock"
)

// Defaults for zero Options fields.
const (
	DefaultMemoryLimit     = 10_000
	DefaultSpoolLimitBytes = 64 << 20
	DefaultStatsInterval   = 10 * time.Second
)

const (
	// maxBatch and linger bound a batch: it goes out when it has maxBatch
	// events, when nothing is in flight, or when its oldest event has
	// waited linger. Under load that gives big batches (one fsync in the
	// collector each); a lone audit event still goes out at once.
	maxBatch = 500
	linger   = 100 * time.Millisecond
	// reserveBlock is how many sequence numbers are reserved in the
	// spool's state file at a time, so a crash never reuses a number.
	reserveBlock = 1 << 16
)

// Options configure an Emitter. Zero values mean the documented defaults.
type Options struct {
	// Addr is the collector's gRPC address, host:port. Required unless
	// Resolve is set.
	Addr string
	// Resolve, when set, is called before every connection attempt
	// instead of using Addr. An empty result means the address is not
	// known yet: Run asks again a little later, without counting it as a
	// failure. While a stream is up Run asks every few seconds too, and
	// moves to a new address when the answer changes. It must not block.
	Resolve func() string
	// TLS returns the client configuration for a new connection: it must
	// present the current workload certificate (GetClientCertificate) and
	// verify the collector by its SPIFFE ID, as the proxy verifies the
	// control plane. It is called for every connection attempt. Required
	// unless TLSFor is set.
	TLS func() *tls.Config
	// TLSFor, when set, is used instead of TLS, with the address being
	// dialed: which identity to verify may depend on it (the control
	// plane, or an external collector).
	TLSFor func(addr string) *tls.Config
	// Dialer, when set, opens the TCP connections to the collector (a
	// transparent proxy marks its sockets so they are not captured); nil
	// means gRPC's default dialer.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// Stats, when set, returns the traffic counters to report. They go on
	// the stream right after it is established and then every
	// StatsInterval, in a batch of their own; a nil result sends nothing.
	// It is called from Run's goroutine and must not block.
	Stats func() *pb.TrafficStats
	// StatsInterval is how often Stats are sent (default 10s).
	StatsInterval time.Duration
	// Instance names this proxy's sequence space at the collector (use the
	// config stream's Hello.instance). Empty means a random one. With a
	// SpoolDir the spool remembers the instance it was created with and
	// keeps using it, so that its sequence continues across restarts;
	// Instance then only names a new spool.
	Instance string
	// SpoolDir holds events the memory queue has no room for and, on
	// Close, every event not yet acknowledged, so that a restarted proxy
	// resends them (with their original sequence numbers). It must belong
	// to one proxy. Empty means memory only: events not acknowledged when
	// the process exits are lost (Close counts them as dropped).
	SpoolDir string
	// MemoryLimit is how many events wait in memory (default 10,000; at
	// least 4). A quarter of it may be in flight; half of it full starts
	// spilling to the spool.
	MemoryLimit int
	// SpoolLimitBytes caps the spool's size on disk (default 64 MiB).
	SpoolLimitBytes int64
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Clock stamps events that have no time and times Run: reconnect
	// waits, the wait for an address, StatsInterval, the Resolve recheck,
	// the batch linger and the spool's upkeep. nil is the system clock.
	Clock clock.Clock
}

// Reasons events are dropped (label of trellis_telemetry_events_dropped_total).
const (
	dropQueueFull = iota // memory full and no spool, or spool full too
	dropShutdown         // lost at Close (memory only or spool full), or emitted after it
	dropSpool            // unreadable or unencodable in the spool
	numDropReasons
)

var dropReasons = [numDropReasons]string{"queue_full", "shutdown", "spool_error"}

// entry is an event in flight; durable says it is also in the spool.
type entry struct {
	ev      *pb.Event
	durable bool
}

// Emitter queues events and streams them to the collector. Emit may be
// called from any goroutine at any time; Run delivers; Close persists
// what is left.
//
// Events flow oldest first through three places, each holding higher
// sequence numbers than the one before: inflight (being sent, until
// acknowledged), then the spool on disk, then pending (newest, in memory).
// The sender refills inflight from the spool while the spool has events,
// else from pending; when pending grows past half the memory limit it is
// written to the spool.
type Emitter struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	instance string

	memLimit int
	window   int // max events in flight
	batchMax int
	spillAt  int
	linger   time.Duration
	minWait  time.Duration // reconnect backoff bounds; also the wait for an address
	maxWait  time.Duration
	// recheck is how often an established stream asks Resolve whether
	// the collector moved.
	recheck time.Duration

	notify   chan struct{} // wakes the sender
	spillC   chan struct{} // wakes the spool loop to spill or reserve
	compactC chan struct{} // wakes the spool loop after acks

	// spoolMu guards spool and serializes every move into or out of it
	// and between pending and inflight. Lock order: spoolMu, then mu.
	spoolMu sync.Mutex
	spool   *spool

	mu        sync.Mutex
	next      uint64 // next seq to hand out
	reserved  uint64 // the spool's state reserves seqs below this
	acked     uint64 // highest seq acknowledged
	savedAck  uint64 // acked as last written to the spool state
	inflight  ring[entry]
	sent      int // inflight[:sent] went out on the current stream
	pending   ring[*pb.Event]
	closed    bool
	ackedCh   chan struct{} // closed and replaced when acked moves
	stopRun   context.CancelFunc
	runDone   chan struct{}
	closeOnce sync.Once
	closeErr  error

	emitted    atomic.Uint64
	ackedN     atomic.Uint64
	spooled    atomic.Uint64
	dropped    [numDropReasons]atomic.Uint64
	spoolBytes atomic.Int64
	queued     atomic.Int64
	up         atomic.Bool
	connects   atomic.Uint64
}

// New validates opts and, with a SpoolDir, opens the spool: it locks the
// directory, cuts off a torn tail left by a crash, and continues the
// spool's instance and sequence. Nothing is sent until Run.
func New(opts Options) (*Emitter, error) {
	if opts.Addr == "" && opts.Resolve == nil {
		return nil, errors.New("telemetry emitter: no collector address")
	}
	if opts.TLS == nil && opts.TLSFor == nil {
		return nil, errors.New("telemetry emitter: no TLS configuration: the collector requires the workload certificate")
	}
	if opts.StatsInterval < 0 {
		return nil, fmt.Errorf("telemetry emitter: negative stats interval %v", opts.StatsInterval)
	}
	if opts.StatsInterval == 0 {
		opts.StatsInterval = DefaultStatsInterval
	}
	if err := checkInstance(opts.Instance); err != nil {
		return nil, err
	}
	if opts.MemoryLimit < 0 || opts.SpoolLimitBytes < 0 {
		return nil, fmt.Errorf("telemetry emitter: negative limits (memory %d events, spool %d bytes)", opts.MemoryLimit, opts.SpoolLimitBytes)
	}
	if opts.MemoryLimit == 0 {
		opts.MemoryLimit = DefaultMemoryLimit
	}
	if opts.SpoolLimitBytes == 0 {
		opts.SpoolLimitBytes = DefaultSpoolLimitBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Clock = clock.Or(opts.Clock)
	mem := max(opts.MemoryLimit, 4)
	e := &Emitter{
		opts:     opts,
		log:      opts.Logger,
		now:      opts.Clock.Now,
		memLimit: mem,
		// Up to a quarter of the memory may be in flight, and pending is
		// spilled at half, so a quarter is left to absorb bursts while
		// the spool writes.
		window:   max(mem/4, 1),
		spillAt:  max(mem/2, 1),
		linger:   linger,
		minWait:  250 * time.Millisecond,
		maxWait:  30 * time.Second,
		recheck:  5 * time.Second,
		notify:   make(chan struct{}, 1),
		spillC:   make(chan struct{}, 1),
		compactC: make(chan struct{}, 1),
		next:     1,
		ackedCh:  make(chan struct{}),
	}
	e.batchMax = min(maxBatch, e.window)
	e.inflight = newRing[entry](e.window)
	e.pending = newRing[*pb.Event](mem)
	e.instance = opts.Instance
	if opts.SpoolDir != "" {
		sp, st, err := openSpool(opts.SpoolDir, opts.SpoolLimitBytes, e.log)
		if err != nil {
			return nil, fmt.Errorf("telemetry emitter: %w", err)
		}
		if st.Instance != "" {
			if e.instance != "" && e.instance != st.Instance {
				e.log.Info("telemetry spool continues its own instance", "instance", st.Instance, "spool", opts.SpoolDir)
			}
			e.instance = st.Instance
		}
		if e.instance == "" {
			e.instance = randomInstance()
		}
		e.acked, e.savedAck = st.Acked, st.Acked
		e.next = max(st.SeqReserved, sp.lastSeq()+1, st.Acked+1, 1)
		e.reserved = e.next + reserveBlock
		if err := sp.saveState(spoolState{Instance: e.instance, SeqReserved: e.reserved, Acked: e.acked}); err != nil {
			sp.close()
			return nil, fmt.Errorf("telemetry emitter: %w", err)
		}
		e.spool = sp
		e.spoolBytes.Store(sp.size)
		if sp.unread > 0 {
			e.log.Info("telemetry spool has events from before the restart; resending them", "events", sp.unread, "bytes", sp.size, "next_seq", e.next)
		}
	}
	if e.instance == "" {
		e.instance = randomInstance()
	}
	return e, nil
}

// checkInstance applies the collector's rule for hello_instance, so a bad
// value fails at start rather than on every stream.
func checkInstance(s string) error {
	if len(s) > 128 || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) >= 0 {
		return fmt.Errorf("telemetry emitter: instance %q: use at most 128 printable characters without spaces", s)
	}
	return nil
}

func randomInstance() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Instance is the sequence space this emitter reports under.
func (e *Emitter) Instance() string { return e.instance }

// Emit numbers ev and queues it for delivery. It never blocks on I/O and
// never waits for the collector: when memory and spool are full, or after
// Close, the event is dropped and counted. Emit takes ownership of ev;
// the caller must not touch it afterwards. A nil Time is set to now.
func (e *Emitter) Emit(ev *pb.Event) {
	if ev.Time == nil {
		ev.Time = timestamppb.New(e.now())
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.dropped[dropShutdown].Add(1)
		return
	}
	ev.Seq = e.next
	e.next++
	if e.inflight.len()+e.pending.len() >= e.memLimit {
		e.mu.Unlock()
		e.emitted.Add(1)
		e.dropped[dropQueueFull].Add(1)
		return
	}
	e.pending.push(ev)
	np := e.pending.len()
	unsent := e.inflight.len() - e.sent + np
	e.queued.Store(int64(e.inflight.len() + np))
	reserve := e.spool != nil && e.next+reserveBlock/2 >= e.reserved
	e.mu.Unlock()
	e.emitted.Add(1)
	if unsent == 1 || unsent%e.batchMax == 0 {
		wake(e.notify)
	}
	if e.spool != nil && (np >= e.spillAt || reserve) {
		wake(e.spillC)
	}
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Dropped is how many events were lost: dropped for lack of room, lost
// at Close, emitted after Close, or unreadable in the spool.
func (e *Emitter) Dropped() uint64 {
	var n uint64
	for i := range e.dropped {
		n += e.dropped[i].Load()
	}
	return n
}

// Stats is a point-in-time view of an Emitter.
type Stats struct {
	Emitted    uint64 // events passed to Emit (and numbered)
	Acked      uint64 // events the collector acknowledged
	Dropped    uint64 // see Dropped
	Spooled    uint64 // events written to the spool
	Queued     int64  // events in memory
	SpoolBytes int64
	Connected  bool
}

// Stats returns the emitter's counters.
func (e *Emitter) Stats() Stats {
	return Stats{
		Emitted: e.emitted.Load(), Acked: e.ackedN.Load(), Dropped: e.Dropped(), Spooled: e.spooled.Load(),
		Queued: e.queued.Load(), SpoolBytes: e.spoolBytes.Load(), Connected: e.up.Load(),
	}
}

// Flush waits until every event emitted before the call is acknowledged
// (or dropped), or ctx ends. Run must be running for it to finish.
func (e *Emitter) Flush(ctx context.Context) error {
	e.mu.Lock()
	target, closed := e.next-1, e.closed
	e.mu.Unlock()
	if closed {
		return errors.New("telemetry flush: emitter closed")
	}
	// A poll besides the ack channel: some moves (events the spool could
	// not read, Close emptying the queues) close no channel. It is real
	// time, not the clock's: nothing here is timed, and on a stepped
	// clock Flush would wait for those moves until ctx ends.
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		low, ch := e.lowestHeld()
		if low > target {
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("telemetry flush: %w (events from seq %d not acknowledged)", ctx.Err(), low)
		}
	}
}

// lowestHeld is (a lower bound of) the lowest seq not yet acknowledged
// and still held, or the next seq when nothing is held; and the channel
// closed at the next ack.
func (e *Emitter) lowestHeld() (uint64, chan struct{}) {
	e.spoolMu.Lock()
	defer e.spoolMu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	low := e.next
	if e.pending.len() > 0 {
		low = e.pending.at(0).Seq
	}
	if e.spool != nil {
		if s, ok := e.spool.nextUnread(); ok {
			low = min(low, s)
		}
	}
	if e.inflight.len() > 0 {
		low = min(low, e.inflight.at(0).ev.Seq)
	}
	return low, e.ackedCh
}

// Close stops Run (if running) and, with a spool, writes every event not
// yet acknowledged to it together with the sequence state, so a restart
// resends them; without a spool they are lost and counted as dropped.
// Events emitted after Close are dropped. Calling it again returns the
// first result.
func (e *Emitter) Close() error {
	e.closeOnce.Do(func() { e.closeErr = e.close() })
	return e.closeErr
}

func (e *Emitter) close() error {
	e.mu.Lock()
	e.closed = true
	stop, done := e.stopRun, e.runDone
	e.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}

	e.spoolMu.Lock()
	defer e.spoolMu.Unlock()
	e.mu.Lock()
	// Runs of in-flight events that came from memory (others are in the
	// spool already), then pending: each a segment of its own.
	var runs [][]*pb.Event
	var cur []*pb.Event
	for i := range e.inflight.len() {
		en := e.inflight.at(i)
		if en.durable {
			if cur != nil {
				runs, cur = append(runs, cur), nil
			}
			continue
		}
		cur = append(cur, en.ev)
	}
	if cur != nil {
		runs = append(runs, cur)
	}
	var rest []*pb.Event
	for e.pending.len() > 0 {
		rest = append(rest, e.pending.pop())
	}
	if rest != nil {
		runs = append(runs, rest)
	}
	held := 0
	for _, r := range runs {
		held += len(r)
	}
	for e.inflight.len() > 0 {
		e.inflight.pop()
	}
	e.sent = 0
	e.queued.Store(0)
	next, acked := e.next, e.acked
	e.mu.Unlock()

	if e.spool == nil {
		if held > 0 {
			e.dropped[dropShutdown].Add(uint64(held))
			e.log.Warn("telemetry emitter closed with unacknowledged events and no spool; they are lost", "events", held)
		}
		return nil
	}
	var errs []error
	lost := 0
	for _, r := range runs {
		for _, ev := range r {
			sanitize(ev)
		}
		n, err := e.spool.writeAside(r)
		if err != nil {
			errs = append(errs, err)
		}
		lost += len(r) - n
		e.spooled.Add(uint64(n))
	}
	if lost > 0 {
		e.dropped[dropShutdown].Add(uint64(lost))
		e.log.Error("telemetry spool has no room for the events left at shutdown; they are lost", "events", lost, "spool_limit_bytes", e.opts.SpoolLimitBytes)
	}
	if err := e.spool.saveState(spoolState{Instance: e.instance, SeqReserved: next, Acked: acked}); err != nil {
		errs = append(errs, err)
	}
	e.spoolBytes.Store(e.spool.size)
	e.spool.close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("telemetry emitter: close: %w", err)
	}
	return nil
}

// sanitize replaces invalid UTF-8 in ev's strings, which proto refuses to
// encode: one such event would otherwise fail every batch it is in.
func sanitize(ev *pb.Event) {
	for _, p := range []*string{
		&ev.Kind, &ev.Reporter, &ev.SourceId, &ev.SourceService, &ev.SourceNamespace,
		&ev.DestinationId, &ev.DestinationService, &ev.DestinationNamespace, &ev.Protocol,
		&ev.Method, &ev.Path, &ev.Decision, &ev.Policy, &ev.Reason, &ev.TraceId,
	} {
		if !utf8.ValidString(*p) {
			*p = strings.ToValidUTF8(*p, "\uFFFD")
		}
	}
	for k, v := range ev.Attributes {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			delete(ev.Attributes, k)
			ev.Attributes[strings.ToValidUTF8(k, "\uFFFD")] = strings.ToValidUTF8(v, "\uFFFD")
		}
	}
}
