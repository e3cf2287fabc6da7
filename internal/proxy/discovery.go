package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/names"
)

// Discovery bounds: a first request for a service the config lacks waits
// at most discoveryWait for the control plane's answer; an ask that went
// unanswered fails further requests at once for discoveryRetry, then is
// asked again. The control plane remembers every ask for the stream's life
// and pushes the service when it appears, so a late answer still lands.
const (
	discoveryWait  = 100 * time.Millisecond
	discoveryRetry = 5 * time.Second
	// maxDiscovered bounds the names a proxy remembers having asked for
	// (sent in each Hello): the control plane's own bound.
	maxDiscovered = 1024
)

// discovery asks the control plane for services the scoped config does not
// list (Linkerd destination-style) and waits, bounded, for a snapshot that
// does. Safe for concurrent use.
type discovery struct {
	send     func(*pb.Discover) bool
	snapshot func() *meshconfig.Snapshot
	upstream []string // explicit upstreams, always wanted
	wait     time.Duration
	retry    time.Duration

	mu      sync.Mutex
	applied chan struct{} // closed when a snapshot is applied
	asked   map[string]time.Time
	names   []string // discovered names, for Hello (bounded)
}

func newDiscovery(snapshot func() *meshconfig.Snapshot, upstream []string) *discovery {
	return &discovery{
		snapshot: snapshot, upstream: upstream, wait: discoveryWait, retry: discoveryRetry,
		applied: make(chan struct{}), asked: map[string]time.Time{},
	}
}

// notify wakes the waiters after a snapshot was applied.
func (d *discovery) notify() {
	d.mu.Lock()
	close(d.applied)
	d.applied = make(chan struct{})
	d.mu.Unlock()
}

// wanted is Hello.services_wanted: the upstreams and what was discovered.
func (d *discovery) wanted() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := slices.Concat(d.upstream, d.names)
	slices.Sort(out)
	return slices.Compact(out)
}

// Discover makes sure the config lists the service key ("name.namespace")
// or, with vip valid, the service of that virtual IP: at once when it
// does, else after asking the control plane and waiting at most the
// bound. It reports whether the newest config lists it.
func (d *discovery) Discover(key string, vip netip.Addr) bool {
	if d.has(key, vip) {
		return true
	}
	if !vip.IsValid() && !validKey(key) {
		return false
	}
	id := key
	if vip.IsValid() {
		id = vip.String()
	}
	now := time.Now()
	d.mu.Lock()
	at, ok := d.asked[id]
	ask := !ok || now.Sub(at) >= d.retry
	if !ask && now.Sub(at) >= d.wait {
		// Asked lately and not answered: do not hold every request.
		d.mu.Unlock()
		return false
	}
	if ask {
		if len(d.asked) >= 4*maxDiscovered {
			clear(d.asked)
		}
		d.asked[id], at = now, now
		if !vip.IsValid() {
			d.remember(key)
		}
	}
	d.mu.Unlock()
	if ask && d.send != nil {
		m := &pb.Discover{}
		if vip.IsValid() {
			m.VirtualIps = []string{vip.String()}
		} else {
			m.Services = []string{key}
		}
		d.send(m)
	}
	t := time.NewTimer(time.Until(at.Add(d.wait)))
	defer t.Stop()
	for {
		d.mu.Lock()
		ch := d.applied
		d.mu.Unlock()
		if d.has(key, vip) {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return d.has(key, vip)
		}
	}
}

// has reports whether the current config lists the service; a virtual IP
// found is remembered by its service's name.
func (d *discovery) has(key string, vip netip.Addr) bool {
	s := d.snapshot()
	if s == nil {
		return false
	}
	if !vip.IsValid() {
		return s.Services[key] != nil
	}
	k, ok := s.ServiceByVIP[vip]
	if ok {
		d.mu.Lock()
		d.remember(k)
		d.mu.Unlock()
	}
	return ok
}

// remember adds a discovered name for later Hellos. d.mu is held.
func (d *discovery) remember(key string) {
	if slices.Contains(d.names, key) || slices.Contains(d.upstream, key) || len(d.names) >= maxDiscovered {
		return
	}
	d.names = append(d.names, key)
}

// validKey reports whether key is SERVICE.NAMESPACE, both DNS labels (the
// control plane ends a stream that sends anything else).
func validKey(key string) bool {
	name, ns, ok := strings.Cut(key, ".")
	return ok && names.IsDNSLabel(name) && names.IsDNSLabel(ns)
}
