package sharedca

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cafiles"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/store"
)

// Reports: a replica rewrites its proxies' certificate reports when they
// change and at least every ReportRefresh; reports older than ReportStale
// are a gone replica's (its proxies reconnected elsewhere and are reported
// there) and are left out, and deleted after ReportExpire.
const (
	ReportRefresh = 30 * time.Second
	ReportStale   = 2 * time.Minute
	ReportExpire  = 10 * time.Minute
)

// Share keeps one replica's data dir on the store's version of the shared
// files and publishes the changes made here; it is a
// controlplane.CAShare.
type Share struct {
	st      store.Store
	kek     *KEK
	dataDir string
	who     string
	log     *slog.Logger

	mu      sync.Mutex
	version int64 // the version the data dir holds
	// taken is what take last wrote into the data dir (another
	// replica's files; nil after this replica's own publish).
	taken   map[string][]byte
	subs    []func() // run after the data dir took a new version
	reports map[string]report
	mine    report // the last written
}

type report struct {
	Updated time.Time          `json:"updated"`
	Certs   []meshca.ProxyCert `json:"certs"`
	raw     string             // Certs' JSON, to see changes (not stored)
}

// New returns the Share of st for the replica named identity with its
// data dir (Ensure has filled it).
func New(st store.Store, kek *KEK, dataDir, identity string, log *slog.Logger) *Share {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Share{st: st, kek: kek, dataDir: dataDir, who: identity, log: log, reports: map[string]report{}}
}

// Where names it, for messages.
func (s *Share) Where() string { return "the store's /ca/ (sealed with --ca-kek-file)" }

// Follow follows the store until ctx ends, calling reload after each new
// version it writes into the data dir; it returns once in step.
func (s *Share) Follow(ctx context.Context, reload func()) error {
	s.mu.Lock()
	s.subs = append(s.subs, reload)
	s.mu.Unlock()
	rev, err := s.sync(ctx)
	if err != nil {
		return err
	}
	go s.watch(ctx, rev)
	return nil
}

// sync takes the store's current files and reports; it returns the
// revision to watch from.
func (s *Share) sync(ctx context.Context) (int64, error) {
	kvs, rev, err := s.st.List(ctx, "/ca/")
	if err != nil {
		return 0, fmt.Errorf("sharedca: read the CA: %w", err)
	}
	reports := map[string]report{}
	var version int64
	for _, kv := range kvs {
		switch {
		case kv.Key == versionKey:
			version = kv.ModRevision
		case strings.HasPrefix(kv.Key, reportsPrefix):
			var r report
			if json.Unmarshal(kv.Value, &r) == nil {
				reports[strings.TrimPrefix(kv.Key, reportsPrefix)] = r
			} else {
				reports[strings.TrimPrefix(kv.Key, reportsPrefix)] = unreadable()
			}
		}
	}
	s.mu.Lock()
	s.reports = reports
	s.mu.Unlock()
	if version != 0 {
		s.take(ctx, version)
	}
	return rev, nil
}

// watch follows changes under /ca/, listing again when the watch ends
// (fallen behind, compacted, or the backend's reconnect).
func (s *Share) watch(ctx context.Context, from int64) {
	for ctx.Err() == nil {
		ch, err := s.st.Watch(ctx, "/ca/", from)
		if err == nil {
			for ev := range ch {
				from = ev.Revision
				switch k := ev.KV.Key; {
				case k == versionKey && ev.Type == store.EventPut:
					s.take(ctx, ev.KV.ModRevision)
				case strings.HasPrefix(k, reportsPrefix):
					s.noteReport(strings.TrimPrefix(k, reportsPrefix), ev)
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, store.ErrCompacted) {
			s.log.Warn("sharedca: watch of the shared CA failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if rev, err := s.sync(ctx); err == nil {
			from = rev
		}
	}
}

func (s *Share) noteReport(who string, ev store.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.Type == store.EventDelete {
		delete(s.reports, who)
		return
	}
	var r report
	if json.Unmarshal(ev.KV.Value, &r) != nil {
		r = unreadable()
	}
	s.reports[who] = r
}

// unreadable is a report this replica cannot read: it blocks retiring a
// root (a proxy with no certificate reported), as a safe default.
func unreadable() report {
	return report{Updated: time.Now(), Certs: []meshca.ProxyCert{{Instance: "unreadable report of another replica", Connected: true}}}
}

// take writes version (or newer) of the files into the data dir when the
// data dir holds an older one, and tells the subscribers.
func (s *Share) take(ctx context.Context, version int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if version <= s.version {
		return
	}
	files, got, err := read(ctx, s.st, s.kek)
	if err != nil || files == nil {
		s.log.Error("sharedca: the shared CA not taken; this replica keeps its CA", "err", err)
		return
	}
	if err := cafiles.Materialize(files, s.dataDir); err != nil {
		s.log.Error("sharedca: the shared CA not written into the data dir; this replica keeps its CA", "err", err)
		return
	}
	s.version = got
	s.taken = files
	s.notifyLocked()
}

func (s *Share) notifyLocked() {
	for _, f := range s.subs {
		go f()
	}
}

// Publish stores the data dir's files after a change made here,
// conditioned on the version this replica took. When another replica
// published first, nothing is stored: the data dir is put back on the
// store's version (reload it) and the error wraps adminapi.ErrConflict.
func (s *Share) Publish(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	files, err := cafiles.Pack(s.dataDir)
	if err != nil {
		return fmt.Errorf("sharedca: %w", err)
	}
	if s.taken != nil && maps.EqualFunc(files, s.taken, bytes.Equal) {
		// Another replica's change arrived while this one's was made,
		// and took its place in the data dir: this change is lost.
		s.notifyLocked()
		return s.conflictErr()
	}
	kvs, _, err := s.st.List(ctx, filesPrefix)
	if err != nil {
		return fmt.Errorf("sharedca: read the CA: %w", err)
	}
	old := make([]string, len(kvs))
	for i, kv := range kvs {
		old[i] = kv.Key
	}
	ops := sealOps(s.kek, files, old)
	ops = append(ops, store.Op{Type: store.OpPut, Key: versionKey, Value: []byte(s.who), IfModRevision: s.version})
	rev, err := s.st.Txn(ctx, ops...)
	if errors.Is(err, store.ErrConflict) {
		got, version, rerr := read(ctx, s.st, s.kek)
		if rerr == nil && got != nil {
			rerr = cafiles.Materialize(got, s.dataDir)
		}
		if rerr != nil {
			return fmt.Errorf("sharedca: another replica changed the CA meanwhile, and putting its version back failed: %w", rerr)
		}
		s.version, s.taken = version, got
		s.notifyLocked()
		return s.conflictErr()
	}
	if err != nil {
		return fmt.Errorf("sharedca: store the CA: %w", err)
	}
	s.version, s.taken = rev, nil
	s.notifyLocked()
	return nil
}

func (s *Share) conflictErr() error {
	return fmt.Errorf("%w: another control-plane replica changed the CA in %s meanwhile; nothing changed here: see trellis ca status, then retry", adminapi.ErrConflict, s.Where())
}

// Report stores this replica's proxies' reports when they changed, or
// every ReportRefresh; it also deletes reports gone for ReportExpire (any
// replica may: the delete is conditioned on the report not changing).
func (s *Share) Report(ctx context.Context, certs []meshca.ProxyCert) error {
	if certs == nil {
		certs = []meshca.ProxyCert{}
	}
	raw, err := json.Marshal(certs)
	if err != nil {
		return err
	}
	s.mu.Lock()
	mine := s.mine
	s.mu.Unlock()
	now := time.Now().UTC()
	if mine.raw == string(raw) && now.Sub(mine.Updated) < ReportRefresh {
		return nil
	}
	val, err := json.Marshal(report{Updated: now, Certs: certs})
	if err != nil {
		return err
	}
	if _, err := s.st.Txn(ctx, store.Op{Type: store.OpPut, Key: reportsPrefix + s.who, Value: val, IfModRevision: store.AnyRevision}); err != nil {
		return fmt.Errorf("sharedca: write the proxies' certificate reports: %w", err)
	}
	s.mu.Lock()
	s.mine = report{Updated: now, raw: string(raw)}
	s.mu.Unlock()
	s.collect(ctx)
	return nil
}

// collect deletes reports older than ReportExpire.
func (s *Share) collect(ctx context.Context) {
	kvs, _, err := s.st.List(ctx, reportsPrefix)
	if err != nil {
		return
	}
	for _, kv := range kvs {
		var r report
		if json.Unmarshal(kv.Value, &r) == nil && time.Since(r.Updated) > ReportExpire {
			_, _ = s.st.Txn(ctx, store.Op{Type: store.OpDelete, Key: kv.Key, IfModRevision: kv.ModRevision})
		}
	}
}

// Others returns the other replicas' proxies' reports, leaving out stale
// ones.
func (s *Share) Others() []meshca.ProxyCert {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []meshca.ProxyCert
	for who, r := range s.reports {
		if who == s.who || time.Since(r.Updated) > ReportStale {
			continue
		}
		out = append(out, r.Certs...)
	}
	return out
}
