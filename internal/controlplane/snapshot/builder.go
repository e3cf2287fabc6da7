// Package snapshot builds the per-proxy config snapshots of the control
// plane, as pure functions of their input: the mesh settings, the trust
// bundle, the registered workloads and idle services, the stored policies
// and virtual IPs (Input). NewView builds the part every proxy shares
// once, Build one proxy's snapshot from it, Consistent checks a view before
// anything built from it is published, Hash is the protocol's definition
// of Snapshot.hash and Render the JSON `trellis status` shows. It holds no
// state and does no I/O; it must not depend on the store, the registry or
// any role.
package snapshot

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/egress"
	"github.com/trellismesh/trellis/internal/meshconfig"
	authz "github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// deterministic is the marshaling the snapshot hash is defined on.
var deterministic = proto.MarshalOptions{Deterministic: true}

// policy is one stored AuthorizationPolicy, decoded once when it changes.
type Policy struct {
	Namespace string
	Name      string
	Selector  resource.Selector
	// JSON is what proxies receive: canonical JSON of the resource.
	JSON []byte
	// principals narrow an EgressPolicy to these SPIFFE IDs (nil for
	// every other kind; empty for an EgressPolicy listing none).
	principals []string
	// problem says why a proxy would refuse JSON ("" when it compiles);
	// a snapshot carrying the policy is not published.
	problem string
	// action and enforced are the spec's; reach its caller side (nil for
	// a policy not decoded by PolicyFromObject: it scopes nothing).
	action   string
	enforced bool
	reach    *authz.Reach
	// gateways is a GatewayRoute's spec.gateways.
	gateways []string
}

// policyFromObject decodes a stored AuthorizationPolicy. The JSON sent to
// proxies keeps only apiVersion, kind, name, namespace and the defaulted
// spec: labels, annotations, uid and timestamps do not change what a proxy
// enforces, so they must not change the snapshot hash either.
func PolicyFromObject(o *resource.Object) (Policy, error) {
	spec, err := resource.AuthorizationPolicySpecOf(o)
	if err != nil {
		return Policy{}, err
	}
	out, err := canonicalJSON(o, spec)
	if err != nil {
		return Policy{}, err
	}
	return Policy{Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Selector: spec.Selector, JSON: out, problem: policyProblem(out),
		action: spec.Action, enforced: spec.Enforcement == resource.EnforcementEnforce, reach: authz.CompileReach(&spec)}, nil
}

// JWTAuthnFromObject decodes a stored JWTAuthentication into what proxies
// receive: its canonical JSON without labels, annotations, uid or
// timestamps (as for policies), and its selector.
func JWTAuthnFromObject(o *resource.Object) (Policy, error) {
	spec, err := resource.JWTAuthenticationSpecOf(o)
	return selectedPolicy(o, spec, spec.Selector, err)
}

// RateLimitFromObject decodes a stored RateLimit for proxies.
func RateLimitFromObject(o *resource.Object) (Policy, error) {
	spec, err := resource.RateLimitSpecOf(o)
	return selectedPolicy(o, spec, spec.Selector, err)
}

// GatewayRouteFromObject decodes a stored GatewayRoute for gateways. Its
// Selector is empty: gateways are chosen by their role label and the
// route's spec.gateways (routesGateway).
func GatewayRouteFromObject(o *resource.Object) (Policy, error) {
	spec, err := resource.GatewayRouteSpecOf(o)
	p, err := selectedPolicy(o, spec, resource.Selector{}, err)
	p.gateways = spec.Gateways
	return p, err
}

// TrafficPolicyFromObject decodes a stored TrafficPolicy for the proxies
// that call its destination (callsInto).
func TrafficPolicyFromObject(o *resource.Object) (Policy, error) {
	spec, err := resource.TrafficPolicySpecOf(o)
	return selectedPolicy(o, spec, spec.Selector, err)
}

// RouteFromObject decodes a stored Route for the proxies that call its
// spec.service (callsInto: Selector.Service is that service).
func RouteFromObject(o *resource.Object) (Policy, error) {
	spec, err := resource.RouteSpecOf(o)
	p, err := selectedPolicy(o, spec, resource.Selector{Service: spec.Service}, err)
	if err != nil {
		return Policy{}, err
	}
	kind := o.Metadata.Labels[meshconfig.LabelGatewayAPIKind]
	if kind == "" {
		return p, nil
	}
	// A Route made of a Gateway API route keeps what the proxies merge
	// it by (meshconfig.CompileRoutes): its kind, the route it was made
	// of and that route's age.
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return Policy{}, fmt.Errorf("encode %s: %w", o.Ref(), err)
	}
	md := resource.Metadata{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace,
		Labels: map[string]string{meshconfig.LabelGatewayAPIKind: kind}, CreationTimestamp: o.Metadata.CreationTimestamp}
	if from := o.Metadata.Annotations[meshconfig.AnnotationFrom]; from != "" {
		md.Annotations = map[string]string{meshconfig.AnnotationFrom: from}
	}
	if p.JSON, err = json.Marshal(resource.Object{APIVersion: resource.APIVersion, Kind: o.Kind, Metadata: md, Spec: specJSON}); err != nil {
		return Policy{}, fmt.Errorf("encode %s: %w", o.Ref(), err)
	}
	return p, nil
}

// callsInto reports whether the client-side resource p (a TrafficPolicy,
// or a Route with its service in Selector) is about a service of svcs:
// in p's namespace, p's service or, without one, any.
func callsInto(p *Policy, svcs []*pb.Service) bool {
	for _, s := range svcs {
		if s.GetNamespace() == p.Namespace && (p.Selector.Service == "" || p.Selector.Service == s.GetName()) {
			return true
		}
	}
	return false
}

// routesGateway reports whether the GatewayRoute p applies to w: w is a
// gateway, and p names no gateways or names w's service.
func routesGateway(p *Policy, w *Workload) bool {
	if w.Labels[resource.GatewayRoleLabel] != resource.GatewayRoleValue {
		return false
	}
	return len(p.gateways) == 0 || slices.Contains(p.gateways, w.Service+"."+w.Namespace)
}

// EgressPolicyFromObject decodes a stored EgressPolicy for proxies; it
// selects a workload by its selector and, when it lists principals, the
// workload's SPIFFE ID (Selects).
func EgressPolicyFromObject(o *resource.Object) (Policy, error) {
	spec, err := resource.EgressPolicySpecOf(o)
	p, err := selectedPolicy(o, spec, spec.Selector, err)
	if err != nil {
		return Policy{}, err
	}
	p.principals = spec.Principals
	return p, nil
}

// selectedPolicy is a resource proxies get when its selector picks their
// workload: its canonical JSON and selector (decodeErr from its spec).
func selectedPolicy(o *resource.Object, spec any, sel resource.Selector, decodeErr error) (Policy, error) {
	if decodeErr != nil {
		return Policy{}, decodeErr
	}
	out, err := canonicalJSON(o, spec)
	if err != nil {
		return Policy{}, err
	}
	return Policy{Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Selector: sel, JSON: out}, nil
}

// canonicalJSON is o as proxies receive it: apiVersion, kind, name,
// namespace and the decoded, defaulted spec.
func canonicalJSON(o *resource.Object, spec any) ([]byte, error) {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", o.Ref(), err)
	}
	out, err := json.Marshal(resource.Object{
		APIVersion: resource.APIVersion,
		Kind:       o.Kind,
		Metadata:   resource.Metadata{Name: o.Metadata.Name, Namespace: o.Metadata.Namespace},
		Spec:       specJSON,
	})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", o.Ref(), err)
	}
	return out, nil
}

// Selects reports whether p applies to w, by the policy engine's own
// selection rules (one definition for the whole mesh) and, for an
// EgressPolicy listing principals, w's SPIFFE ID.
func Selects(p *Policy, w *Workload) bool {
	return authz.Selects(p.Namespace, p.Selector, &authz.Workload{Namespace: w.Namespace, Service: w.Service, Labels: w.Labels}) &&
		egress.MatchPrincipals(p.principals, w.SPIFFEID)
}

// Input is everything snapshots are built from at one moment.
type Input struct {
	Mesh resource.MeshSpec
	// TrustBundle holds the DER roots.
	TrustBundle [][]byte
	// Workloads are the connected and in-grace workloads.
	Workloads []Workload
	// Idle are services without a registered instance, listed without
	// endpoints.
	Idle     []IdleService
	Policies []Policy
	// JWTAuthns are the JWTAuthentication resources (JWTAuthnFromObject).
	JWTAuthns []Policy
	// RateLimits are the RateLimit resources (RateLimitFromObject).
	RateLimits []Policy
	// GatewayRoutes are the GatewayRoute resources
	// (GatewayRouteFromObject).
	GatewayRoutes []Policy
	// TrafficPolicies and Routes are the client-side traffic resources
	// (TrafficPolicyFromObject, RouteFromObject).
	TrafficPolicies []Policy
	Routes          []Policy
	// EgressPolicies are the EgressPolicy resources
	// (EgressPolicyFromObject).
	EgressPolicies []Policy
	// ReportInterval is rounded up to whole seconds, at least one.
	ReportInterval time.Duration
	// CollectorAddr is an external collector's address ("" when embedded).
	CollectorAddr string
	// Issuer is the CA's active issuer (Snapshot.issuer).
	Issuer string
	// VIPs are the services' virtual IPs (allocated before building; a
	// service absent here has none).
	VIPs map[ServiceKey]string
	// TrustDomain is the one every endpoint's and client-only proxy's
	// SPIFFE ID must be in (see meshView.consistent).
	TrustDomain spiffeid.TrustDomain
	// VIPRanges are where virtual IPs come from (MeshConfig.virtual_ip_ranges).
	VIPRanges []netip.Prefix
	// Previous is the view this one replaces (nil: none); its scope index
	// is reused when policies and services are unchanged but for
	// endpoints.
	Previous *View
	// WorkloadsGen is the generation of Workloads, Idle and VIPs (0:
	// unknown): a view with the previous one's generation reuses its
	// services instead of building them again.
	WorkloadsGen uint64
}

// meshView is the part of every proxy's snapshot that all proxies share,
// built once per change. Its messages are shared by the snapshots built
// from it and must never be modified: they are marshaled concurrently by
// every stream that sends them.
type View struct {
	mesh        *pb.MeshConfig
	trustBundle [][]byte
	services    []*pb.Service
	byKey       map[ServiceKey]*pb.Service
	// summaries and svcProblems are derived from the services alone, and
	// workloadsGen is Input.WorkloadsGen: reused with them.
	summaries    []serviceSummary
	svcProblems  []string
	workloadsGen uint64
	idx          *scopeIndex
	selIndex     selectorIndex
	scopeMu      sync.Mutex
	scopes       map[*ServiceKey]*scope // by scopeID
	prevScopes   map[*ServiceKey]*scope // the previous view's, when reusable (read only)
	policies     []Policy               // sorted by namespace, name
	jwtAuthns    []Policy               // JWTAuthentications, sorted by namespace, name
	rateLimits   []Policy               // RateLimits, sorted by namespace, name
	gwRoutes     []Policy               // GatewayRoutes, sorted by namespace, name
	traffic      []Policy               // TrafficPolicies, sorted by namespace, name
	routes       []Policy               // Routes, sorted by namespace, name
	egress       []Policy               // EgressPolicies, sorted by namespace, name
	reportSecs   uint32
	issuer       string
	// prefix is the SHA-256 state after the shared fields. Deterministic
	// marshaling writes fields in number order, and mesh (3) and
	// trust_bundle (4) come before the per-proxy services (5), policies
	// (6) and the rest, so a proxy's hash only costs its own fields.
	prefix hash.Cloner
	// shared holds the shared fields' encoding when SHA-256 state cannot
	// be cloned (GOFIPS140=v1.0.0).
	shared []byte
	// problems make every snapshot built from the view inconsistent
	// (check.go); the pusher publishes none of them.
	problems []string
}

// newMeshView builds the shared part of snapshots from in.
func NewView(in Input) (*View, error) {
	v := &View{
		mesh: &pb.MeshConfig{MtlsMode: in.Mesh.MTLS.Mode, AuthorizationDefault: in.Mesh.Authorization.Default, HidePolicy: in.Mesh.Authorization.HidePolicy, CollectorAddress: in.CollectorAddr, OutboundMode: in.Mesh.Outbound.Mode,
			PathNormalization: in.Mesh.HTTP.PathNormalization, AllowedUpgrades: in.Mesh.HTTP.AllowedUpgrades, StripHeaders: in.Mesh.HTTP.StripHeaders,
			VirtualIpRanges: prefixStrings(in.VIPRanges), ExtAuthzProviders: extAuthzProviders(in.Mesh.ExtensionProviders),
			Tracing: tracingConfig(in.Mesh.Tracing, in.Mesh.ExtensionProviders)},
		trustBundle:  in.TrustBundle,
		policies:     slices.Clone(in.Policies),
		jwtAuthns:    slices.Clone(in.JWTAuthns),
		rateLimits:   slices.Clone(in.RateLimits),
		gwRoutes:     slices.Clone(in.GatewayRoutes),
		traffic:      slices.Clone(in.TrafficPolicies),
		routes:       slices.Clone(in.Routes),
		egress:       slices.Clone(in.EgressPolicies),
		reportSecs:   reportSeconds(in.ReportInterval),
		issuer:       in.Issuer,
		workloadsGen: in.WorkloadsGen,
	}
	byRef := func(a, b Policy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	}
	slices.SortFunc(v.policies, byRef)
	slices.SortFunc(v.jwtAuthns, byRef)
	slices.SortFunc(v.rateLimits, byRef)
	slices.SortFunc(v.gwRoutes, byRef)
	slices.SortFunc(v.traffic, byRef)
	slices.SortFunc(v.routes, byRef)
	slices.SortFunc(v.egress, byRef)
	pv := in.Previous
	if pv != nil && in.WorkloadsGen != 0 && pv.workloadsGen == in.WorkloadsGen {
		// Only resources or trust changed: the services are the
		// previous view's (built from the same workloads and VIPs).
		v.services, v.byKey, v.summaries, v.svcProblems = pv.services, pv.byKey, pv.summaries, pv.svcProblems
	} else {
		v.services = WithVIPs(ServicesOf(in.Workloads, in.Idle), in.VIPs)
		v.summaries = summarize(in.Workloads, in.Idle)
		v.svcProblems = servicesProblems(&in, v.services)
	}
	v.problems = append(otherProblems(v), v.svcProblems...)
	var prev *scopeIndex
	if pv != nil && v.byKey == nil {
		// Unchanged parts keep their messages, so that a proxy whose
		// parts are all unchanged keeps its snapshot without a marshal
		// (BuildFrom).
		for i, svc := range v.services {
			if old := pv.byKey[ServiceKey{svc.GetNamespace(), svc.GetName()}]; old != nil && proto.Equal(old, svc) {
				v.services[i] = old
			}
		}
	}
	if pv != nil {
		prev = pv.idx
		if proto.Equal(pv.mesh, v.mesh) {
			v.mesh = pv.mesh
		}
		if slices.EqualFunc(pv.trustBundle, v.trustBundle, bytes.Equal) {
			v.trustBundle = pv.trustBundle
		}
	}
	if v.byKey == nil {
		v.byKey = make(map[ServiceKey]*pb.Service, len(v.services))
		for _, svc := range v.services {
			v.byKey[ServiceKey{svc.GetNamespace(), svc.GetName()}] = svc
		}
	}
	v.selIndex = indexSelectors(v.policies)
	v.scopes = map[*ServiceKey]*scope{}
	if pv := in.Previous; pv != nil && pv.idx == v.idx && pv.mesh == v.mesh && sameSlice(pv.trustBundle, v.trustBundle) {
		// Same index (so the same interned scopes) and the same shared
		// prefix: a scope whose services are all unchanged keeps its
		// encoding and hash state (scoped checks).
		pv.scopeMu.Lock()
		v.prevScopes = pv.scopes
		pv.scopeMu.Unlock()
	}
	v.idx = newScopeIndex(prev, in.Mesh.Authorization.Default == "allow", v.summaries, v.policies)
	shared, err := deterministic.Marshal(&pb.Snapshot{Mesh: v.mesh, TrustBundle: v.trustBundle})
	if err != nil {
		return nil, fmt.Errorf("build snapshot: %w", err)
	}
	if h, ok := sha256.New().(hash.Cloner); ok {
		h.Write(shared)
		v.prefix = h
	} else {
		v.shared = shared
	}
	return v, nil
}

func reportSeconds(d time.Duration) uint32 {
	s := (d + time.Second - 1) / time.Second
	return uint32(max(s, 1))
}

// Build builds w's snapshot from v, with its hash set and version empty
// (the registry assigns versions). It does not modify v. Its services are
// w's scope: those its identity may call (scopeIndex.scope) and those it
// asked for (Workload.Wants). A policy a proxy would refuse makes it fail
// with an *InconsistentError; v's own consistency is the caller's to
// check, once (View.Consistent).
func Build(v *View, w *Workload) (*pb.Snapshot, error) { return BuildFrom(v, w, nil) }

// BuildFrom is Build given the snapshot last built for w (nil: none):
// when every part of w's is the same message as prev's, the result is a
// copy of prev (version cleared) without marshaling or hashing again.
func BuildFrom(v *View, w *Workload, prev *pb.Snapshot) (*pb.Snapshot, error) {
	sc, err := v.scoped(w)
	if err != nil {
		return nil, fmt.Errorf("build snapshot for %s: %w", w.Instance, err)
	}
	snap := &pb.Snapshot{
		Mesh:                  v.mesh,
		TrustBundle:           v.trustBundle,
		Services:              sc.services,
		ReportIntervalSeconds: v.reportSecs,
		Issuer:                v.issuer,
	}
	var problems []string
	var selected []int
	for _, i := range v.selIndex.candidates(w) {
		if p := &v.policies[i]; Selects(p, w) {
			selected = append(selected, i)
			snap.Policies = append(snap.Policies, p.JSON)
			if p.problem != "" {
				problems = append(problems, fmt.Sprintf("policy %s/%s: %s", p.Namespace, p.Name, p.problem))
			}
		}
	}
	for i := range v.jwtAuthns {
		if p := &v.jwtAuthns[i]; Selects(p, w) {
			snap.JwtAuthentications = append(snap.JwtAuthentications, p.JSON)
		}
	}
	for i := range v.rateLimits {
		if p := &v.rateLimits[i]; Selects(p, w) {
			snap.RateLimits = append(snap.RateLimits, p.JSON)
		}
	}
	for i := range v.traffic {
		if p := &v.traffic[i]; callsInto(p, sc.services) {
			snap.TrafficPolicies = append(snap.TrafficPolicies, p.JSON)
		}
	}
	for i := range v.routes {
		if p := &v.routes[i]; callsInto(p, sc.services) {
			snap.Routes = append(snap.Routes, p.JSON)
		}
	}
	for i := range v.gwRoutes {
		if p := &v.gwRoutes[i]; routesGateway(p, w) {
			snap.GatewayRoutes = append(snap.GatewayRoutes, p.JSON)
		}
	}
	for i := range v.egress {
		if p := &v.egress[i]; Selects(p, w) {
			snap.EgressPolicies = append(snap.EgressPolicies, p.JSON)
		}
	}
	if problems != nil {
		return nil, &InconsistentError{Problems: problems}
	}
	snap.Peers = v.peers(selected)
	if prev != nil && sameParts(prev, snap) {
		snap.Hash = prev.GetHash()
		return snap, nil
	}
	own, err := deterministic.Marshal(&pb.Snapshot{Policies: snap.Policies, ReportIntervalSeconds: snap.ReportIntervalSeconds, Issuer: snap.Issuer, Peers: snap.Peers, JwtAuthentications: snap.JwtAuthentications, RateLimits: snap.RateLimits, GatewayRoutes: snap.GatewayRoutes, EgressPolicies: snap.EgressPolicies,
		TrafficPolicies: snap.TrafficPolicies, Routes: snap.Routes})
	if err != nil {
		return nil, fmt.Errorf("build snapshot for %s: %w", w.Instance, err)
	}
	if snap.Hash, err = v.hash(sc, own); err != nil {
		return nil, fmt.Errorf("build snapshot for %s: %w", w.Instance, err)
	}
	return snap, nil
}

// scope is one distinct scope of a view: its services and the hash state
// after the shared fields and them, shared by every proxy with that scope.
type scope struct {
	services []*pb.Service
	state    hash.Cloner // nil when SHA-256 state cannot be cloned
	encoded  []byte      // the services' encoding, when state is nil
}

// scoped returns w's scope: the services its identity may call and those
// it asked for that v knows.
func (v *View) scoped(w *Workload) (*scope, error) {
	keys := v.idx.scope(authz.Caller{Principal: w.SPIFFEID, Namespace: w.Namespace, Service: w.Service})
	if len(w.Wants) > 0 {
		merged := append(slices.Clone(keys), w.Wants...)
		slices.SortFunc(merged, CompareKeys)
		merged = slices.Compact(merged)
		merged = slices.DeleteFunc(merged, func(k ServiceKey) bool { return v.byKey[k] == nil })
		keys = v.idx.intern(merged)
	}
	v.scopeMu.Lock()
	defer v.scopeMu.Unlock()
	id := scopeID(keys)
	if sc, ok := v.scopes[id]; ok {
		return sc, nil
	}
	sc := &scope{services: make([]*pb.Service, 0, len(keys))}
	for _, k := range keys {
		if svc := v.byKey[k]; svc != nil {
			sc.services = append(sc.services, svc)
		}
	}
	if old, ok := v.prevScopes[id]; ok && slices.Equal(old.services, sc.services) {
		v.scopes[id] = old
		return old, nil
	}
	enc, err := deterministic.Marshal(&pb.Snapshot{Services: sc.services})
	if err != nil {
		return nil, err
	}
	if v.prefix != nil {
		c, err := v.prefix.Clone()
		if err != nil {
			return nil, err
		}
		c.Write(enc)
		sc.state = c.(hash.Cloner)
	} else {
		sc.encoded = enc
	}
	v.scopes[id] = sc
	return sc, nil
}

// scopeID identifies an interned key list by its first element's address.
func scopeID(keys []ServiceKey) *ServiceKey {
	if len(keys) == 0 {
		return nil
	}
	return &keys[0]
}

// peers merges the identities the selected policies need (peersOf),
// sorted and distinct.
func (v *View) peers(selected []int) []*pb.PeerIdentity {
	var out []*pb.PeerIdentity
	for _, i := range selected {
		p := v.idx.peersOf(&v.policies[i])
		if out == nil {
			out = p
			continue
		}
		out = append(slices.Clone(out), p...)
		slices.SortFunc(out, func(a, b *pb.PeerIdentity) int { return cmp.Compare(a.GetSpiffeId(), b.GetSpiffeId()) })
		out = slices.CompactFunc(out, func(a, b *pb.PeerIdentity) bool { return a.GetSpiffeId() == b.GetSpiffeId() })
	}
	return out
}

// ServiceByVIP returns the service a virtual IP belongs to.
func (v *View) ServiceByVIP(ip string) (ServiceKey, bool) {
	for k, svc := range v.byKey {
		if svc.GetVirtualIp() == ip {
			return k, true
		}
	}
	return ServiceKey{}, false
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// hash finishes the snapshot hash from the state after the shared fields
// and the scope's services, and one proxy's own fields.
func (v *View) hash(sc *scope, own []byte) (string, error) {
	var h hash.Hash
	if sc.state != nil {
		c, err := sc.state.Clone()
		if err != nil {
			return "", err
		}
		h = c
	} else {
		h = sha256.New()
		h.Write(v.shared)
		h.Write(sc.encoded)
	}
	h.Write(own)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// snapshotHash is the protocol's definition of Snapshot.hash: hex SHA-256
// of the deterministic marshaling with version and hash cleared.
func Hash(s *pb.Snapshot) (string, error) {
	c := proto.CloneOf(s)
	c.Version, c.Hash = "", ""
	b, err := deterministic.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("hash snapshot: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// servicesOf groups workloads into services, sorted by namespace and name,
// each with its endpoints sorted by address. A service whose workloads
// advertise no address (client-only proxies), and an idle service (no
// instance left), is listed without endpoints, so its callers are told it
// has no healthy endpoint instead of that the name is unknown.
func ServicesOf(ws []Workload, idle []IdleService) []*pb.Service {
	type key struct{ ns, name string }
	groups := map[key][]*Workload{}
	for i := range ws {
		k := key{ws[i].Namespace, ws[i].Service}
		groups[k] = append(groups[k], &ws[i])
	}
	out := make([]*pb.Service, 0, len(groups)+len(idle))
	for k, g := range groups {
		out = append(out, &pb.Service{Name: k.name, Namespace: k.ns, Protocol: serviceProtocol(g), Endpoints: endpointsOf(g), ClientIds: clientIDsOf(g)})
	}
	for _, svc := range idle {
		if _, ok := groups[key{svc.Namespace, svc.Name}]; !ok {
			out = append(out, &pb.Service{Name: svc.Name, Namespace: svc.Namespace, Protocol: svc.Protocol})
		}
	}
	slices.SortFunc(out, func(a, b *pb.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// serviceProtocol is the protocol most of the service's workloads declare
// (ties go to the lexically first), so one misconfigured instance does not
// flip the whole service.
func serviceProtocol(g []*Workload) string {
	counts := map[string]int{}
	for _, w := range g {
		counts[w.Protocol]++
	}
	best := ""
	for p, n := range counts {
		if best == "" || n > counts[best] || (n == counts[best] && p < best) {
			best = p
		}
	}
	return best
}

// endpointsOf lists one endpoint per advertised address. When two instances
// claim the same address (a proxy restarted with a new instance while the
// old one is still in its grace period), the connected, most recently
// connected one wins: the address now belongs to it.
func endpointsOf(g []*Workload) []*pb.Endpoint {
	byAddr := make(map[string]*Workload, len(g))
	for _, w := range g {
		if w.AdvertiseAddr == "" {
			continue
		}
		if cur, ok := byAddr[w.AdvertiseAddr]; !ok || newerClaim(w, cur) {
			byAddr[w.AdvertiseAddr] = w
		}
	}
	eps := make([]*pb.Endpoint, 0, len(byAddr))
	for addr, w := range byAddr {
		eps = append(eps, &pb.Endpoint{Address: addr, SpiffeId: w.SPIFFEID, Labels: w.Labels})
	}
	slices.SortFunc(eps, func(a, b *pb.Endpoint) int { return cmp.Compare(a.Address, b.Address) })
	return eps
}

// clientIDsOf lists the identities of the client-only proxies of g.
func clientIDsOf(g []*Workload) []string {
	var ids []string
	for _, w := range g {
		if w.AdvertiseAddr == "" && !slices.Contains(ids, w.SPIFFEID) {
			ids = append(ids, w.SPIFFEID)
		}
	}
	slices.Sort(ids)
	return ids
}

func newerClaim(a, b *Workload) bool {
	if a.Connected != b.Connected {
		return a.Connected
	}
	if !a.ConnectedAt.Equal(b.ConnectedAt) {
		return a.ConnectedAt.After(b.ConnectedAt)
	}
	return a.Instance < b.Instance
}

// Workload is one proxy's workload as the snapshot builder sees it. Values
// are copies; Labels is never mutated after a Hello (a reconnect replaces the
// map), so copies may share it.
type Workload struct {
	Instance      string
	SPIFFEID      string
	Service       string
	Namespace     string
	AdvertiseAddr string
	Protocol      string
	Labels        map[string]string
	Connected     bool
	ConnectedAt   time.Time
	// Wants are services the proxy asked for (Hello.services_wanted and
	// Discover), in its scope whatever policies say. Sorted; never
	// modified once set (a new request replaces the slice).
	Wants []ServiceKey
}

// IdleService is a service with no registered instance, still listed in
// snapshots until the control plane's retention after Since.
type IdleService struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Protocol  string    `json:"protocol,omitempty"`
	Since     time.Time `json:"since"` // when its last instance left
}

// SameTrust reports whether v was built with this bundle and issuer: a
// rotation or retirement changes no workload or resource, but every
// snapshot.
func (v *View) SameTrust(roots [][]byte, issuer string) bool {
	return v.issuer == issuer && slices.EqualFunc(v.trustBundle, roots, bytes.Equal)
}

// ServiceKey names a service.
type ServiceKey struct{ Namespace, Name string }

func (k ServiceKey) String() string { return k.Namespace + "/" + k.Name }

// WithVIPs sets the virtual IP of each service in svcs (just built, not yet
// shared) from vips, and returns svcs.
func WithVIPs(svcs []*pb.Service, vips map[ServiceKey]string) []*pb.Service {
	for _, s := range svcs {
		s.VirtualIp = vips[ServiceKey{s.GetNamespace(), s.GetName()}]
	}
	return svcs
}

// sameParts reports whether a and b are built of the same messages (the
// view reuses unchanged ones), so they hash alike.
func sameParts(a, b *pb.Snapshot) bool {
	return a.GetHash() != "" && a.Mesh == b.Mesh && a.ReportIntervalSeconds == b.ReportIntervalSeconds && a.Issuer == b.Issuer &&
		len(a.TrustBundle) > 0 && sameSlice(a.TrustBundle, b.TrustBundle) &&
		slices.Equal(a.Services, b.Services) &&
		slices.EqualFunc(a.Policies, b.Policies, bytes.Equal) &&
		slices.EqualFunc(a.JwtAuthentications, b.JwtAuthentications, bytes.Equal) &&
		slices.EqualFunc(a.RateLimits, b.RateLimits, bytes.Equal) &&
		slices.EqualFunc(a.GatewayRoutes, b.GatewayRoutes, bytes.Equal) &&
		slices.EqualFunc(a.TrafficPolicies, b.TrafficPolicies, bytes.Equal) &&
		slices.EqualFunc(a.Routes, b.Routes, bytes.Equal) &&
		slices.EqualFunc(a.EgressPolicies, b.EgressPolicies, bytes.Equal) &&
		slices.EqualFunc(a.Peers, b.Peers, func(x, y *pb.PeerIdentity) bool {
			return x.GetSpiffeId() == y.GetSpiffeId() && x.GetService() == y.GetService()
		})
}

// selectorIndex finds the policies that may select a workload by their
// namespace and selector service, in policy order.
type selectorIndex struct {
	meshWide []int
	byKey    map[ServiceKey][]int // Name "": any service of the namespace
}

func indexSelectors(policies []Policy) selectorIndex {
	x := selectorIndex{byKey: map[ServiceKey][]int{}}
	for i := range policies {
		p := &policies[i]
		if p.Namespace == authz.MeshNamespace && p.Selector.Service == "" && len(p.Selector.MatchLabels) == 0 {
			x.meshWide = append(x.meshWide, i)
			continue
		}
		k := ServiceKey{Namespace: p.Namespace, Name: p.Selector.Service}
		x.byKey[k] = append(x.byKey[k], i)
	}
	return x
}

// candidates lists, sorted, the policies that may select w.
func (x *selectorIndex) candidates(w *Workload) []int {
	a, b := x.byKey[ServiceKey{Namespace: w.Namespace}], x.byKey[ServiceKey{Namespace: w.Namespace, Name: w.Service}]
	if len(x.meshWide) == 0 && len(a) == 0 {
		return b
	}
	out := slices.Concat(x.meshWide, a, b)
	slices.Sort(out)
	return out
}

// sameSlice reports whether a and b are the same slice (not just equal).
func sameSlice(a, b [][]byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
