// Package bolt implements store.Store on an embedded bbolt file, for a
// single control plane process.
//
// Each key is stored with its CreateRevision and ModRevision, and the
// store-wide revision is kept in the same file, so a reopened store continues
// where it left off. Watch history lives only in memory: a ring of the most
// recent events (Options.History). After a reopen the ring is empty, so a
// watch may start at the current revision or later, and anything older fails
// with store.ErrCompacted.
//
// Beyond the store.Store contract, a transaction may not name the same key
// twice (as in etcd), and Watch accepts a fromRevision above the current
// revision, delivering events once the store gets there.
//
// Only main-side wiring should import this package; everything else depends
// on the store.Store interface.
//
// It must not depend on the control plane or anything above the store
// contract (internal/store).
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/trellismesh/trellis/internal/store"
)

// Defaults for zero Options fields.
const (
	DefaultHistory     = 4096
	DefaultWatchBuffer = 1024
)

// lockTimeout bounds how long Open waits for the file lock, so a second
// process on the same file fails instead of hanging.
const lockTimeout = time.Second

// Options tune a Store. Zero values mean the documented defaults.
type Options struct {
	// History is how many recent events are kept in memory so a watch can
	// start from a past revision. Default DefaultHistory.
	History int
	// WatchBuffer is each watch channel's buffer, beyond any replayed
	// history. A watcher whose buffer is full is closed rather than
	// allowed to block writers. Default DefaultWatchBuffer.
	WatchBuffer int
}

func (o Options) withDefaults() (Options, error) {
	if o.History < 0 {
		return o, fmt.Errorf("options: History must not be negative, got %d", o.History)
	}
	if o.WatchBuffer < 0 {
		return o, fmt.Errorf("options: WatchBuffer must not be negative, got %d", o.WatchBuffer)
	}
	if o.History == 0 {
		o.History = DefaultHistory
	}
	if o.WatchBuffer == 0 {
		o.WatchBuffer = DefaultWatchBuffer
	}
	return o, nil
}

// On-disk layout. Bucket "kv" maps each key to
// createRevision (8 bytes, big endian) | modRevision (8 bytes) | value.
// Bucket "meta" holds the store revision and the layout version.
var (
	bucketKV    = []byte("kv")
	bucketMeta  = []byte("meta")
	keyRevision = []byte("revision")
	keyFormat   = []byte("format")
)

const (
	formatVersion = 1
	headerLen     = 16
)

// Store is a store.Store backed by a bbolt file. Create it with Open.
type Store struct {
	db   *bbolt.DB
	path string
	opts Options

	// txnMu serializes Txn from the bbolt commit through publishing its
	// events, so events reach the ring and watchers in revision order.
	txnMu sync.Mutex

	// mu guards everything below.
	mu     sync.Mutex
	closed bool
	rev    int64
	// compacted is the highest revision whose events may be missing from
	// the ring; a watch may start at compacted or later.
	compacted int64
	ring      eventRing
	watchers  map[*watcher]struct{}
}

var _ store.Store = (*Store)(nil)

type watcher struct {
	prefix string
	from   int64 // deliver only events with a greater revision
	ch     chan store.Event
	stop   func() bool // unregisters the ctx callback
}

// Open opens or creates the bbolt file at path (mode 0600). The parent
// directory must already exist.
func Open(path string, opts Options) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("bolt open %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockTimeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("bolt open %s: %w: the file is locked; is another process using it?", path, err)
		}
		return nil, fmt.Errorf("bolt open %s: %w", path, err)
	}
	var rev int64
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketKV); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch f := meta.Get(keyFormat); {
		case f == nil:
			if err := meta.Put(keyFormat, encodeInt(formatVersion)); err != nil {
				return err
			}
		case len(f) != 8 || int64(binary.BigEndian.Uint64(f)) != formatVersion:
			return fmt.Errorf("unsupported file format %x (want %d); was it written by a newer trellis?", f, formatVersion)
		}
		rev, err = readRevision(meta)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bolt open %s: %w", path, err)
	}
	return &Store{
		db:        db,
		path:      path,
		opts:      opts,
		rev:       rev,
		compacted: rev,
		ring:      eventRing{buf: make([]store.Event, opts.History)},
		watchers:  make(map[*watcher]struct{}),
	}, nil
}

// Path returns the file the store was opened on.
func (s *Store) Path() string { return s.path }

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := ctx.Err(); err != nil {
		return store.KV{}, fmt.Errorf("bolt get %q: %w", key, err)
	}
	var kv store.KV
	err := s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketKV).Get([]byte(key))
		if v == nil {
			return store.ErrNotFound
		}
		var err error
		kv, err = decodeKV(key, v)
		return err
	})
	if err != nil {
		return store.KV{}, fmt.Errorf("bolt get %q: %w", key, mapErr(err))
	}
	return kv, nil
}

// List implements store.Store. The revision is read in the same bbolt
// transaction as the keys, so it matches the listing exactly.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("bolt list %q: %w", prefix, err)
	}
	var (
		kvs []store.KV
		rev int64
	)
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		if rev, err = readRevision(tx.Bucket(bucketMeta)); err != nil {
			return err
		}
		p := []byte(prefix)
		c := tx.Bucket(bucketKV).Cursor()
		n := 0
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			// Checking ctx on every key costs more than the read itself.
			if n++; n%256 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			kv, err := decodeKV(string(k), v)
			if err != nil {
				return err
			}
			kvs = append(kvs, kv)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("bolt list %q: %w", prefix, mapErr(err))
	}
	return kvs, rev, nil
}

// Revision implements store.Store.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("bolt revision: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("bolt revision: %w", store.ErrClosed)
	}
	return s.rev, nil
}

// Txn implements store.Store. Conditions are checked against the state
// before the transaction; ops are then applied in order in one bbolt
// transaction. Ops that change nothing (deleting a missing key) produce no
// event, and a transaction made only of them keeps the current revision.
func (s *Store) Txn(ctx context.Context, ops ...store.Op) (int64, error) {
	if err := validateOps(ops); err != nil {
		return 0, fmt.Errorf("bolt txn: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("bolt txn: %w", err)
	}

	s.txnMu.Lock()
	defer s.txnMu.Unlock()

	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("bolt txn: %w", store.ErrClosed)
	}

	var (
		events []store.Event
		rev    int64
	)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		kvb, meta := tx.Bucket(bucketKV), tx.Bucket(bucketMeta)
		cur, err := readRevision(meta)
		if err != nil {
			return err
		}
		rev = cur + 1

		olds := make([][]byte, len(ops))
		for i, op := range ops {
			old := kvb.Get([]byte(op.Key))
			if err := checkCondition(op, old); err != nil {
				return err
			}
			olds[i] = old
		}

		for i, op := range ops {
			old := olds[i]
			switch op.Type {
			case store.OpPut:
				create := rev
				if old != nil {
					if len(old) < headerLen {
						return fmt.Errorf("key %q: corrupt record of %d bytes", op.Key, len(old))
					}
					create = int64(binary.BigEndian.Uint64(old[0:8]))
				}
				if err := kvb.Put([]byte(op.Key), encodeKV(create, rev, op.Value)); err != nil {
					return fmt.Errorf("key %q: %w", op.Key, err)
				}
				events = append(events, store.Event{
					Type:     store.EventPut,
					Revision: rev,
					KV: store.KV{
						Key:            op.Key,
						Value:          bytes.Clone(op.Value),
						CreateRevision: create,
						ModRevision:    rev,
					},
				})
			case store.OpDelete:
				if old == nil {
					continue
				}
				kv, err := decodeKV(op.Key, old)
				if err != nil {
					return err
				}
				if err := kvb.Delete([]byte(op.Key)); err != nil {
					return fmt.Errorf("key %q: %w", op.Key, err)
				}
				kv.ModRevision = rev
				events = append(events, store.Event{Type: store.EventDelete, Revision: rev, KV: kv})
			}
		}
		if len(events) == 0 {
			// Nothing changed: keep the revision and let bbolt skip the write.
			rev = cur
			return errNoop
		}
		return meta.Put(keyRevision, encodeInt(rev))
	})
	switch {
	case errors.Is(err, errNoop):
		return rev, nil
	case err != nil:
		return 0, fmt.Errorf("bolt txn: %w", mapErr(err))
	}
	s.publish(rev, events)
	return rev, nil
}

// errNoop rolls back a bbolt transaction that changed nothing.
var errNoop = errors.New("no-op transaction")

func validateOps(ops []store.Op) error {
	seen := make(map[string]struct{}, len(ops))
	for i, op := range ops {
		if op.Key == "" {
			return fmt.Errorf("op %d: empty key", i)
		}
		if op.Type != store.OpPut && op.Type != store.OpDelete {
			return fmt.Errorf("op %d on key %q: unknown op type %d", i, op.Key, op.Type)
		}
		if op.IfModRevision < store.AnyRevision {
			return fmt.Errorf("op %d on key %q: invalid IfModRevision %d (use store.AnyRevision, 0 or a revision)", i, op.Key, op.IfModRevision)
		}
		if len(op.Key) > bbolt.MaxKeySize {
			return fmt.Errorf("op %d: key of %d bytes exceeds the limit of %d", i, len(op.Key), bbolt.MaxKeySize)
		}
		if _, dup := seen[op.Key]; dup {
			return fmt.Errorf("op %d: key %q appears more than once in the transaction", i, op.Key)
		}
		seen[op.Key] = struct{}{}
	}
	return nil
}

func checkCondition(op store.Op, old []byte) error {
	switch want := op.IfModRevision; {
	case want == store.AnyRevision:
		return nil
	case want == 0:
		if old != nil {
			return fmt.Errorf("key %q exists, want absent: %w", op.Key, store.ErrConflict)
		}
		return nil
	case old == nil:
		return fmt.Errorf("key %q is absent, want mod revision %d: %w", op.Key, want, store.ErrConflict)
	case len(old) < headerLen:
		return fmt.Errorf("key %q: corrupt record of %d bytes", op.Key, len(old))
	default:
		if got := int64(binary.BigEndian.Uint64(old[8:16])); got != want {
			return fmt.Errorf("key %q has mod revision %d, want %d: %w", op.Key, got, want, store.ErrConflict)
		}
		return nil
	}
}

// publish records a committed transaction's events and hands them to
// watchers. The caller holds txnMu, so transactions publish in order.
func (s *Store) publish(rev int64, events []store.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev = rev
	for _, ev := range events {
		if evicted, ok := s.ring.push(ev); ok {
			s.compacted = max(s.compacted, evicted.Revision)
		}
	}
	for w := range s.watchers {
		if !w.sendLocked(events) {
			// Too far behind: close rather than block writers; the
			// caller lists again and re-watches.
			s.removeLocked(w)
		}
	}
}

// sendLocked queues the events w wants without blocking, reporting false if
// its buffer is full. s.mu is held.
func (w *watcher) sendLocked(events []store.Event) bool {
	for _, ev := range events {
		if ev.Revision <= w.from || !strings.HasPrefix(ev.KV.Key, w.prefix) {
			continue
		}
		select {
		case w.ch <- cloneEvent(ev):
		default:
			return false
		}
	}
	return true
}

// Watch implements store.Store. A fromRevision above the current revision
// is accepted: events arrive once the store passes it.
func (s *Store) Watch(ctx context.Context, prefix string, fromRevision int64) (<-chan store.Event, error) {
	if fromRevision < 0 {
		return nil, fmt.Errorf("bolt watch %q: invalid fromRevision %d", prefix, fromRevision)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bolt watch %q: %w", prefix, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("bolt watch %q: %w", prefix, store.ErrClosed)
	}
	from := fromRevision
	if from == 0 {
		from = s.rev
	}
	if from < s.compacted {
		return nil, fmt.Errorf("bolt watch %q from revision %d: %w (oldest watchable revision is %d)",
			prefix, fromRevision, store.ErrCompacted, s.compacted)
	}

	// Replay and registration happen under mu, which publish also holds,
	// so no event is missed or delivered twice. The replay gets its own
	// room in the channel so that catching up does not count as lagging.
	var replay []store.Event
	s.ring.each(func(ev store.Event) {
		if ev.Revision > from && strings.HasPrefix(ev.KV.Key, prefix) {
			replay = append(replay, ev)
		}
	})
	w := &watcher{
		prefix: prefix,
		from:   from,
		ch:     make(chan store.Event, len(replay)+s.opts.WatchBuffer),
	}
	for _, ev := range replay {
		w.ch <- cloneEvent(ev)
	}
	s.watchers[w] = struct{}{}
	w.stop = context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.removeLocked(w)
	})
	return w.ch, nil
}

// removeLocked unregisters w and closes its channel, once. s.mu is held.
func (s *Store) removeLocked(w *watcher) {
	if _, ok := s.watchers[w]; !ok {
		return
	}
	delete(s.watchers, w)
	w.stop()
	close(w.ch)
}

// Close implements store.Store: it waits for running transactions, closes
// every watch and the file. Later calls return nil.
func (s *Store) Close() error {
	s.txnMu.Lock()
	defer s.txnMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for w := range s.watchers {
		s.removeLocked(w)
	}
	s.ring = eventRing{}
	s.mu.Unlock()

	if err := s.db.Close(); err != nil {
		return fmt.Errorf("bolt close %s: %w", s.path, err)
	}
	return nil
}

// eventRing is a fixed-size FIFO of the most recent events.
type eventRing struct {
	buf   []store.Event
	start int
	n     int
}

// push appends ev, returning the event it evicted, if any.
func (r *eventRing) push(ev store.Event) (evicted store.Event, ok bool) {
	if len(r.buf) == 0 {
		return ev, true
	}
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = ev
		r.n++
		return store.Event{}, false
	}
	evicted = r.buf[r.start]
	r.buf[r.start] = ev
	r.start = (r.start + 1) % len(r.buf)
	return evicted, true
}

// each calls fn on every held event, oldest first.
func (r *eventRing) each(fn func(store.Event)) {
	for i := range r.n {
		fn(r.buf[(r.start+i)%len(r.buf)])
	}
}

func cloneEvent(ev store.Event) store.Event {
	ev.KV.Value = bytes.Clone(ev.KV.Value)
	return ev
}

// mapErr turns bbolt's closed-database error into store.ErrClosed.
func mapErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}

func readRevision(meta *bbolt.Bucket) (int64, error) {
	v := meta.Get(keyRevision)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("corrupt revision record of %d bytes", len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func encodeInt(n int64) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(n))
}

func encodeKV(create, mod int64, value []byte) []byte {
	b := make([]byte, headerLen, headerLen+len(value))
	binary.BigEndian.PutUint64(b[0:8], uint64(create))
	binary.BigEndian.PutUint64(b[8:16], uint64(mod))
	return append(b, value...)
}

// decodeKV copies v, which bbolt only lends for the transaction.
func decodeKV(key string, v []byte) (store.KV, error) {
	if len(v) < headerLen {
		return store.KV{}, fmt.Errorf("key %q: corrupt record of %d bytes", key, len(v))
	}
	return store.KV{
		Key:            key,
		Value:          bytes.Clone(v[headerLen:]),
		CreateRevision: int64(binary.BigEndian.Uint64(v[0:8])),
		ModRevision:    int64(binary.BigEndian.Uint64(v[8:16])),
	}, nil
}
