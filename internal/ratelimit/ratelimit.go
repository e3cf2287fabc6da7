// Package ratelimit is the proxies' local rate limiting (docs/policy.md,
// rate limits): token buckets per caller identity, refilled continuously,
// bounded in number. It depends on the standard library only.
package ratelimit

import (
	"math"
	"sync"
	"time"
)

// MaxKeys bounds the buckets of one Limiter; past it the least recently
// used half is forgotten (a forgotten caller starts with a full bucket).
const MaxKeys = 10000

// Limiter is a token bucket per key: Rate tokens a second, up to Burst.
// Safe for concurrent use.
type Limiter struct {
	rate  float64
	burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter of rate tokens per second with a bucket of
// burst (at least 1).
func New(rate float64, burst int) *Limiter {
	return &Limiter{rate: rate, burst: math.Max(1, float64(burst)), buckets: map[string]*bucket{}}
}

// Allow takes a token of key's bucket at now. When the bucket is empty it
// reports false and how long until a token comes.
func (l *Limiter) Allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= MaxKeys {
			l.evictLocked()
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	if l.rate <= 0 {
		return false, time.Hour
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

// evictLocked forgets the buckets not used for the longest time, half of
// them.
func (l *Limiter) evictLocked() {
	var sum time.Duration
	var oldest time.Time
	for _, b := range l.buckets {
		if oldest.IsZero() || b.last.Before(oldest) {
			oldest = b.last
		}
	}
	for _, b := range l.buckets {
		sum += b.last.Sub(oldest)
	}
	mean := oldest.Add(sum / time.Duration(len(l.buckets)))
	for k, b := range l.buckets {
		if !b.last.After(mean) {
			delete(l.buckets, k)
		}
	}
}
