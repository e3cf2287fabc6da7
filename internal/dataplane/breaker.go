package dataplane

import (
	"strconv"
	"sync/atomic"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// breaker is the circuit breaker of one destination service on this
// proxy, from its TrafficPolicy: at most MaxConnections requests hold a
// connection (or an HTTP/2 stream) to the service's endpoints at once;
// on the HTTP/1.1 and net/http paths up to MaxPendingRequests more wait
// for one of them, and past that requests are answered 503 at once. The
// HTTP/2 relay cannot hold a stream back without stalling its connection,
// so there a request past MaxConnections is refused without waiting.
// Outbound keeps one breaker per service across snapshots while the
// policy's bounds stay the same. A nil *breaker admits everything.
type breaker struct {
	ref   string
	slots chan struct{} // MaxConnections tokens; nil: unbounded
	// maxPending is MaxPendingRequests (0: unbounded); waiting counts the
	// requests waiting for a slot.
	maxPending int64
	waiting    atomic.Int64
	// msgConns and msgPending are the bodies of the 503s.
	msgConns, msgPending string
}

// Limits of a circuit breaker (the limit label of
// trellis_circuit_breaker_overflows_total).
const (
	limitConnections = "max_connections"
	limitPending     = "max_pending_requests"
)

func newBreaker(key string, tp *meshconfig.TrafficPolicy) *breaker {
	if tp == nil || tp.MaxConnections <= 0 {
		return nil
	}
	b := &breaker{ref: tp.Ref, slots: make(chan struct{}, tp.MaxConnections), maxPending: int64(tp.MaxPendingRequests)}
	prefix := "trellis: circuit breaker of TrafficPolicy " + tp.Ref + " open: "
	conns := strconv.Itoa(tp.MaxConnections)
	b.msgConns = prefix + key + " has its " + conns + " connections (maxConnections) busy; try again later\n"
	b.msgPending = prefix + strconv.Itoa(tp.MaxPendingRequests) + " requests (maxPendingRequests) already wait for one of the " +
		conns + " connections (maxConnections) to " + key + "; try again later\n"
	return b
}

// same reports whether b enforces tp's bounds.
func (b *breaker) same(tp *meshconfig.TrafficPolicy) bool {
	return b != nil && tp != nil && b.ref == tp.Ref && cap(b.slots) == tp.MaxConnections && b.maxPending == int64(tp.MaxPendingRequests)
}

// acquire takes a slot, waiting while MaxPendingRequests allows until one
// is free or done is closed. It returns "" when admitted (call release
// after), else the limit that refused.
func (b *breaker) acquire(done <-chan struct{}) string {
	if b == nil {
		return ""
	}
	select {
	case b.slots <- struct{}{}:
		return ""
	default:
	}
	if n := b.waiting.Add(1); b.maxPending > 0 && n > b.maxPending {
		b.waiting.Add(-1)
		return limitPending
	}
	defer b.waiting.Add(-1)
	select {
	case b.slots <- struct{}{}:
		return ""
	case <-done:
		return limitPending
	}
}

// tryAcquire takes a slot without waiting.
func (b *breaker) tryAcquire() string {
	if b == nil {
		return ""
	}
	select {
	case b.slots <- struct{}{}:
		return ""
	default:
		return limitConnections
	}
}

func (b *breaker) release() {
	if b != nil {
		<-b.slots
	}
}

// message is the body of the 503 for limit.
func (b *breaker) message(limit string) string {
	if limit == limitPending {
		return b.msgPending
	}
	return b.msgConns
}
