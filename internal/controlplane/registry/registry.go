package registry

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
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
)

// Defaults of Options' zero values (and of the control plane's Config).
const (
	// DefaultAckTimeout is how long a sent snapshot may go unanswered
	// before its proxy counts as STALE.
	DefaultAckTimeout = 5 * time.Second
	// DefaultDriftGrace is how long a proxy may report running other
	// content than it acknowledged before it counts as DRIFTED and is
	// sent its snapshot again.
	DefaultDriftGrace = 10 * time.Second
)

// ErrInstanceTaken refuses a Hello whose instance is registered under
// another identity: one workload must not be able to evict another's stream
// by guessing its instance value.
var ErrInstanceTaken = errors.New("instance already registered by another identity")

// ErrTooManyInstances refuses a Hello from an identity that already has
// maxInstancesPerIdentity instances registered.
var ErrTooManyInstances = errors.New("too many instances")

// Stream is the registry's handle on one open config stream. It is
// declared here so the registry knows nothing of gRPC: it compares handles
// to tell an instance's current stream from a replaced one (the zero value
// means none), and ends a replaced one.
type Stream interface {
	comparable
	// CloseReplaced ends the stream because a newer stream of the same
	// instance took its place. Connect calls it once, after the newer
	// stream is registered, without holding the registry's lock.
	CloseReplaced()
}

// workload is one proxy's workload as the snapshot builder sees it
// (snapshot.Workload).
type workload = snapshot.Workload

// serviceKey names a service (snapshot.ServiceKey).
type serviceKey = snapshot.ServiceKey

// VersionHash names one snapshot content.
type VersionHash struct {
	Version string
	Hash    string
	At      time.Time
}

// maxUnacked bounds the snapshots kept per proxy between ACKs, so that an
// ACK for a version a newer push superseded still finds its content.
const maxUnacked = 4

// proxyEntry is the registry's record of one proxy instance. Guarded by
// Registry.mu.
type proxyEntry[S Stream] struct {
	w              workload
	proxyVersion   string
	disconnectedAt time.Time

	// counter is the last version number handed out; versions only grow,
	// also across reconnects and (through Hello.running_version) control
	// plane restarts.
	counter uint64
	desired VersionHash // last sent
	acked   VersionHash
	nack    struct {
		Version, Error string
		At             time.Time
	}
	running VersionHash // what the proxy last said it runs: its latest Report or a later ACK

	// desiredSnap and ackedSnap are the content behind desired and acked
	// (nil when unknown, e.g. acknowledged before a control plane
	// restart); unacked are those offered since the last ACK, oldest
	// first. Snapshots are immutable once offered, so keeping the
	// pointers is safe (and cheap: they share the mesh view's services).
	desiredSnap, ackedSnap *pb.Snapshot
	unacked                []*pb.Snapshot

	// seq numbers the proxy's answers and reports in arrival order;
	// ackSeq, nackSeq and reportSeq are those of the latest of each, so
	// the state knows which is newer even when times are equal.
	seq, ackSeq, nackSeq, reportSeq uint64
	// driftSince is when the proxy, having acknowledged the desired
	// content, first reported running something else (zero: no drift).
	driftSince   time.Time
	driftRepairs int
	lastRepair   time.Time

	// cert is the certificate and trust anchors the proxy last reported.
	cert struct {
		NotAfter   time.Time
		Issuer     string
		TrustRoots []string
	}

	stream S // zero while disconnected
	// restored: known from the registry saved before a control plane
	// restart, and its proxy has not reconnected since (state RESTORED;
	// it expires after restoreGrace rather than grace).
	restored bool
	// initial: the current stream has not been sent a snapshot yet. The
	// first snapshot on a stream is always sent, even when its content is
	// unchanged, so a proxy learns what the control plane wants.
	initial bool
}

// maxInstancesPerIdentity bounds the proxies one SPIFFE ID may register.
const maxInstancesPerIdentity = 256

// restoreGracePeriod is the least grace period of workloads restored after
// a control plane restart, counted from the restart. Proxies retry at most
// every few seconds (proxy.controlRetryMax, 3 s), so this covers several
// retries of every proxy plus a slow start: a workload is not dropped from
// snapshots only because its proxy has not reconnected yet.
const restoreGracePeriod = 30 * time.Second

// serviceRetention is how long a service stays in snapshots, without
// endpoints, after its last instance left the registry: callers of a known
// service with no live instance are answered 503 "no healthy endpoints",
// not told the name is unknown.
const serviceRetention = 24 * time.Hour

// idleService is a service with no registered instance, still listed in
// snapshots until serviceRetention after Since (snapshot.IdleService).
type idleService = snapshot.IdleService

// Registry holds every proxy instance that is connected or within its
// endpoint grace period, S being the handle of its config stream. Safe for
// concurrent use.
type Registry[S Stream] struct {
	clock clock.Clock
	now   func() time.Time // clock.Now
	grace time.Duration
	// restoreGrace is the grace period of restored workloads
	// (restoreGracePeriod, or grace when longer); retention that of idle
	// services (serviceRetention).
	restoreGrace time.Duration
	retention    time.Duration
	// ackTimeout and driftGrace decide the SYNCING/STALE and
	// SYNCING/DRIFTED boundaries (Options.AckTimeout, Options.DriftGrace).
	ackTimeout time.Duration
	driftGrace time.Duration
	// changed is called (without mu held) after any change that may alter
	// some proxy's snapshot.
	changed func()
	// connectedGauge follows the number of connected proxies; called with
	// mu held so updates land in order.
	connectedGauge func(float64)
	// onAck, when set, is told of every recorded ACK (instance, version)
	// with mu held, so it has seen an ACK before any state shows it.
	onAck func(instance, version string)

	mu        sync.Mutex
	entries   map[string]*proxyEntry[S]  // by instance
	perID     map[string]int             // entries per SPIFFE ID
	idle      map[serviceKey]idleService // services with no instance left
	gen       uint64                     // bumped on every change to the workload set
	versions  uint64                     // bumped when a version number is handed out (saved with the registry)
	connected int
}

// Options are a registry's settings and hooks, fixed when it is made.
type Options struct {
	// Clock is the control plane's clock: it tells the time of every
	// state and expiry, and times Persist's writes. nil is the system
	// clock.
	Clock clock.Clock
	// Grace is how long a disconnected workload stays registered (the
	// control plane's endpoint grace period).
	Grace time.Duration
	// AckTimeout and DriftGrace: zero means DefaultAckTimeout and
	// DefaultDriftGrace.
	AckTimeout, DriftGrace time.Duration
	// Changed is called, without the registry's lock held, after any
	// change that may alter some proxy's snapshot.
	Changed func()
	// ConnectedGauge follows the number of connected proxies; it is
	// called with the lock held, so updates land in order.
	ConnectedGauge func(float64)
	// OnAck, when set, is told of every recorded ACK (instance, version)
	// with the lock held, so it has seen an ACK before any state shows it.
	OnAck func(instance, version string)
}

// New returns an empty registry.
func New[S Stream](o Options) *Registry[S] {
	clk := clock.Or(o.Clock)
	return &Registry[S]{clock: clk, now: clk.Now, grace: o.Grace, restoreGrace: max(o.Grace, restoreGracePeriod), retention: serviceRetention,
		ackTimeout: cmp.Or(o.AckTimeout, DefaultAckTimeout), driftGrace: cmp.Or(o.DriftGrace, DefaultDriftGrace),
		changed: o.Changed, connectedGauge: o.ConnectedGauge, onAck: o.OnAck,
		entries: map[string]*proxyEntry[S]{}, perID: map[string]int{}, idle: map[serviceKey]idleService{}}
}

// RestoreGrace is the grace period of workloads restored after a control
// plane restart (Restore).
func (r *Registry[S]) RestoreGrace() time.Duration { return r.restoreGrace }

// Connect registers w with its new stream, replacing (and closing, see
// Stream) an older stream of the same instance. runningVersion and
// runningHash come from the Hello. It refuses an instance held by another
// identity (ErrInstanceTaken) and an identity with too many instances
// (ErrTooManyInstances).
func (r *Registry[S]) Connect(w workload, proxyVersion, runningVersion, runningHash string, s S) error {
	r.mu.Lock()
	now := r.now()
	e := r.entries[w.Instance]
	if e != nil && e.w.SPIFFEID != w.SPIFFEID {
		r.mu.Unlock()
		return fmt.Errorf("%w: %q is held by %s", ErrInstanceTaken, w.Instance, e.w.SPIFFEID)
	}
	if e == nil {
		// One identity may run many replicas, but not flood every proxy's
		// snapshot: cap its registered instances (live or in grace).
		if n := r.perID[w.SPIFFEID]; n >= maxInstancesPerIdentity {
			r.mu.Unlock()
			return fmt.Errorf("%w: %s already has %d registered instances", ErrTooManyInstances, w.SPIFFEID, n)
		}
		e = &proxyEntry[S]{}
		r.entries[w.Instance] = e
		r.perID[w.SPIFFEID]++
	}
	var none S
	old := e.stream
	if old == none {
		r.connected++
	}
	w.Connected, w.ConnectedAt = true, now
	e.w, e.proxyVersion, e.disconnectedAt = w, proxyVersion, time.Time{}
	e.stream, e.initial, e.restored = s, true, false
	delete(r.idle, serviceKey{Namespace: w.Namespace, Name: w.Service})
	if n, err := strconv.ParseUint(runningVersion, 10, 64); err == nil && n > e.counter {
		e.counter = n
	}
	e.driftSince = time.Time{}
	if runningHash != "" {
		e.running = VersionHash{Version: runningVersion, Hash: runningHash, At: now}
		e.seq++
		e.reportSeq = e.seq
		// Unknown to us (a control plane restart, or after the grace
		// period): start from what the proxy runs, so unchanged content
		// keeps its version instead of every proxy getting a new one.
		if e.desired.Hash == "" {
			e.desired = VersionHash{Version: runningVersion, Hash: runningHash, At: now}
		}
	}
	r.gen++
	r.connectedGauge(float64(r.connected))
	r.mu.Unlock()

	if old != none {
		old.CloseReplaced()
	}
	r.changed()
	return nil
}

// Disconnect marks the instance's workload disconnected if s is still its
// stream (a replaced stream's end changes nothing) and reports whether it
// did. The workload stays an endpoint until Expire removes it.
func (r *Registry[S]) Disconnect(instance string, s S) bool {
	r.mu.Lock()
	e := r.entries[instance]
	if e == nil || e.stream != s {
		r.mu.Unlock()
		return false
	}
	var none S
	e.stream, e.initial = none, false
	e.w.Connected = false
	e.disconnectedAt = r.now()
	r.connected--
	r.gen++
	r.connectedGauge(float64(r.connected))
	r.mu.Unlock()
	r.changed()
	return true
}

// Expire removes workloads whose stream has been down for the grace period
// (restoreGrace for restored ones) and idle services past their retention.
// A service whose last instance is removed stays listed as idle. It reports
// whether anything was removed.
func (r *Registry[S]) Expire() bool {
	r.mu.Lock()
	now := r.now()
	removed := false
	var none S
	var left map[serviceKey]string // services that lost an instance: their protocol
	for id, e := range r.entries {
		grace := r.grace
		if e.restored {
			grace = r.restoreGrace
		}
		if e.stream == none && now.Sub(e.disconnectedAt) >= grace {
			delete(r.entries, id)
			if r.perID[e.w.SPIFFEID]--; r.perID[e.w.SPIFFEID] <= 0 {
				delete(r.perID, e.w.SPIFFEID)
			}
			if left == nil {
				left = map[serviceKey]string{}
			}
			left[serviceKey{Namespace: e.w.Namespace, Name: e.w.Service}] = e.w.Protocol
			removed = true
		}
	}
	if left != nil {
		for _, e := range r.entries {
			delete(left, serviceKey{Namespace: e.w.Namespace, Name: e.w.Service})
		}
		for k, proto := range left {
			r.idle[k] = idleService{Namespace: k.Namespace, Name: k.Name, Protocol: proto, Since: now}
		}
	}
	for k, svc := range r.idle {
		if now.Sub(svc.Since) >= r.retention {
			delete(r.idle, k)
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
func (r *Registry[S]) workloads() ([]workload, uint64) {
	ws, _, gen := r.View()
	return ws, gen
}

// View returns every registered workload, the idle services (no instance
// left, still listed) sorted by namespace and name, and the registry
// generation they reflect.
func (r *Registry[S]) View() ([]workload, []idleService, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]workload, 0, len(r.entries))
	for _, e := range r.entries {
		out = append(out, e.w)
	}
	idle := make([]idleService, 0, len(r.idle))
	for _, svc := range r.idle {
		idle = append(idle, svc)
	}
	slices.SortFunc(idle, func(a, b idleService) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out, idle, r.gen
}

// Target is a connected proxy a push round may send to.
type Target[S Stream] struct {
	Workload workload
	Stream   S
	// Desired is the snapshot last offered to the proxy (nil: none), so
	// a build can reuse it when nothing of the proxy's changed.
	Desired *pb.Snapshot
	// Initial: the stream has not been offered a snapshot yet.
	Initial bool
}

// Targets lists connected proxies; with initialOnly, only those whose
// stream has not had its first snapshot.
func (r *Registry[S]) Targets(initialOnly bool) []Target[S] {
	r.mu.Lock()
	defer r.mu.Unlock()
	var none S
	out := make([]Target[S], 0, len(r.entries))
	for _, e := range r.entries {
		if e.stream != none && (e.initial || !initialOnly) {
			out = append(out, Target[S]{Workload: e.w, Stream: e.stream, Initial: e.initial, Desired: e.desiredSnap})
		}
	}
	return out
}

// Offer prepares snap (hash set, version empty) for the proxy behind s if
// its content differs from what was last sent, or if s has had no snapshot
// yet: it assigns the version, records snap as desired and reports whether
// the caller should queue it on s. Deciding and queueing are two steps so
// the caller can note the version before the proxy can answer; only one
// goroutine (the push loop) may call Offer, so queued snapshots keep their
// order. snap must not change once offered: the registry keeps it.
func (r *Registry[S]) Offer(instance string, s S, snap *pb.Snapshot) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[instance]
	if e == nil || e.stream != s {
		return false
	}
	if snap.GetHash() == e.desired.Hash && !e.initial {
		return false
	}
	if snap.GetHash() != e.desired.Hash || e.desired.Version == "" {
		e.counter++
		r.versions++
		e.desired = VersionHash{Version: strconv.FormatUint(e.counter, 10), Hash: snap.GetHash()}
		e.driftSince = time.Time{}
	}
	e.desired.At = r.now()
	e.initial = false
	snap.Version = e.desired.Version
	e.desiredSnap = snap
	e.unacked = append(e.unacked, snap)
	if len(e.unacked) > maxUnacked {
		e.unacked = slices.Delete(e.unacked, 0, len(e.unacked)-maxUnacked)
	}
	return true
}

// Ack records an Ack and returns it as recorded (false: not for the
// instance's current stream). An Ack for a version we never sent is
// recorded as the proxy says it; it is not an error (the proxy may answer
// a version from an earlier stream or control plane).
func (r *Registry[S]) Ack(instance string, s S, a *pb.Ack) (VersionHash, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[instance]
	if e == nil || e.stream != s {
		return VersionHash{}, false
	}
	hash := a.GetHash()
	if hash == "" && a.GetVersion() == e.desired.Version {
		hash = e.desired.Hash
	}
	e.acked = VersionHash{Version: a.GetVersion(), Hash: hash, At: r.now()}
	// An ACK says the version was swapped in: it is what runs now, until
	// a later Report says otherwise.
	e.running = e.acked
	e.seq++
	e.ackSeq = e.seq
	e.driftSince = time.Time{}
	// Find the content: among the snapshots offered since the last ACK
	// (this one and older ones are then answered), else keep what we
	// had if it is the same content.
	found := false
	for i := len(e.unacked) - 1; i >= 0; i-- {
		if u := e.unacked[i]; u.GetVersion() == a.GetVersion() && (a.GetHash() == "" || u.GetHash() == a.GetHash()) {
			e.ackedSnap, e.acked.Hash = u, u.GetHash()
			e.unacked = slices.Delete(e.unacked, 0, i+1)
			found = true
			break
		}
	}
	if !found && (e.ackedSnap == nil || e.ackedSnap.GetHash() != hash) {
		e.ackedSnap = nil
	}
	e.running.Hash = e.acked.Hash
	if r.onAck != nil {
		r.onAck(instance, e.acked.Version)
	}
	return e.acked, true
}

// Nack records a Nack.
func (r *Registry[S]) Nack(instance string, s S, n *pb.Nack) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[instance]
	if e == nil || e.stream != s {
		return
	}
	e.nack.Version, e.nack.Error, e.nack.At = n.GetVersion(), n.GetError(), r.now()
	e.seq++
	e.nackSeq = e.seq
}

// Report records what the proxy says it runs, and its certificate. The
// caller has checked rep (CheckReport).
func (r *Registry[S]) Report(instance string, s S, rep *pb.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[instance]
	if e == nil || e.stream != s {
		return
	}
	now := r.now()
	e.running = VersionHash{Version: rep.GetRunningVersion(), Hash: rep.GetRunningHash(), At: now}
	e.seq++
	e.reportSeq = e.seq
	switch {
	case !e.ackedDesired() || rep.GetRunningHash() == e.desired.Hash:
		// Not drift: either in sync, or the desired content is not
		// acknowledged yet (that is SYNCING, STALE or NACKED).
		e.driftSince = time.Time{}
	case e.driftSince.IsZero():
		e.driftSince = now
	}
	e.cert.NotAfter = time.Time{}
	if ts := rep.GetCertNotAfter(); ts != nil {
		e.cert.NotAfter = ts.AsTime()
	}
	e.cert.Issuer = rep.GetCertIssuer()
	e.cert.TrustRoots = slices.Clone(rep.GetTrustRoots())
}

// ackedDesired reports whether the latest answer to the desired content is
// an ACK of it.
func (e *proxyEntry[S]) ackedDesired() bool {
	if e.desired.Hash == "" || e.acked.Hash != e.desired.Hash {
		return false
	}
	return !(e.nack.Version == e.desired.Version && e.nackSeq > e.ackSeq)
}

// drifted reports whether the proxy has reported running other content
// than the desired one it acknowledged, and since when.
func (e *proxyEntry[S]) drifted() (time.Time, bool) {
	var none S
	if e.stream == none || e.driftSince.IsZero() || !e.ackedDesired() || e.reportSeq < e.ackSeq {
		return time.Time{}, false
	}
	return e.driftSince, true
}

// DriftRepair is one re-send the push loop owes a drifted proxy.
type DriftRepair[S Stream] struct {
	Workload workload
	Stream   S
	Snap     *pb.Snapshot // the desired snapshot, to send again
	Running  VersionHash  // what the proxy reports running instead
	Since    time.Time    // drifted since
	Count    int          // repairs of this proxy so far, this one included
}

// DriftRepairs finds the proxies DRIFTED for longer than the drift grace
// period and not repaired within the last one, records a repair for each
// and returns what to re-send: the desired snapshot itself, same version
// and hash (the proxy re-applies it and ACKs).
func (r *Registry[S]) DriftRepairs() []DriftRepair[S] {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var out []DriftRepair[S]
	for _, e := range r.entries {
		since, ok := e.drifted()
		if !ok || e.desiredSnap == nil || now.Sub(since) < r.driftGrace {
			continue
		}
		if !e.lastRepair.IsZero() && now.Sub(e.lastRepair) < r.driftGrace {
			continue
		}
		e.driftRepairs++
		e.lastRepair = now
		out = append(out, DriftRepair[S]{Workload: e.w, Stream: e.stream, Snap: e.desiredSnap, Running: e.running, Since: since, Count: e.driftRepairs})
	}
	return out
}

// state is the entry's sync state at now, since when it holds, and the
// NACK error when NACKED.
func (r *Registry[S]) state(e *proxyEntry[S], now time.Time) (state string, since time.Time, nackErr string) {
	var none S
	switch {
	case e.stream == none && e.restored:
		return adminapi.ProxyRestored, e.disconnectedAt, ""
	case e.stream == none:
		return adminapi.ProxyDisconnected, e.disconnectedAt, ""
	case e.ackedDesired():
		if d, ok := e.drifted(); ok {
			if now.Sub(d) >= r.driftGrace {
				return adminapi.ProxyDrifted, d, ""
			}
			return adminapi.ProxySyncing, d, ""
		}
		return adminapi.ProxySynced, e.acked.At, ""
	case e.desired.Version != "" && e.nack.Version == e.desired.Version:
		return adminapi.ProxyNacked, e.nack.At, e.nack.Error
	case e.desired.Version == "" || e.desired.At.IsZero():
		// Registered, first snapshot not built yet.
		return adminapi.ProxySyncing, e.w.ConnectedAt, ""
	case now.Sub(e.desired.At) >= r.ackTimeout:
		return adminapi.ProxyStale, e.desired.At, ""
	default:
		return adminapi.ProxySyncing, e.desired.At, ""
	}
}

// StateCounts counts registered proxies by state (adminapi.ProxyStates).
func (r *Registry[S]) StateCounts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := make(map[string]int, 6)
	for _, e := range r.entries {
		st, _, _ := r.state(e, now)
		out[st]++
	}
	return out
}

// Proxies describes every registered proxy for the admin API, sorted by
// namespace, service and instance. namespace "" means all.
func (r *Registry[S]) Proxies(namespace string) []adminapi.ProxyInfo {
	r.mu.Lock()
	now := r.now()
	out := make([]adminapi.ProxyInfo, 0, len(r.entries))
	for _, e := range r.entries {
		if namespace == "" || e.w.Namespace == namespace {
			out = append(out, r.info(e, now))
		}
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b adminapi.ProxyInfo) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Instance, b.Instance))
	})
	return out
}

// Proxy describes one instance with the content of its desired and last
// acknowledged snapshots (nil when not known; shared, not to be changed).
func (r *Registry[S]) Proxy(instance string) (info adminapi.ProxyInfo, desired, acked *pb.Snapshot, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[instance]
	if e == nil {
		return adminapi.ProxyInfo{}, nil, nil, false
	}
	return r.info(e, r.now()), e.desiredSnap, e.ackedSnap, true
}

// info renders the entry; the caller holds r.mu.
func (r *Registry[S]) info(e *proxyEntry[S], now time.Time) adminapi.ProxyInfo {
	p := adminapi.ProxyInfo{
		Instance:        e.w.Instance,
		SPIFFEID:        e.w.SPIFFEID,
		Service:         e.w.Service,
		Namespace:       e.w.Namespace,
		AdvertiseAddr:   e.w.AdvertiseAddr,
		Protocol:        e.w.Protocol,
		Labels:          maps.Clone(e.w.Labels),
		ProxyVersion:    e.proxyVersion,
		Connected:       e.w.Connected,
		ConnectedAt:     e.w.ConnectedAt,
		Desired:         configVersion(e.desired),
		Acked:           configVersion(e.acked),
		Running:         configVersion(e.running),
		CertExpiry:      timePtr(e.cert.NotAfter),
		CertIssuer:      e.cert.Issuer,
		TrustRoots:      slices.Clone(e.cert.TrustRoots),
		DriftRepairs:    e.driftRepairs,
		LastDriftRepair: timePtr(e.lastRepair),
	}
	if !e.w.Connected {
		t := e.disconnectedAt
		p.DisconnectedAt = &t
	}
	if e.nack.Version != "" || e.nack.Error != "" {
		p.LastNack = &adminapi.NackInfo{Version: e.nack.Version, Error: e.nack.Error, At: e.nack.At}
	}
	var since time.Time
	p.State, since, p.Error = r.state(e, now)
	p.Since = timePtr(since)
	return p
}

func configVersion(v VersionHash) *adminapi.ConfigVersion {
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
