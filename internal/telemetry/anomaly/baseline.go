package anomaly

import (
	"math"
	"time"
)

// baseline is a robust moving baseline of one series: an exponentially
// weighted mean and mean absolute deviation.
type baseline struct {
	n         int
	mean, dev float64
}

// alpha is the weight of one new observation for a half-life of
// halfLife at one observation per interval.
func alpha(interval, halfLife time.Duration) float64 {
	return 1 - math.Exp2(-float64(interval)/float64(halfLife))
}

// z is x's robust z-score against the baseline: the deviation scaled as a
// standard deviation (1.4826 MAD), floored at a Poisson-like spread so
// that a quiet series does not turn every blip into a storm.
func (b *baseline) z(x float64) float64 {
	spread := 1.4826*b.dev + math.Sqrt(b.mean) + 1
	return (x - b.mean) / spread
}

// update folds x in. An anomalous x is clipped first, so an attack does
// not become the baseline within an episode.
func (b *baseline) update(x, a float64, anomalous bool) {
	if b.n == 0 {
		b.mean, b.n = x, 1
		return
	}
	if anomalous {
		x = b.mean + 3*(1.4826*b.dev+1)
	}
	d := x - b.mean
	b.mean += a * d
	b.dev += a * (math.Abs(d) - b.dev)
	b.n++
}
