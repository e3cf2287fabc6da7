package controlplane

import (
	"sync"
	"time"
)

// convergence times push rounds: from the change that started a round (the
// first store watch event or registry change of its debounce window) until
// every proxy offered a new snapshot in that round has ACKed that version.
// One round is tracked at a time: a newer round that offers anything
// abandons an older one still waiting. A proxy whose stream ends is no
// longer waited for. Safe for concurrent use.
type convergence struct {
	observe func(time.Duration) // a round converged after d
	abandon func()              // a round was superseded first

	mu      sync.Mutex
	round   uint64
	start   time.Time
	waiting map[string]string // instance -> version offered
	sealed  bool              // every offer of the round is made
	active  bool
}

// offered notes that round, started at start, offered instance version.
// It is called before the snapshot is queued, so the ACK cannot come first.
func (c *convergence) offered(round uint64, start time.Time, instance, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.round != round {
		if c.active {
			c.abandon()
		}
		c.round, c.start, c.waiting, c.sealed, c.active = round, start, map[string]string{}, false, true
	}
	c.waiting[instance] = version
}

// seal says round made all its offers: it converges once they are ACKed.
func (c *convergence) seal(round uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.round == round && c.active {
		c.sealed = true
		c.maybeDone()
	}
}

// acked notes an ACK of version by instance.
func (c *convergence) acked(instance, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.waiting[instance]; ok && v == version {
		delete(c.waiting, instance)
		c.maybeDone()
	}
}

// gone stops waiting for instance (its stream ended).
func (c *convergence) gone(instance string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.waiting[instance]; ok {
		delete(c.waiting, instance)
		c.maybeDone()
	}
}

// maybeDone records the round once sealed and answered; c.mu is held.
func (c *convergence) maybeDone() {
	if c.active && c.sealed && len(c.waiting) == 0 {
		c.active = false
		c.observe(time.Since(c.start))
	}
}
