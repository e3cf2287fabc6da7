package controlplane

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
)

// errInstanceTaken refuses a Hello whose instance is registered under
// another identity: one workload must not be able to evict another's stream
// by guessing its instance value.
var errInstanceTaken = errors.New("instance already registered by another identity")

// workload is one proxy's workload as the snapshot builder sees it. Values
// are copies; Labels is never mutated after a Hello (a reconnect replaces the
// map), so copies may share it.
type workload struct {
	Instance      string
	SPIFFEID      string
	Service       string
	Namespace     string
	AdvertiseAddr string
	Protocol      string
	Labels        map[string]string
	Connected     bool
	ConnectedAt   time.Time
}

// versionHash names one snapshot content.
type versionHash struct {
	Version string
	Hash    string
	At      time.Time
}

// proxyEntry is the registry's record of one proxy instance. Guarded by
// registry.mu.
type proxyEntry struct {
	w              workload
	proxyVersion   string
	disconnectedAt time.Time

	// counter is the last version number handed out; versions only grow,
	// also across reconnects and (through Hello.running_version) control
	// plane restarts.
	counter uint64
	desired versionHash // last sent
	acked   versionHash
	nack    struct {
		Version, Error string
		At             time.Time
	}
	running versionHash // reported by the proxy

	stream *proxyStream // nil while disconnected
	// initial: the current stream has not been sent a snapshot yet. The
	// first snapshot on a stream is always sent, even when its content is
	// unchanged, so a proxy learns what the control plane wants.
	initial bool
}

// registry holds every proxy instance that is connected or within its
// endpoint grace period. Safe for concurrent use.
// maxInstancesPerIdentity bounds the proxies one SPIFFE ID may register.
const maxInstancesPerIdentity = 256

var errTooManyInstances = errors.New("too many instances")

type registry struct {
	now   func() time.Time
	grace time.Duration
	// changed is called (without mu held) after any change that may alter
	// some proxy's snapshot.
	changed func()
	// connectedGauge follows the number of connected proxies; called with
	// mu held so updates land in order.
	connectedGauge func(float64)

	mu        sync.Mutex
	entries   map[string]*proxyEntry // by instance
	gen       uint64                 // bumped on every change to the workload set
	connected int
}

func newRegistry(now func() time.Time, grace time.Duration, changed func(), connectedGauge func(float64)) *registry {
	return &registry{now: now, grace: grace, changed: changed, connectedGauge: connectedGauge, entries: map[string]*proxyEntry{}}
}

// connect registers w with its new stream, replacing (and closing) an older
// stream of the same instance. runningVersion and runningHash come from the
// Hello.
func (r *registry) connect(w workload, proxyVersion, runningVersion, runningHash string, s *proxyStream) error {
	r.mu.Lock()
	now := r.now()
	e := r.entries[w.Instance]
	if e != nil && e.w.SPIFFEID != w.SPIFFEID {
		r.mu.Unlock()
		return fmt.Errorf("%w: %q is held by %s", errInstanceTaken, w.Instance, e.w.SPIFFEID)
	}
	if e == nil {
		// One identity may run many replicas, but not flood every proxy's
		// snapshot: cap its registered instances (live or in grace).
		n := 0
		for _, other := range r.entries {
			if other.w.SPIFFEID == w.SPIFFEID {
				n++
			}
		}
		if n >= maxInstancesPerIdentity {
			r.mu.Unlock()
			return fmt.Errorf("%w: %s already has %d registered instances", errTooManyInstances, w.SPIFFEID, n)
		}
		e = &proxyEntry{}
		r.entries[w.Instance] = e
	}
	old := e.stream
	if old == nil {
		r.connected++
	}
	w.Connected, w.ConnectedAt = true, now
	e.w, e.proxyVersion, e.disconnectedAt = w, proxyVersion, time.Time{}
	e.stream, e.initial = s, true
	if n, err := strconv.ParseUint(runningVersion, 10, 64); err == nil && n > e.counter {
		e.counter = n
	}
	if runningHash != "" {
		e.running = versionHash{Version: runningVersion, Hash: runningHash, At: now}
		// Unknown to us (a control plane restart, or after the grace
		// period): start from what the proxy runs, so unchanged content
		// keeps its version instead of every proxy getting a new one.
		if e.desired.Hash == "" {
			e.desired = versionHash{Version: runningVersion, Hash: runningHash, At: now}
		}
	}
	r.gen++
	r.connectedGauge(float64(r.connected))
	r.mu.Unlock()

	if old != nil {
		old.close(errStreamReplaced)
	}
	r.changed()
	return nil
}

// disconnect marks the instance's workload disconnected if s is still its
// stream (a replaced stream's end changes nothing). The workload stays an
// endpoint until expire removes it.
func (r *registry) disconnect(instance string, s *proxyStream) {
	r.mu.Lock()
	e := r.entries[instance]
	if e == nil || e.stream != s {
		r.mu.Unlock()
		return
	}
	e.stream, e.initial = nil, false
	e.w.Connected = false
	e.disconnectedAt = r.now()
	r.connected--
	r.gen++
	r.connectedGauge(float64(r.connected))
	r.mu.Unlock()
	r.changed()
}

// expire removes workloads whose stream has been down for the grace period.
// It reports whether any was removed.
func (r *registry) expire() bool {
	r.mu.Lock()
	now := r.now()
	removed := false
	for id, e := range r.entries {
		if e.stream == nil && now.Sub(e.disconnectedAt) >= r.grace {
			delete(r.entries, id)
			removed = true
		}
	}
	if removed {
		r.gen++
	}
	r.mu.Unlock()
	if removed {
		r.changed()
	}
	return removed
}

// workloads returns every registered workload (connected or in grace) and
// the registry generation they reflect.
func (r *registry) workloads() ([]workload, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]workload, 0, len(r.entries))
	for _, e := range r.entries {
		out = append(out, e.w)
	}
	return out, r.gen
}

// pushTarget is a connected proxy a push round may send to.
type pushTarget struct {
	w       workload
	stream  *proxyStream
	initial bool
}

// targets lists connected proxies; with initialOnly, only those whose
// stream has not had its first snapshot.
func (r *registry) targets(initialOnly bool) []pushTarget {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]pushTarget, 0, len(r.entries))
	for _, e := range r.entries {
		if e.stream != nil && (e.initial || !initialOnly) {
			out = append(out, pushTarget{w: e.w, stream: e.stream, initial: e.initial})
		}
	}
	return out
}

// offer gives snap (hash set, version empty) to the proxy behind s if its
// content differs from what was last sent, or if s has had no snapshot yet.
// It assigns the version and records it as desired. It reports whether the
// snapshot was queued.
func (r *registry) offer(instance string, s *proxyStream, snap *pb.Snapshot) bool {
	r.mu.Lock()
	e := r.entries[instance]
	if e == nil || e.stream != s {
		r.mu.Unlock()
		return false
	}
	if snap.GetHash() == e.desired.Hash && !e.initial {
		r.mu.Unlock()
		return false
	}
	if snap.GetHash() != e.desired.Hash || e.desired.Version == "" {
		e.counter++
		e.desired = versionHash{Version: strconv.FormatUint(e.counter, 10), Hash: snap.GetHash()}
	}
	e.desired.At = r.now()
	e.initial = false
	snap.Version = e.desired.Version
	r.mu.Unlock()
	s.offer(snap)
	return true
}

// ack records an Ack. An Ack for a version we never sent is recorded as
// the proxy says it; it is not an error (the proxy may answer a version
// from an earlier stream or control plane).
func (r *registry) ack(instance string, s *proxyStream, a *pb.Ack) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[instance]
	if e == nil || e.stream != s {
		return
	}
	hash := a.GetHash()
	if hash == "" && a.GetVersion() == e.desired.Version {
		hash = e.desired.Hash
	}
	e.acked = versionHash{Version: a.GetVersion(), Hash: hash, At: r.now()}
}

// nack records a Nack.
func (r *registry) nack(instance string, s *proxyStream, n *pb.Nack) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[instance]
	if e == nil || e.stream != s {
		return
	}
	e.nack.Version, e.nack.Error, e.nack.At = n.GetVersion(), n.GetError(), r.now()
}

// report records what the proxy says it runs.
func (r *registry) report(instance string, s *proxyStream, rep *pb.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[instance]
	if e == nil || e.stream != s {
		return
	}
	e.running = versionHash{Version: rep.GetRunningVersion(), Hash: rep.GetRunningHash(), At: r.now()}
}

// proxies describes every registered proxy for the admin API, sorted by
// namespace, service and instance. namespace "" means all.
func (r *registry) proxies(namespace string) []adminapi.ProxyInfo {
	r.mu.Lock()
	out := make([]adminapi.ProxyInfo, 0, len(r.entries))
	for _, e := range r.entries {
		if namespace == "" || e.w.Namespace == namespace {
			out = append(out, e.info())
		}
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b adminapi.ProxyInfo) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Instance, b.Instance))
	})
	return out
}

// info renders the entry; the caller holds registry.mu.
func (e *proxyEntry) info() adminapi.ProxyInfo {
	p := adminapi.ProxyInfo{
		Instance:      e.w.Instance,
		SPIFFEID:      e.w.SPIFFEID,
		Service:       e.w.Service,
		Namespace:     e.w.Namespace,
		AdvertiseAddr: e.w.AdvertiseAddr,
		Protocol:      e.w.Protocol,
		Labels:        maps.Clone(e.w.Labels),
		ProxyVersion:  e.proxyVersion,
		Connected:     e.w.Connected,
		ConnectedAt:   e.w.ConnectedAt,
		Desired:       configVersion(e.desired),
		Acked:         configVersion(e.acked),
		Running:       configVersion(e.running),
	}
	if !e.w.Connected {
		t := e.disconnectedAt
		p.DisconnectedAt = &t
	}
	if e.nack.Version != "" || e.nack.Error != "" {
		p.LastNack = &adminapi.NackInfo{Version: e.nack.Version, Error: e.nack.Error, At: e.nack.At}
	}
	switch {
	case !e.w.Connected:
		p.State, p.Since = adminapi.ProxyDisconnected, p.DisconnectedAt
	case e.desired.Hash != "" && e.acked.Hash == e.desired.Hash:
		p.State = adminapi.ProxySynced
		p.Since = timePtr(e.acked.At)
	case e.desired.Version != "" && e.nack.Version == e.desired.Version:
		p.State, p.Error = adminapi.ProxyNacked, e.nack.Error
		p.Since = timePtr(e.nack.At)
	default:
		p.State = adminapi.ProxyStale
		p.Since = timePtr(e.desired.At)
	}
	return p
}

func configVersion(v versionHash) *adminapi.ConfigVersion {
	if v.Version == "" && v.Hash == "" {
		return nil
	}
	return &adminapi.ConfigVersion{Version: v.Version, Hash: v.Hash, At: v.At}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
