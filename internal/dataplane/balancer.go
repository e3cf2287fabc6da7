package dataplane

import "sync/atomic"

// Balancer picks the endpoint for one outbound request or tunnel. A
// Balancer serves one service within one snapshot: a new snapshot builds new
// balancers, so the endpoint list it holds never changes. Implementations
// must be safe for concurrent use and must not block. Least-request or EWMA
// balancers can read PeerEndpoint.InFlight.
type Balancer interface {
	// Pick returns an endpoint, preferring healthy ones and avoiding avoid
	// (an endpoint that just failed; may be nil) when another exists. It
	// returns nil when there is no endpoint other than avoid.
	Pick(avoid *PeerEndpoint) *PeerEndpoint
}

// NewRoundRobin returns a Balancer cycling through eps, skipping ejected
// endpoints while a healthy one is left.
func NewRoundRobin(eps []*PeerEndpoint) Balancer {
	return &roundRobin{eps: eps}
}

type roundRobin struct {
	eps  []*PeerEndpoint
	next atomic.Uint64
}

func (b *roundRobin) Pick(avoid *PeerEndpoint) *PeerEndpoint {
	n := uint64(len(b.eps))
	if n == 0 {
		return nil
	}
	start := b.next.Add(1) - 1
	var ejected *PeerEndpoint
	for i := range n {
		e := b.eps[(start+i)%n]
		if e == avoid {
			continue
		}
		if e.Healthy() {
			return e
		}
		if ejected == nil {
			ejected = e
		}
	}
	// Every endpoint is ejected: try one rather than fail without trying;
	// it may have come back.
	return ejected
}
