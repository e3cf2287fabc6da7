package sink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/internal/atomicfile"
	"github.com/trellismesh/trellis/internal/backoff"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/telemetry"
)

// DelivererConfig configures a Deliverer. Zero values mean the documented
// defaults.
type DelivererConfig struct {
	// Name identifies the sink across restarts: normally its --audit-sink
	// URL as given. The cursor file is Dir/cursor-<hash of Name>, so a
	// changed URL (even a query parameter) starts over from the first
	// record. Required.
	Name string
	// Sink receives the batches. The Deliverer does not close it.
	Sink Sink
	// Log is read from the cursor on. Required.
	Log telemetry.LogReader
	// Dir holds the cursor file; it must exist. One Deliverer per Dir and
	// Name at a time.
	Dir string
	// MaxBatch is the most records sent at once; 0 means 500.
	MaxBatch int
	// BatchDelay is how long to wait for a batch to fill once a record is
	// waiting; 0 means 50ms, negative means send at once.
	BatchDelay time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts to send a
	// failed batch, which doubles, with jitter, from one to the other;
	// 0 means 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// Logger; nil means none.
	Logger *slog.Logger
	// Clock times BatchDelay and the waits between attempts; nil is the
	// system clock.
	Clock clock.Clock
}

const (
	defaultMaxBatch   = 500
	defaultBatchDelay = 50 * time.Millisecond
	defaultMinBackoff = 100 * time.Millisecond
	defaultMaxBackoff = 10 * time.Second
)

// Deliverer sends one log to one sink, at least once and in order, from a
// cursor kept on disk (see the package doc).
type Deliverer struct {
	cfg        DelivererConfig
	cursorPath string
	log        *slog.Logger

	cursor         atomic.Uint64
	delivered      atomic.Uint64
	batches        atomic.Uint64
	failedAttempts atomic.Uint64
}

// Stats is a snapshot of a Deliverer's progress, for metrics.
type Stats struct {
	// Cursor is the index of the last record the sink confirmed.
	Cursor uint64
	// Lag is how many durable records the sink has not confirmed yet.
	Lag uint64
	// Delivered and Batches count what the sink confirmed since this
	// Deliverer was made; FailedAttempts counts failed sends and reads.
	Delivered, Batches, FailedAttempts uint64
}

// NewDeliverer checks cfg, reads the cursor and checks it against the log:
// a cursor beyond the log's end, or on a record whose hash differs, means
// the log is not the one the cursor was written for.
func NewDeliverer(cfg DelivererConfig) (*Deliverer, error) {
	switch {
	case cfg.Name == "":
		return nil, errors.New("sink.NewDeliverer: Name is required")
	case cfg.Sink == nil || cfg.Log == nil:
		return nil, errors.New("sink.NewDeliverer: Sink and Log are required")
	case cfg.Dir == "":
		return nil, errors.New("sink.NewDeliverer: Dir is required")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = defaultMaxBatch
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.BatchDelay == 0 {
		cfg.BatchDelay = defaultBatchDelay
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = defaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = defaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d := &Deliverer{
		cfg:        cfg,
		cursorPath: filepath.Join(cfg.Dir, CursorFile(cfg.Name)),
		log:        cfg.Logger.With("sink", Display(cfg.Name)),
	}
	index, hash, err := readCursor(d.cursorPath)
	if err != nil {
		return nil, fmt.Errorf("sink.NewDeliverer: %w", err)
	}
	if index > 0 {
		recs, err := cfg.Log.Read(index, 1)
		if err != nil {
			return nil, fmt.Errorf("sink.NewDeliverer: read record %d: %w", index, err)
		}
		if len(recs) == 0 || recs[0].Index != index {
			return nil, fmt.Errorf("sink.NewDeliverer: cursor %s says record %d was delivered, but the log ends at %d "+
				"(is this the right data dir?); delete the cursor file to deliver the whole log again", d.cursorPath, index, cfg.Log.LastIndex())
		}
		if recs[0].Hash != hash {
			return nil, fmt.Errorf("sink.NewDeliverer: cursor %s: record %d in the log is not the one delivered (hash differs): "+
				"the log was replaced; delete the cursor file to deliver the whole log again", d.cursorPath, index)
		}
	}
	d.cursor.Store(index)
	return d, nil
}

// CursorFile is the name of the cursor file for the sink called name.
func CursorFile(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "cursor-" + hex.EncodeToString(sum[:8])
}

// Stats returns the current progress. It is safe to call at any time.
func (d *Deliverer) Stats() Stats {
	c := d.cursor.Load()
	last := d.cfg.Log.LastIndex()
	return Stats{
		Cursor:         c,
		Lag:            last - min(c, last),
		Delivered:      d.delivered.Load(),
		Batches:        d.batches.Load(),
		FailedAttempts: d.failedAttempts.Load(),
	}
}

// Run delivers until ctx is done, then returns nil. Failed sends, log
// reads and cursor writes are retried without end; Run returns an error
// only when going on would skip records (the log returned one out of
// order). It is not safe to call twice at once.
func (d *Deliverer) Run(ctx context.Context) error {
	b := backoff.Backoff{Min: d.cfg.MinBackoff, Max: d.cfg.MaxBackoff}
	for ctx.Err() == nil {
		next := d.cursor.Load() + 1
		if !d.awaitBatch(ctx, next) {
			return nil
		}
		recs, err := d.cfg.Log.Read(next, d.cfg.MaxBatch)
		if err != nil {
			d.failedAttempts.Add(1)
			d.log.Warn("reading the event log failed; retrying", "from", next, "err", err)
			if !d.sleep(ctx, b.Next()) {
				return nil
			}
			continue
		}
		if len(recs) == 0 {
			d.failedAttempts.Add(1)
			d.log.Warn("the event log returned no records though it has them; retrying", "from", next, "last", d.cfg.Log.LastIndex())
			if !d.sleep(ctx, b.Next()) {
				return nil
			}
			continue
		}
		for i, r := range recs {
			if r.Index != next+uint64(i) {
				return fmt.Errorf("sink %s: the log returned record %d where %d belongs; refusing to skip records", Display(d.cfg.Name), r.Index, next+uint64(i))
			}
		}
		if !d.send(ctx, recs, &b) {
			return nil
		}
		last := recs[len(recs)-1]
		for {
			err := writeCursor(d.cursorPath, last.Index, last.Hash)
			if err == nil {
				break
			}
			// Sending on would only widen what a restart sends again; wait
			// for the disk instead.
			d.failedAttempts.Add(1)
			d.log.Error("saving the delivery cursor failed; retrying", "file", d.cursorPath, "err", err)
			if !d.sleep(ctx, b.Next()) {
				return nil
			}
		}
		b.Reset()
		d.cursor.Store(last.Index)
		d.delivered.Add(uint64(len(recs)))
		d.batches.Add(1)
	}
	return nil
}

// awaitBatch waits until record next is durable, then up to BatchDelay for
// a full batch. It returns false when ctx is done.
func (d *Deliverer) awaitBatch(ctx context.Context, next uint64) bool {
	if d.cfg.Log.LastIndex() < next {
		select {
		case <-ctx.Done():
			return false
		case <-d.cfg.Log.Wait(next - 1):
		}
	}
	full := next + uint64(d.cfg.MaxBatch) - 1
	if d.cfg.BatchDelay < 0 || d.cfg.Log.LastIndex() >= full {
		return true
	}
	t := d.cfg.Clock.NewTimer(d.cfg.BatchDelay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
	case <-d.cfg.Log.Wait(full - 1):
	}
	return true
}

// send sends recs until the sink confirms them. It returns false when ctx
// is done first.
func (d *Deliverer) send(ctx context.Context, recs []telemetry.Record, b *backoff.Backoff) bool {
	first, last := recs[0].Index, recs[len(recs)-1].Index
	for failures := 0; ; failures++ {
		err := d.cfg.Sink.Send(ctx, recs)
		if err == nil {
			if failures > 0 {
				d.log.Info("sink recovered", "failed_attempts", failures, "first", first, "last", last)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d.failedAttempts.Add(1)
		wait := b.Next()
		d.log.Warn("delivery failed; retrying the same records", "first", first, "last", last,
			"attempt", failures+1, "retry_in", wait.Round(time.Millisecond), "err", err)
		if !d.sleep(ctx, wait) {
			return false
		}
	}
}

// sleep waits wait on the deliverer's clock; false when ctx ended first.
func (d *Deliverer) sleep(ctx context.Context, wait time.Duration) bool {
	t := d.cfg.Clock.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// The cursor file holds "INDEX HASH\n": the last confirmed record's index
// and hash, hex.

func readCursor(path string) (uint64, [32]byte, error) {
	var hash [32]byte
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, hash, nil
	}
	if err != nil {
		return 0, hash, err
	}
	bad := fmt.Errorf("cursor file %s is damaged (%q); delete it to deliver the whole log again", path, b)
	idx, hx, ok := bytes.Cut(bytes.TrimSuffix(b, []byte("\n")), []byte(" "))
	if !ok {
		return 0, hash, bad
	}
	index, err := strconv.ParseUint(string(idx), 10, 64)
	if err != nil || index == 0 {
		return 0, hash, bad
	}
	if n, err := hex.Decode(hash[:], hx); err != nil || n != len(hash) || len(hx) != 2*len(hash) {
		return 0, hash, bad
	}
	return index, hash, nil
}

// writeCursor replaces the cursor file atomically and durably: a crash
// leaves the old cursor or the new one.
func writeCursor(path string, index uint64, hash [32]byte) error {
	return atomicfile.WriteFile(path, fmt.Appendf(nil, "%d %x\n", index, hash), 0o600)
}
