package dataplane

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// ewmaDecay is the time constant of the peak-EWMA latency estimate: an
// observation's weight falls to 1/e after this long, and so does an idle
// endpoint's estimate, so an endpoint that was slow is tried again once
// its estimate has decayed below the others' cost (Linkerd's default).
const ewmaDecay = 10 * time.Second

// ewmaFloor keeps the cost of an endpoint without observations above
// zero, so endpoints without history still differ by their requests in
// flight.
const ewmaFloor = float64(time.Microsecond)

// latencyEWMA is an endpoint's peak-sensitive moving average of response
// latency (Finagle's and Linkerd's peak EWMA): a sample above the estimate
// replaces it at once; lower ones pull it down with a weight that grows
// with the time since the last sample. Lock-free: a lost race drops one
// sample.
type latencyEWMA struct {
	bits  atomic.Uint64 // math.Float64bits of the estimate, in ns
	stamp atomic.Int64  // Unix ns of the last sample
}

func (l *latencyEWMA) observe(rtt time.Duration, now int64) {
	old := l.bits.Load()
	est, r := math.Float64frombits(old), float64(rtt)
	if r < est {
		w := math.Exp(-float64(max(now-l.stamp.Load(), 0)) / float64(ewmaDecay))
		r = est*w + r*(1-w)
	}
	if l.bits.CompareAndSwap(old, math.Float64bits(r)) {
		l.stamp.Store(now)
	}
}

// estimate is the latency estimate decayed to now.
func (l *latencyEWMA) estimate(now int64) float64 {
	est := math.Float64frombits(l.bits.Load())
	if td := now - l.stamp.Load(); td > 0 && est > 0 {
		est *= math.Exp(-float64(td) / float64(ewmaDecay))
	}
	return est
}

// cost is what peak-EWMA minimizes: the latency estimate times the
// requests that would share the endpoint.
func (e *PeerEndpoint) cost(now int64) float64 {
	return max(e.lat.estimate(now), ewmaFloor) * float64(e.inflight.Load()+1)
}

// NewPeakEWMA returns a Balancer that picks two random endpoints and takes
// the one with the lower peak-EWMA cost (power of two choices), skipping
// ejected endpoints while a healthy one is left.
func NewPeakEWMA(eps []*PeerEndpoint) Balancer {
	return &peakEWMA{eps: eps}
}

type peakEWMA struct {
	eps []*PeerEndpoint
}

func (b *peakEWMA) Pick(avoid *PeerEndpoint) *PeerEndpoint {
	n := len(b.eps)
	switch n {
	case 0:
		return nil
	case 1:
		if e := b.eps[0]; e != avoid {
			return e
		}
		return nil
	}
	now := time.Now().UnixNano()
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	x, y := b.eps[i], b.eps[j]
	xok := x != avoid && x.healthyAt(now)
	yok := y != avoid && y.healthyAt(now)
	switch {
	case xok && yok:
		if y.cost(now) < x.cost(now) {
			return y
		}
		return x
	case xok:
		return x
	case yok:
		return y
	}
	return pickAny(b.eps, i, avoid, now)
}

// pickAny returns the first healthy endpoint from start on, else (every
// endpoint is ejected) one other than avoid: it may have come back, and
// trying beats failing without a try.
func pickAny(eps []*PeerEndpoint, start int, avoid *PeerEndpoint, now int64) *PeerEndpoint {
	n := len(eps)
	var ejected *PeerEndpoint
	for k := range n {
		e := eps[(start+k)%n]
		if e == avoid {
			continue
		}
		if e.healthyAt(now) {
			return e
		}
		if ejected == nil {
			ejected = e
		}
	}
	return ejected
}
