package metrics

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/pathtemplate"
)

// Request shapes are the learning side of the edge stats
// (docs/learning.md): per caller, the requests counted by method and path
// template (package pathtemplate), reported with the edge counters.
// Recording one costs a template built in a stack buffer, a lock-free map
// lookup and two or three atomic adds; only a new shape takes a lock and
// allocates, and a caller keeps at most maxShapes of them.

// maxShapes bounds one caller's shapes; requests of further shapes are
// counted as overflow.
const maxShapes = 64

// maxMethodLen bounds the method kept in a shape; longer (non-standard)
// methods count as "OTHER".
const maxMethodLen = 16

// shapeCounter is one shape's cumulative counters.
type shapeCounter struct {
	method, template string
	first            int64 // Unix seconds
	last             atomic.Int64
	requests         atomic.Uint64
	denied           atomic.Uint64
	failures         atomic.Uint64
}

// shapeTable is one caller's shapes, copy on write: keyed by
// "METHOD TEMPLATE".
type shapeTable struct {
	m        atomic.Pointer[map[string]*shapeCounter]
	mu       sync.Mutex
	overflow atomic.Uint64
}

// record counts one request of method to path (without its query).
func (t *shapeTable) record(method, path string, code int, denied bool, now int64) {
	if len(method) > maxMethodLen {
		method = "OTHER"
	}
	var buf [maxMethodLen + 1 + pathtemplate.MaxLen + 16]byte
	key := append(buf[:0], method...)
	key = append(key, ' ')
	key = pathtemplate.Append(key, path)
	var c *shapeCounter
	if m := t.m.Load(); m != nil {
		c = (*m)[string(key)]
	}
	if c == nil {
		if c = t.add(string(key), len(method), now); c == nil {
			t.overflow.Add(1)
			return
		}
	}
	c.requests.Add(1)
	if denied {
		c.denied.Add(1)
	}
	if code >= 500 {
		c.failures.Add(1)
	}
	if c.last.Load() != now {
		c.last.Store(now)
	}
}

// add creates the shape key (method is its first n bytes), or returns nil
// when the table is full.
func (t *shapeTable) add(key string, n int, now int64) *shapeCounter {
	t.mu.Lock()
	defer t.mu.Unlock()
	var old map[string]*shapeCounter
	if m := t.m.Load(); m != nil {
		old = *m
		if c := old[key]; c != nil {
			return c
		}
	}
	if len(old) >= maxShapes {
		return nil
	}
	c := &shapeCounter{method: key[:n], template: key[n+1:], first: now}
	c.last.Store(now)
	next := make(map[string]*shapeCounter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[key] = c
	t.m.Store(&next)
	return c
}

// addTo sums t's shapes into e's, merging equal shapes (several callers
// of one edge: principals, mTLS and plaintext).
func (t *shapeTable) addTo(e *pb.EdgeStats) {
	e.ShapesOverflow += t.overflow.Load()
	m := t.m.Load()
	if m == nil {
		return
	}
	for _, c := range *m {
		requests := c.requests.Load()
		if requests == 0 {
			continue
		}
		last := c.last.Load()
		i := slices.IndexFunc(e.Shapes, func(s *pb.PathShape) bool { return s.Method == c.method && s.PathTemplate == c.template })
		if i < 0 {
			e.Shapes = append(e.Shapes, &pb.PathShape{Method: c.method, PathTemplate: c.template,
				FirstSeen: timestamppb.New(time.Unix(c.first, 0)), LastSeen: timestamppb.New(time.Unix(last, 0))})
			i = len(e.Shapes) - 1
		}
		s := e.Shapes[i]
		s.Requests += requests
		s.Denied += c.denied.Load()
		s.Failures += c.failures.Load()
		if c.first < s.FirstSeen.GetSeconds() {
			s.FirstSeen = timestamppb.New(time.Unix(c.first, 0))
		}
		if last > s.LastSeen.GetSeconds() {
			s.LastSeen = timestamppb.New(time.Unix(last, 0))
		}
	}
}

// sortShapes orders an edge's shapes by template, then method.
func sortShapes(e *pb.EdgeStats) {
	slices.SortFunc(e.Shapes, func(a, b *pb.PathShape) int {
		return cmp.Or(strings.Compare(a.PathTemplate, b.PathTemplate), strings.Compare(a.Method, b.Method))
	})
}
