package collector

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/internal/atomicfile"
)

// stateFile holds the per-instance high-water marks in stateDir.
const stateFile = "highwater.json"

// instanceKey names a sequence space. The reporter is part of the key so a
// proxy that names another identity's instance in its hello can neither
// suppress nor spoof that instance's events: it only ever gets a sequence
// space of its own.
type instanceKey struct {
	reporter string
	instance string
}

// instanceState is one sequence space. mu serializes check-append-advance
// for the instance (two streams of one instance may overlap while the
// older one is being torn down); seq may be read without it.
type instanceState struct {
	mu       sync.Mutex
	seq      atomic.Uint64 // highest seq appended to the log
	lastUsed atomic.Int64  // Unix seconds of the last stream or append
	refs     int           // open streams; guarded by highWater.mu
}

// highWater is the set of marks, persisted to dir/highwater.json.
//
// The file is rewritten (temp file, fsync, rename, fsync of the dir) by a
// background writer after appends, coalescing bursts; it is never ahead of
// the log because a mark moves only after Append returned. A crash between
// an Append and the next write leaves the file behind the log: the proxy
// resends what it had not seen acknowledged, and those events are appended
// a second time. That is the at-least-once window of telemetry.proto;
// everything else is exactly once per (instance, seq).
type highWater struct {
	path string

	mu    sync.Mutex
	marks map[instanceKey]*instanceState

	// writeMu serializes file writes (background writer and close).
	writeMu sync.Mutex
	dirty   chan struct{}
	stop    chan struct{}
	done    chan struct{}
	failed  func(error)
	now     func() time.Time
}

type stateJSON struct {
	Version   int            `json:"version"`
	Instances []instanceJSON `json:"instances"`
}

type instanceJSON struct {
	Reporter string `json:"reporter"`
	Instance string `json:"instance"`
	Seq      uint64 `json:"seq"`
	// Updated is when the instance last streamed (Unix seconds).
	Updated int64 `json:"updated"`
}

// markTTL is how long the mark of an instance that no longer connects is
// kept. Proxies draw a new instance at start, so marks would pile up
// forever; forgetting one costs at most duplicates (never a loss) if that
// instance ever came back.
const markTTL = 30 * 24 * time.Hour

// loadHighWater reads dir/highwater.json (absent means no marks yet) and
// starts the background writer; failed is told about write errors.
func loadHighWater(dir string, now func() time.Time, failed func(error)) (*highWater, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("collector state dir: %w", err)
	}
	h := &highWater{
		path:   filepath.Join(dir, stateFile),
		marks:  make(map[instanceKey]*instanceState),
		dirty:  make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		failed: failed,
		now:    now,
	}
	data, err := os.ReadFile(h.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("collector state: %w", err)
	default:
		var st stateJSON
		if err := json.Unmarshal(data, &st); err != nil || st.Version != 1 {
			return nil, fmt.Errorf("collector state %s is corrupt (%v): restore it from a backup, or remove it to accept duplicates of events proxies resend", h.path, err)
		}
		for _, in := range st.Instances {
			s := &instanceState{}
			s.seq.Store(in.Seq)
			s.lastUsed.Store(in.Updated)
			h.marks[instanceKey{in.Reporter, in.Instance}] = s
		}
	}
	go h.writeLoop()
	return h, nil
}

// acquire returns the state of key for a stream, creating it (mark 0)
// when new; release it when the stream ends.
func (h *highWater) acquire(key instanceKey) *instanceState {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.marks[key]
	if !ok {
		s = &instanceState{}
		h.marks[key] = s
	}
	s.refs++
	s.lastUsed.Store(h.now().Unix())
	return s
}

func (h *highWater) release(s *instanceState) {
	h.mu.Lock()
	s.refs--
	h.mu.Unlock()
	s.lastUsed.Store(h.now().Unix())
}

// changed schedules a write of the file.
func (h *highWater) changed() {
	select {
	case h.dirty <- struct{}{}:
	default:
	}
}

func (h *highWater) writeLoop() {
	defer close(h.done)
	for {
		select {
		case <-h.stop:
			return
		case <-h.dirty:
			if err := h.write(); err != nil {
				h.failed(err)
			}
		}
	}
}

// close stops the background writer and writes the marks a last time.
func (h *highWater) close() error {
	close(h.stop)
	<-h.done
	return h.write()
}

func (h *highWater) write() error {
	h.writeMu.Lock()
	defer h.writeMu.Unlock()
	h.mu.Lock()
	st := stateJSON{Version: 1, Instances: make([]instanceJSON, 0, len(h.marks))}
	expired := h.now().Add(-markTTL).Unix()
	for k, s := range h.marks {
		used := s.lastUsed.Load()
		if s.refs == 0 && used < expired {
			delete(h.marks, k)
			continue
		}
		if seq := s.seq.Load(); seq > 0 {
			st.Instances = append(st.Instances, instanceJSON{Reporter: k.reporter, Instance: k.instance, Seq: seq, Updated: used})
		}
	}
	h.mu.Unlock()
	sort.Slice(st.Instances, func(i, j int) bool {
		a, b := st.Instances[i], st.Instances[j]
		if a.Reporter != b.Reporter {
			return a.Reporter < b.Reporter
		}
		return a.Instance < b.Instance
	})
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("collector state: %w", err)
	}
	return atomicfile.WriteFile(h.path, data, 0o600)
}
