package dataplane

import (
	"sync"
	"time"
)

// budgetWindow is how far back a retry budget looks, in seconds (Linkerd's
// ttl: 10 s).
const budgetWindow = 10

// retryBudget bounds the retries to one destination service (Linkerd's
// retry budget): within the last budgetWindow seconds, retries may add at
// most ratio of the requests plus minPerSecond a second. It outlives
// snapshots (Outbound.budgets, by service key) so that a config push
// does not refill it. A new budget's minimum grows by minPerSecond each
// second of its life up to the window's, so a burst at start-up cannot
// spend ten seconds' worth at once. Safe for concurrent use.
type retryBudget struct {
	mu           sync.Mutex
	ratio        float64
	minPerSecond int
	born         int64 // the first request's second, 0 before
	// slots hold one second each: slot i counts the second secs[i].
	secs    [budgetWindow]int64
	reqs    [budgetWindow]int32
	retries [budgetWindow]int32
}

// set adopts a policy's figures (a new snapshot may change them).
func (b *retryBudget) set(ratio float64, minPerSecond int) {
	b.mu.Lock()
	b.ratio, b.minPerSecond = ratio, minPerSecond
	b.mu.Unlock()
}

// slotLocked returns the slot of second s, emptied if it held an older
// second.
func (b *retryBudget) slotLocked(s int64) int {
	i := int(s % budgetWindow)
	if b.secs[i] != s {
		b.secs[i], b.reqs[i], b.retries[i] = s, 0, 0
	}
	return i
}

// request counts an original request (not a retry).
func (b *retryBudget) request(now time.Time) {
	s := now.Unix()
	b.mu.Lock()
	if b.born == 0 {
		b.born = s
	}
	b.reqs[b.slotLocked(s)]++
	b.mu.Unlock()
}

// withdraw takes one retry from the budget; false when it is spent.
func (b *retryBudget) withdraw(now time.Time) bool {
	s := now.Unix()
	b.mu.Lock()
	defer b.mu.Unlock()
	var reqs, retries int64
	for i := range b.secs {
		if s-b.secs[i] < budgetWindow {
			reqs += int64(b.reqs[i])
			retries += int64(b.retries[i])
		}
	}
	age := min(s-b.born+1, budgetWindow)
	allowed := b.ratio*float64(reqs) + float64(int64(b.minPerSecond)*age)
	if float64(retries+1) > allowed {
		return false
	}
	b.retries[b.slotLocked(s)]++
	return true
}
