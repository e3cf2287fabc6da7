package eventlog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/atomicfile"
	"github.com/trellismesh/trellis/internal/telemetry"
)

// DefaultSegmentBytes is the segment size when Options.SegmentBytes is 0.
const DefaultSegmentBytes = 64 << 20

// ErrClosed is returned by Append and Read after Close.
var ErrClosed = errors.New("eventlog: log is closed")

// Options configure Open. The zero value means the documented defaults.
type Options struct {
	// SegmentBytes is the size past which the next record starts a new
	// segment; 0 means DefaultSegmentBytes. A segment always takes at least
	// one record, so one record larger than this makes a larger segment.
	SegmentBytes int64
	// Logger receives warnings, such as a torn tail dropped by Open; nil
	// means slog.Default().
	Logger *slog.Logger
}

var (
	_ telemetry.Appender  = (*Log)(nil)
	_ telemetry.LogReader = (*Log)(nil)
)

// Log is an open event log. Append, Read, LastIndex and Wait are safe for
// concurrent use; Close stops them.
type Log struct {
	dir    string
	opts   Options
	logger *slog.Logger
	lock   *os.File

	// Append hands requests to the commit goroutine, which writes every
	// request queued while it was busy with one write and one fsync.
	reqs chan *appendReq
	done chan struct{} // closed when the commit goroutine exits

	closeMu sync.RWMutex // Append holds it for reading while it queues
	closing bool

	// Owned by the commit goroutine (and by Open before it starts).
	active    *os.File
	activeSeg *segment
	size      int64 // of the active segment, all of it durable
	sparseOff int64 // offset of the active segment's last sparse entry
	next      uint64
	prevHash  [hashSize]byte
	buf       []byte
	chain     chainer
	failed    error

	last  atomic.Uint64 // newest durable index; written under mu
	syncs atomic.Uint64 // fsyncs of appended records, for tests

	mu      sync.Mutex
	closed  bool
	segs    []*segment // by first index; the last is the active one
	waiters map[uint64]chan struct{}
}

// segment is one segment file. Its sparse index maps some record indexes to
// their offsets so that Read does not scan a segment from its start.
type segment struct {
	first uint64
	path  string
	// end is the durable size of the segment, or -1 when not known (a
	// segment found by Open that is not the last: its file size). Guarded
	// by Log.mu.
	end int64

	mu     sync.Mutex
	built  bool // sparse covers the whole segment
	sparse []sparseEntry
}

type sparseEntry struct {
	index uint64
	off   int64
}

// sparseStride is the distance in bytes between sparse index entries, so
// Read skips at most this much to find a record.
const sparseStride = 64 << 10

type appendReq struct {
	data []byte // the encoded events back to back
	ends []int  // end of each event in data
	last uint64
	err  error
	done chan struct{}
}

// maxBatch bounds the requests written by one write and one fsync.
const maxBatch = 1024

// Open opens the log in dir, creating dir (0700) and the first segment if
// needed. A torn frame at the end of the last segment, left by a crash
// during a write, is truncated with a warning; any other damage there makes
// Open fail. Open does not check the hash chain: Verify does. Only one Log
// may be open on a directory at a time, across processes.
func Open(dir string, opts Options) (*Log, error) {
	if opts.SegmentBytes < 0 {
		return nil, fmt.Errorf("eventlog: open %s: SegmentBytes %d is negative", dir, opts.SegmentBytes)
	}
	if opts.SegmentBytes == 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("eventlog: open %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("eventlog: open %s: %w", dir, err)
	}
	l := &Log{
		dir:     dir,
		opts:    opts,
		logger:  logger,
		lock:    lock,
		reqs:    make(chan *appendReq, maxBatch),
		done:    make(chan struct{}),
		waiters: make(map[uint64]chan struct{}),
	}
	if err := l.recover(); err != nil {
		if l.active != nil {
			l.active.Close()
		}
		lock.Close()
		if _, ok := errors.AsType[*TamperError](err); ok {
			return nil, fmt.Errorf("eventlog: open %s: the log is damaged at %w; run `trellis audit verify`, keep the directory as evidence and move it aside to start a new log", dir, err)
		}
		return nil, fmt.Errorf("eventlog: open %s: %w", dir, err)
	}
	go l.run()
	return l, nil
}

// recover finds the segments, the last record and its hash, truncating a
// torn tail, and opens the last segment for appending.
func (l *Log) recover() error {
	files, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		l.next = 1
		return l.startSegment(1)
	}
	for _, f := range files[:len(files)-1] {
		l.segs = append(l.segs, &segment{first: f.first, path: filepath.Join(l.dir, f.name), end: -1})
	}
	tail := files[len(files)-1]
	seg := &segment{first: tail.first, path: filepath.Join(l.dir, tail.name), built: true}
	f, err := os.OpenFile(seg.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	l.active, l.activeSeg = f, seg
	st, err := scanSegment(f, tail, true)
	if err != nil {
		return err
	}
	if st.torn != nil {
		l.logger.Warn("event log: dropping a torn record at the end of the last segment, left by a crash during a write",
			"segment", seg.path, "offset", st.end, "bytes", st.tornBytes, "record", st.next, "reason", st.torn.reason)
		if err := f.Truncate(st.end); err != nil {
			return fmt.Errorf("truncate the torn tail of %s: %w", tail.name, err)
		}
		if err := f.Sync(); err != nil {
			return err
		}
	}
	seg.sparse, seg.end = st.sparse, st.end
	l.size, l.next, l.prevHash = st.end, st.next, st.lastHash
	if len(st.sparse) > 0 {
		l.sparseOff = st.sparse[len(st.sparse)-1].off
	}
	l.segs = append(l.segs, seg)
	if st.records == 0 {
		// An empty last segment: a crash right after starting it (or after
		// a torn first record). The chain continues from the segment
		// before it.
		if len(files) == 1 {
			if tail.first != 1 {
				return fmt.Errorf("the only segment %s does not start at record 1; check the log with `trellis audit verify`", tail.name)
			}
		} else {
			prev := files[len(files)-2]
			pf, err := os.Open(filepath.Join(l.dir, prev.name))
			if err != nil {
				return err
			}
			pst, err := scanSegment(pf, prev, false)
			pf.Close()
			if err != nil {
				return err
			}
			if pst.next != tail.first {
				return fmt.Errorf("segment %s ends at record %d but %s starts at %d; check the log with `trellis audit verify`", prev.name, pst.next-1, tail.name, tail.first)
			}
			l.prevHash = pst.lastHash
		}
	}
	l.last.Store(l.next - 1)
	return nil
}

// segmentState is what scanSegment found.
type segmentState struct {
	records   uint64
	next      uint64 // index after the last record
	lastHash  [hashSize]byte
	end       int64 // offset after the last good frame
	sparse    []sparseEntry
	torn      *badFrame // a torn tail, only in the last segment
	tornBytes int64
}

// scanSegment reads every frame of a segment, checking framing and index
// order but not hashes. In the last segment a torn tail is returned in the
// state; any other damage is a *TamperError.
func scanSegment(f *os.File, sf segmentFile, last bool) (segmentState, error) {
	st := segmentState{next: sf.first}
	fi, err := f.Stat()
	if err != nil {
		return st, err
	}
	sc := newScanner(f, 0, fi.Size())
	var sparseOff int64
	for {
		fr, err := sc.next()
		if err == io.EOF {
			break
		}
		var bad *badFrame
		if errors.As(err, &bad) {
			if last && bad.torn {
				st.torn, st.tornBytes = bad, fi.Size()-bad.off
				break
			}
			return st, &TamperError{Index: st.next, Segment: sf.name, Offset: bad.off, Reason: bad.reason}
		}
		if err != nil {
			return st, fmt.Errorf("read %s: %w", sf.name, err)
		}
		if fr.index != st.next {
			return st, &TamperError{Index: st.next, Segment: sf.name, Offset: fr.off, Reason: indexReason(fr.index, st.next)}
		}
		if len(st.sparse) == 0 || fr.off-sparseOff >= sparseStride {
			st.sparse = append(st.sparse, sparseEntry{fr.index, fr.off})
			sparseOff = fr.off
		}
		st.records++
		st.next++
		st.lastHash = fr.hash
		st.end = fr.off + fr.size
	}
	return st, nil
}

// startSegment creates the segment whose first record is first and makes
// it the active one.
func (l *Log) startSegment(first uint64) error {
	path := filepath.Join(l.dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := atomicfile.SyncDir(l.dir); err != nil {
		f.Close()
		return err
	}
	old := l.active
	seg := &segment{first: first, path: path, built: true}
	l.active, l.activeSeg, l.size, l.sparseOff = f, seg, 0, 0
	l.mu.Lock()
	l.segs = append(l.segs, seg)
	l.mu.Unlock()
	if old != nil {
		// Everything in it was fsynced by the write that filled it.
		if err := old.Close(); err != nil {
			l.logger.Warn("event log: closing a full segment", "err", err)
		}
	}
	return nil
}

// Append makes events durable as the next records of the log and returns
// the index of the last one (LastIndex when events is empty). Appends from
// concurrent callers share one write and one fsync. After a failed write or
// fsync every Append fails: reopening the log recovers what reached the
// disk. A failed Append may have stored some of its events (those before
// a segment change), so a caller that retries delivers at least once.
// Append does not keep events or modify them.
func (l *Log) Append(events ...*pb.Event) (uint64, error) {
	r := &appendReq{ends: make([]int, 0, len(events)), done: make(chan struct{})}
	mo := proto.MarshalOptions{Deterministic: true}
	for i, ev := range events {
		if ev == nil {
			return 0, fmt.Errorf("eventlog: append: event %d is nil", i)
		}
		start := len(r.data)
		var err error
		if r.data, err = mo.MarshalAppend(r.data, ev); err != nil {
			return 0, fmt.Errorf("eventlog: append: event %d: %w", i, err)
		}
		if n := len(r.data) - start; n > MaxEventBytes {
			return 0, fmt.Errorf("eventlog: append: event %d is %d bytes encoded, more than the %d allowed", i, n, MaxEventBytes)
		}
		r.ends = append(r.ends, len(r.data))
	}
	l.closeMu.RLock()
	if l.closing {
		l.closeMu.RUnlock()
		return 0, ErrClosed
	}
	if len(events) == 0 {
		l.closeMu.RUnlock()
		return l.LastIndex(), nil
	}
	l.reqs <- r
	l.closeMu.RUnlock()
	<-r.done
	if r.err != nil {
		return 0, r.err
	}
	return r.last, nil
}

// run is the commit goroutine.
func (l *Log) run() {
	defer close(l.done)
	batch := make([]*appendReq, 0, maxBatch)
	for r := range l.reqs {
		batch = append(batch[:0], r)
	drain:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-l.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		err := l.failed
		if err == nil {
			if err = l.write(batch); err != nil {
				l.failed = fmt.Errorf("eventlog: append: %w (appends fail until the log is reopened)", err)
				l.logger.Error("event log: write failed; appends fail until the log is reopened", "dir", l.dir, "err", err)
				err = l.failed
			}
		}
		for _, r := range batch {
			r.err = err
			close(r.done)
		}
		clear(batch)
	}
}

// write appends the batch's events to the active segment, starting new
// segments as needed, and makes them durable.
func (l *Log) write(batch []*appendReq) error {
	buf := l.buf[:0]
	next, prev := l.next, l.prevHash
	var sparse []sparseEntry
	for _, r := range batch {
		start := 0
		for _, end := range r.ends {
			ev := r.data[start:end]
			start = end
			off := l.size + int64(len(buf))
			if off > 0 && off+int64(frameSize(len(ev))) > l.opts.SegmentBytes {
				if err := l.flush(buf, next, prev, sparse); err != nil {
					return err
				}
				if err := l.startSegment(next); err != nil {
					return fmt.Errorf("start segment %d: %w", next, err)
				}
				buf, sparse, off = buf[:0], sparse[:0], 0
			}
			if off == 0 || off-l.sparseOff >= sparseStride {
				sparse = append(sparse, sparseEntry{next, off})
				l.sparseOff = off
			}
			prev = l.chain.next(&prev, next, ev)
			buf = appendFrame(buf, next, ev, &prev)
			next++
		}
		r.last = next - 1
	}
	err := l.flush(buf, next, prev, sparse)
	if cap(buf) <= 4<<20 {
		l.buf = buf
	}
	return err
}

// flush writes buf at the end of the active segment, fsyncs it, and
// publishes its records: next is the index after them and prev the hash of
// the last.
func (l *Log) flush(buf []byte, next uint64, prev [hashSize]byte, sparse []sparseEntry) error {
	if len(buf) == 0 {
		return nil
	}
	if _, err := l.active.WriteAt(buf, l.size); err != nil {
		return err
	}
	if err := l.active.Sync(); err != nil {
		return err
	}
	l.syncs.Add(1)
	l.size += int64(len(buf))
	l.next, l.prevHash = next, prev

	seg := l.activeSeg
	seg.mu.Lock()
	seg.sparse = append(seg.sparse, sparse...)
	seg.mu.Unlock()

	l.mu.Lock()
	seg.end = l.size
	last := next - 1
	l.last.Store(last)
	for after, ch := range l.waiters {
		if after < last {
			close(ch)
			delete(l.waiters, after)
		}
	}
	l.mu.Unlock()
	return nil
}

// LastIndex is the index of the newest durable record (0 when empty).
func (l *Log) LastIndex() uint64 { return l.last.Load() }

// closedCh is returned by Wait when a record is already there.
var closedCh = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// Wait returns a channel closed once a record with Index > after is
// durable (at once if one already is). Callers waiting on the same after
// share one channel, so abandoning a Wait costs nothing. Close does not
// close pending channels: a caller also selects on its own cancellation.
func (l *Log) Wait(after uint64) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.Load() > after {
		return closedCh
	}
	ch, ok := l.waiters[after]
	if !ok {
		ch = make(chan struct{})
		l.waiters[after] = ch
	}
	return ch
}

// Close waits for appends in progress, then closes the log. Later Appends
// and Reads return ErrClosed. Closing twice is a no-op.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if l.closing {
		l.closeMu.Unlock()
		return nil
	}
	l.closing = true
	close(l.reqs)
	l.closeMu.Unlock()
	<-l.done

	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	err := l.active.Close()
	if cerr := l.lock.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("eventlog: close %s: %w", l.dir, err)
	}
	return nil
}
