package proxy

import (
	mrand "math/rand/v2"
	"time"
)

// backoff is exponential with full jitter between base and max.
type backoff struct {
	base, max, cur time.Duration
}

func newBackoff(base, max time.Duration) *backoff { return &backoff{base: base, max: max, cur: base} }

func (b *backoff) next() time.Duration {
	d := b.cur/2 + time.Duration(mrand.Int64N(int64(b.cur/2)+1))
	b.cur = min(b.cur*2, b.max)
	return d
}

func (b *backoff) reset() { b.cur = b.base }
