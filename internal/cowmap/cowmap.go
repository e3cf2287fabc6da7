// Package cowmap is a copy-on-write map for caches read on every request
// and written rarely: reads take no lock and do not allocate, and a map
// fed by peers is bounded (it starts over past MaxEntries).
//
// It depends on the standard library only.
package cowmap

import (
	"cmp"
	"sync"
	"sync/atomic"
	"time"
)

// Map is a copy-on-write map for caches that are read on every request
// and written rarely: reads take no lock and do not allocate.
type Map[K comparable, V any] struct {
	// Max bounds the entries; zero means MaxEntries. Set it before use.
	Max int

	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
	// startedOver is when the map last started over (Unix nanoseconds),
	// 0 if never; gen counts the start-overs.
	startedOver atomic.Int64
	gen         atomic.Uint64
}

// MaxEntries bounds a cache fed by peers (caller identities); past it
// the cache starts over rather than grow without limit.
const MaxEntries = 4096

// Get returns the value for k, creating it with create (under the map's
// lock, once) when k is missing. Past Max entries the map starts over
// with k alone.
func (c *Map[K, V]) Get(k K, create func() V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if m := c.m.Load(); m != nil {
		old = *m
		if v, ok := old[k]; ok {
			return v
		}
	}
	v := create()
	next := make(map[K]V, len(old)+1)
	startOver := len(old) >= cmp.Or(c.Max, MaxEntries)
	if !startOver {
		for ok, ov := range old {
			next[ok] = ov
		}
	}
	next[k] = v
	c.m.Store(&next)
	if startOver {
		// After the swap: a reader that loads startedOver first and
		// sees this time also sees the new map.
		c.startedOver.Store(time.Now().UnixNano())
		c.gen.Add(1)
	}
	return v
}

// Gen counts the times the map started over.
func (c *Map[K, V]) Gen() uint64 { return c.gen.Load() }

// StartedOver is when the map last started over, or the zero time if
// never. A reader that sees a time also sees the map that followed.
func (c *Map[K, V]) StartedOver() time.Time {
	if at := c.startedOver.Load(); at != 0 {
		return time.Unix(0, at)
	}
	return time.Time{}
}

// Load returns the current map, nil while empty. The caller must not
// modify it; later writes do not change it.
func (c *Map[K, V]) Load() map[K]V {
	if m := c.m.Load(); m != nil {
		return *m
	}
	return nil
}
