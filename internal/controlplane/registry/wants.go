package registry

import (
	"errors"
	"fmt"
	"slices"

	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
)

// MaxWants bounds the services one proxy may ask for (Hello and Discover).
const MaxWants = 1024

// ErrTooManyWants refuses a Discover past MaxWants.
var ErrTooManyWants = errors.New("too many services asked for")

// Want adds keys to the services the proxy behind s asked for
// (Workload.Wants) and reports whether any was new. They change only that
// proxy's snapshot, so the registry's generation stays.
func (r *Registry[S]) Want(instance string, s S, keys []serviceKey) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[instance]
	var none S
	if e == nil || e.stream == none || e.stream != s {
		return false, nil
	}
	wants := e.w.Wants
	added := false
	for _, k := range keys {
		if _, found := slices.BinarySearchFunc(wants, k, snapshot.CompareKeys); found {
			continue
		}
		if len(wants) >= MaxWants {
			return false, fmt.Errorf("%w: a proxy may ask for at most %d services per stream", ErrTooManyWants, MaxWants)
		}
		if !added {
			wants = slices.Clone(wants)
			added = true
		}
		i, _ := slices.BinarySearchFunc(wants, k, snapshot.CompareKeys)
		wants = slices.Insert(wants, i, k)
	}
	if added {
		e.w.Wants = wants
	}
	return added, nil
}

// Target returns the connected proxy instance as a push target.
func (r *Registry[S]) Target(instance string) (Target[S], bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[instance]
	var none S
	if e == nil || e.stream == none {
		return Target[S]{}, false
	}
	return Target[S]{Workload: e.w, Stream: e.stream, Initial: e.initial, Desired: e.desiredSnap}, true
}

// Connected returns the number of open streams.
func (r *Registry[S]) Connected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.connected
}
