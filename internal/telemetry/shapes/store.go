package shapes

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/atomicfile"
	"github.com/trellismesh/trellis/internal/pathtemplate"
)

// Limits.
const (
	// MaxShapesPerEdge bounds one edge's shapes; requests of further
	// shapes add to the edge's Overflow.
	MaxShapesPerEdge = 256
	// MaxEdges bounds the edges; reports of further edges are dropped
	// (and counted in Store.Dropped).
	MaxEdges = 20000
	// CollapseAt is how many literal values one path segment may take,
	// with the rest of the template equal, before they become {id}.
	CollapseAt = 16
	// maxInstanceEntries bounds the cumulative values kept per instance.
	maxInstanceEntries = 8192
	// instanceExpiry is how long an instance's last values are kept
	// after its last report.
	instanceExpiry = time.Hour
)

// EdgeKey names an edge: caller service to called service.
type EdgeKey struct {
	SourceService, SourceNamespace string
	Service, Namespace             string
}

// Shape is one request shape of an edge, with counts since the store
// first saw it.
type Shape = adminapi.PathShape

// Edge is an edge's shapes. Overflow counts requests whose shape did not
// fit, here or in a proxy's table.
type Edge = adminapi.EdgeShapes

type shapeKey struct{ method, template string }

type edge struct {
	overflow uint64
	shapes   map[shapeKey]*Shape
}

// instance is what one proxy instance last reported, to turn its
// cumulative counters into growth.
type instance struct {
	Since time.Time            `json:"since"`
	Seen  time.Time            `json:"seen"`
	Last  map[string][3]uint64 `json:"last"` // by instanceEntry: requests, denied, failures
}

// Store is the shapes of every edge. Safe for concurrent use.
type Store struct {
	path string
	now  func() time.Time

	mu        sync.Mutex
	edges     map[EdgeKey]*edge
	instances map[string]*instance
	dropped   uint64
	dirty     bool
}

// Open loads the store persisted at path, or starts an empty one when the
// file does not exist. now is the clock (nil: time.Now).
func Open(path string, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	s := &Store{path: path, now: now, edges: map[EdgeKey]*edge{}, instances: map[string]*instance{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("shapes: %w", err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("shapes: %s: %w (move the file away to start learning again)", path, err)
	}
	for _, e := range f.Edges {
		k := EdgeKey{e.SourceService, e.SourceNamespace, e.Service, e.Namespace}
		ed := &edge{overflow: e.Overflow, shapes: map[shapeKey]*Shape{}}
		for i := range e.Shapes {
			sh := e.Shapes[i]
			ed.shapes[shapeKey{sh.Method, sh.Template}] = &sh
		}
		s.edges[k] = ed
	}
	for id, in := range f.Instances {
		if in != nil && in.Last != nil {
			s.instances[id] = in
		}
	}
	s.dropped = f.Dropped
	return s, nil
}

// file is the persisted form.
type file struct {
	Version   int                  `json:"version"`
	Edges     []Edge               `json:"edges"`
	Instances map[string]*instance `json:"instances"`
	Dropped   uint64               `json:"dropped,omitempty"`
}

// Save writes the store to its file if it changed since the last Save.
func (s *Store) Save() error {
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	f := file{Version: 1, Edges: s.edgesLocked(func(EdgeKey) bool { return true }), Instances: s.instances, Dropped: s.dropped}
	b, err := json.Marshal(f)
	s.dirty = false
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("shapes: encode: %w", err)
	}
	if err := atomicfile.WriteFile(s.path, b, 0o600); err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return fmt.Errorf("shapes: %w", err)
	}
	return nil
}

// instanceEntry keys one cumulative shape counter of an instance.
func instanceEntry(e *pb.EdgeStats, method, template string) string {
	return strings.Join([]string{e.GetSourceService(), e.GetSourceNamespace(), e.GetDestinationService(), e.GetDestinationNamespace(), method, template}, "\x00")
}

// overflowEntry keys an instance's cumulative overflow of one edge.
func overflowEntry(e *pb.EdgeStats) string { return instanceEntry(e, "", "\x00overflow") }

// Record folds one report of instance into the store: the growth of each
// shape's counters since the instance's previous report (all of them
// when the instance is new or its counters started over). The report has
// passed the collector's binding check.
func (s *Store) Record(instanceID string, stats *pb.TrafficStats) {
	now := s.now()
	since := stats.GetCountersSince().AsTime()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	in := s.instances[instanceID]
	if in == nil || !in.Since.Equal(since) {
		in = &instance{Since: since, Last: map[string][3]uint64{}}
		s.instances[instanceID] = in
	}
	in.Seen = now
	for _, e := range stats.GetEdges() {
		if len(e.GetShapes()) == 0 && e.GetShapesOverflow() == 0 {
			continue
		}
		k := EdgeKey{e.GetSourceService(), e.GetSourceNamespace(), e.GetDestinationService(), e.GetDestinationNamespace()}
		ed := s.edges[k]
		if ed == nil {
			if len(s.edges) >= MaxEdges {
				s.dropped++
				continue
			}
			ed = &edge{shapes: map[shapeKey]*Shape{}}
			s.edges[k] = ed
		}
		ok := overflowEntry(e)
		if d := grow(in.Last[ok][0], e.GetShapesOverflow()); d > 0 {
			ed.overflow += d
			s.dirty = true
		}
		s.keepLocked(in, ok, [3]uint64{e.GetShapesOverflow()})
		for _, sh := range e.GetShapes() {
			// Proxies send templates; re-apply the inference so that a
			// report cannot plant what no request could produce.
			tmpl := pathtemplate.Of(sh.GetPathTemplate())
			method := sh.GetMethod()
			if len(method) > 16 || method == "" {
				method = "OTHER"
			}
			ik := instanceEntry(e, method, tmpl)
			last := in.Last[ik]
			cur := [3]uint64{sh.GetRequests(), sh.GetDenied(), sh.GetFailures()}
			if cur[0] < last[0] {
				last = [3]uint64{} // the proxy's table started over
			}
			d := [3]uint64{grow(last[0], cur[0]), grow(last[1], cur[1]), grow(last[2], cur[2])}
			s.keepLocked(in, ik, cur)
			if d[0] == 0 {
				continue
			}
			s.dirty = true
			s.addLocked(ed, method, tmpl, d, sh.GetFirstSeen().AsTime(), sh.GetLastSeen().AsTime())
		}
	}
}

// grow is cur - prev, or cur when the counter went down (a reset).
func grow(prev, cur uint64) uint64 {
	if cur >= prev {
		return cur - prev
	}
	return cur
}

// keepLocked remembers an instance's cumulative value, within bounds.
func (s *Store) keepLocked(in *instance, key string, v [3]uint64) {
	if _, ok := in.Last[key]; !ok && len(in.Last) >= maxInstanceEntries {
		return
	}
	in.Last[key] = v
}

// addLocked adds d to the shape (method, tmpl) of ed, creating it (and
// collapsing high-cardinality segments) when new.
func (s *Store) addLocked(ed *edge, method, tmpl string, d [3]uint64, first, last time.Time) {
	k := shapeKey{method, tmpl}
	sh := ed.shapes[k]
	if sh == nil {
		sh = generalized(ed, k)
	}
	if sh == nil {
		if len(ed.shapes) >= MaxShapesPerEdge {
			ed.overflow += d[0]
			return
		}
		sh = &Shape{Method: method, Template: tmpl, FirstSeen: first, LastSeen: last}
		ed.shapes[k] = sh
		if c := collapse(ed, k); c != nil {
			sh = c
		}
	}
	sh.Requests += d[0]
	sh.Denied += d[1]
	sh.Failures += d[2]
	if first.Before(sh.FirstSeen) {
		sh.FirstSeen = first
	}
	if last.After(sh.LastSeen) {
		sh.LastSeen = last
	}
}

// sweepLocked forgets instances silent for instanceExpiry.
func (s *Store) sweepLocked(now time.Time) {
	for id, in := range s.instances {
		if now.Sub(in.Seen) > instanceExpiry {
			delete(s.instances, id)
			s.dirty = true
		}
	}
}

// Edges returns the edges whose caller's or callee's namespace is
// namespace ("" for all), sorted, with their shapes sorted by template
// and method.
func (s *Store) Edges(namespace string) []Edge {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.edgesLocked(func(k EdgeKey) bool {
		return namespace == "" || k.SourceNamespace == namespace || k.Namespace == namespace
	})
}

func (s *Store) edgesLocked(keep func(EdgeKey) bool) []Edge {
	out := []Edge{}
	for k, ed := range s.edges {
		if !keep(k) {
			continue
		}
		e := Edge{SourceService: k.SourceService, SourceNamespace: k.SourceNamespace, Service: k.Service, Namespace: k.Namespace,
			Overflow: ed.overflow, Shapes: make([]Shape, 0, len(ed.shapes))}
		for _, sh := range ed.shapes {
			e.Shapes = append(e.Shapes, *sh)
		}
		slices.SortFunc(e.Shapes, func(a, b Shape) int {
			return cmp.Or(cmp.Compare(a.Template, b.Template), cmp.Compare(a.Method, b.Method))
		})
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(a.SourceNamespace, b.SourceNamespace), cmp.Compare(a.SourceService, b.SourceService),
			cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Service, b.Service))
	})
	return out
}

// Dropped counts reports of edges refused past MaxEdges.
func (s *Store) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}
