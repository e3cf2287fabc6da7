package snapshot

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"sync"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	authz "github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// scopeIndex answers, for one set of policies and of services (their
// names, workload labels and identities), which services a caller may
// call and which callers' identities each policy needs. A view reuses its
// predecessor's index while those inputs are unchanged (fingerprint), so
// endpoint churn costs no policy matching. Answers are computed on first
// use and kept; the index is safe for concurrent use.
type scopeIndex struct {
	fp [32]byte

	allow []allowEntry // ALLOW policies (either enforcement)
	// Candidate allow entries by the exact values their sources name
	// (policy.Reach.ExactKeys); scan holds the rest, checked for every
	// caller.
	byPrincipal, byService, byNamespace map[string][]int
	scan                                []int
	// open services are callable by anyone: in a mesh whose default is
	// allow, those no enforced ALLOW policy protects. Sorted.
	open []ServiceKey

	callers []authz.Caller // every workload identity, sorted
	// ambiguous identities serve several services: no service for them.
	ambiguous                                                map[string]bool
	callersByPrincipal, callersByService, callersByNamespace map[string][]int

	// svcFP identifies the services alone: peers stay valid while it does.
	svcFP [32]byte

	mu     sync.Mutex
	scopes map[authz.Caller][]ServiceKey
	// interned holds one slice per distinct scope (by its keys), so
	// callers with equal scopes share it and what views derive from it.
	interned map[string][]ServiceKey
	peers    map[string][]*pb.PeerIdentity // by policy JSON
}

type allowEntry struct {
	reach    *authz.Reach
	services []ServiceKey // the services it protects, sorted
}

// serviceSummary is what scoping needs of one service.
type serviceSummary struct {
	key       ServiceKey
	labelSets []map[string]string // distinct, of its workloads
	ids       []string            // its workloads' SPIFFE IDs, sorted, distinct
}

// summarize groups ws (and the idle services) into services, sorted.
func summarize(ws []Workload, idle []IdleService) []serviceSummary {
	type acc struct {
		labels map[string]map[string]string
		ids    map[string]bool
	}
	byKey := map[ServiceKey]*acc{}
	for i := range ws {
		w := &ws[i]
		k := ServiceKey{w.Namespace, w.Service}
		a := byKey[k]
		if a == nil {
			a = &acc{labels: map[string]map[string]string{}, ids: map[string]bool{}}
			byKey[k] = a
		}
		a.labels[labelKey(w.Labels)] = w.Labels
		if w.SPIFFEID != "" {
			a.ids[w.SPIFFEID] = true
		}
	}
	for _, s := range idle {
		k := ServiceKey{s.Namespace, s.Name}
		if byKey[k] == nil {
			byKey[k] = &acc{}
		}
	}
	out := make([]serviceSummary, 0, len(byKey))
	for k, a := range byKey {
		s := serviceSummary{key: k, ids: slices.Sorted(maps.Keys(a.ids))}
		for _, lk := range slices.Sorted(maps.Keys(a.labels)) {
			s.labelSets = append(s.labelSets, a.labels[lk])
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b serviceSummary) int { return CompareKeys(a.key, b.key) })
	return out
}

// labelKey is a canonical encoding of a label map.
func labelKey(l map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(l)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(l[k])
		b.WriteByte(0)
	}
	return b.String()
}

// CompareKeys orders service keys by namespace, then name.
func CompareKeys(a, b ServiceKey) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// fingerprint identifies the inputs of a scope index: the services, and
// with policies the mesh default and the ALLOW policies (a DENY policy
// changes no scope; the peers it names are cached by its content).
func fingerprint(defaultAllow bool, svcs []serviceSummary, policies []Policy, withPolicies bool) [32]byte {
	h := sha256.New()
	var n [8]byte
	put := func(s string) {
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	if withPolicies && defaultAllow {
		put("allow")
	}
	for i := range svcs {
		s := &svcs[i]
		put(s.key.Namespace)
		put(s.key.Name)
		for _, l := range s.labelSets {
			put(labelKey(l))
		}
		put("")
		for _, id := range s.ids {
			put(id)
		}
		put("")
	}
	for i := range policies {
		if withPolicies && policies[i].action == resource.ActionAllow {
			put(string(policies[i].JSON))
		}
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// newScopeIndex builds the index, or returns prev when its inputs are the
// same.
func newScopeIndex(prev *scopeIndex, defaultAllow bool, svcs []serviceSummary, policies []Policy) *scopeIndex {
	fp := fingerprint(defaultAllow, svcs, policies, true)
	if prev != nil && prev.fp == fp {
		return prev
	}
	svcFP := fingerprint(defaultAllow, svcs, nil, false)
	peers := map[string][]*pb.PeerIdentity{}
	if prev != nil && prev.svcFP == svcFP && len(prev.peers) <= 2*len(policies)+16 {
		prev.mu.Lock()
		peers = maps.Clone(prev.peers)
		prev.mu.Unlock()
	}
	x := &scopeIndex{
		fp:                 fp,
		svcFP:              svcFP,
		byPrincipal:        map[string][]int{},
		byService:          map[string][]int{},
		byNamespace:        map[string][]int{},
		ambiguous:          map[string]bool{},
		callersByPrincipal: map[string][]int{},
		callersByService:   map[string][]int{},
		callersByNamespace: map[string][]int{},
		scopes:             map[authz.Caller][]ServiceKey{},
		interned:           map[string][]ServiceKey{},
		peers:              peers,
	}
	protected := map[ServiceKey]bool{}
	byKey := make(map[ServiceKey]int, len(svcs))
	byNS := map[string][]int{}
	for j := range svcs {
		byKey[svcs[j].key] = j
		byNS[svcs[j].key.Namespace] = append(byNS[svcs[j].key.Namespace], j)
	}
	all := make([]int, len(svcs))
	for j := range all {
		all[j] = j
	}
	for i := range policies {
		p := &policies[i]
		if p.reach == nil || p.action != resource.ActionAllow {
			continue
		}
		e := allowEntry{reach: p.reach}
		// The services p may select: one by name, its namespace's, or
		// (mesh-wide) all; protects decides among them.
		cand := byNS[p.Namespace]
		switch {
		case p.Namespace == authz.MeshNamespace && p.Selector.Service == "" && len(p.Selector.MatchLabels) == 0:
			cand = all
		case p.Selector.Service != "":
			cand = nil
			if j, ok := byKey[ServiceKey{Namespace: p.Namespace, Name: p.Selector.Service}]; ok {
				cand = []int{j}
			}
		}
		for _, j := range cand {
			if protects(p, &svcs[j]) {
				e.services = append(e.services, svcs[j].key)
				if p.enforced {
					protected[svcs[j].key] = true
				}
			}
		}
		if len(e.services) == 0 {
			continue
		}
		n := len(x.allow)
		x.allow = append(x.allow, e)
		principals, services, namespaces, ok := p.reach.ExactKeys()
		if !ok {
			x.scan = append(x.scan, n)
			continue
		}
		for _, v := range principals {
			x.byPrincipal[v] = appendOnce(x.byPrincipal[v], n)
		}
		for _, v := range services {
			x.byService[v] = appendOnce(x.byService[v], n)
		}
		for _, v := range namespaces {
			x.byNamespace[v] = appendOnce(x.byNamespace[v], n)
		}
	}
	if defaultAllow {
		for i := range svcs {
			if !protected[svcs[i].key] {
				x.open = append(x.open, svcs[i].key)
			}
		}
	}
	serviceOf := map[string]string{}
	seen := map[authz.Caller]bool{}
	for i := range svcs {
		s := &svcs[i]
		for _, id := range s.ids {
			c := authz.Caller{Principal: id, Namespace: s.key.Namespace, Service: s.key.Name}
			if prev, ok := serviceOf[id]; ok && prev != s.key.Name {
				x.ambiguous[id] = true
			}
			serviceOf[id] = s.key.Name
			if !seen[c] {
				seen[c] = true
				x.callers = append(x.callers, c)
			}
		}
	}
	for i, c := range x.callers {
		x.callersByPrincipal[c.Principal] = append(x.callersByPrincipal[c.Principal], i)
		x.callersByService[c.Service] = append(x.callersByService[c.Service], i)
		x.callersByNamespace[c.Namespace] = append(x.callersByNamespace[c.Namespace], i)
	}
	return x
}

// protects reports whether p selects a workload of s; a service without
// workloads (idle) by its name alone.
func protects(p *Policy, s *serviceSummary) bool {
	if len(s.labelSets) == 0 {
		return authz.Selects(p.Namespace, resource.Selector{Service: p.Selector.Service}, &authz.Workload{Namespace: s.key.Namespace, Service: s.key.Name}) &&
			len(p.Selector.MatchLabels) == 0
	}
	for _, l := range s.labelSets {
		if authz.Selects(p.Namespace, p.Selector, &authz.Workload{Namespace: s.key.Namespace, Service: s.key.Name, Labels: l}) {
			return true
		}
	}
	return false
}

func appendOnce(list []int, n int) []int {
	if len(list) > 0 && list[len(list)-1] == n {
		return list
	}
	return append(list, n)
}

// scope returns the services c may call, sorted. The slice is shared.
func (x *scopeIndex) scope(c authz.Caller) []ServiceKey {
	x.mu.Lock()
	defer x.mu.Unlock()
	if s, ok := x.scopes[c]; ok {
		return s
	}
	var cand []int
	cand = append(cand, x.byPrincipal[c.Principal]...)
	cand = append(cand, x.byService[c.Service]...)
	cand = append(cand, x.byNamespace[c.Namespace]...)
	cand = append(cand, x.scan...)
	slices.Sort(cand)
	cand = slices.Compact(cand)
	out := slices.Clone(x.open)
	for _, i := range cand {
		if e := &x.allow[i]; e.reach.MayAdmit(c) {
			out = append(out, e.services...)
		}
	}
	slices.SortFunc(out, CompareKeys)
	out = x.internLocked(slices.Compact(out))
	x.scopes[c] = out
	return out
}

// intern returns the shared slice with keys' content (sorted, distinct).
func (x *scopeIndex) intern(keys []ServiceKey) []ServiceKey {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.internLocked(keys)
}

func (x *scopeIndex) internLocked(keys []ServiceKey) []ServiceKey {
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k.Namespace)
		b.WriteByte('/')
		b.WriteString(k.Name)
		b.WriteByte(0)
	}
	if s, ok := x.interned[b.String()]; ok {
		return s
	}
	x.interned[b.String()] = keys
	return keys
}

// peersOf returns the identities policy p names or admits by name, with
// their services, sorted by SPIFFE ID. The slice is shared.
func (x *scopeIndex) peersOf(p *Policy) []*pb.PeerIdentity {
	x.mu.Lock()
	defer x.mu.Unlock()
	if out, ok := x.peers[string(p.JSON)]; ok {
		return out
	}
	var out []*pb.PeerIdentity
	if p.reach != nil {
		allow := p.action == resource.ActionAllow
		for _, ci := range x.peerCandidates(p.reach) {
			c := x.callers[ci]
			if x.ambiguous[c.Principal] {
				continue
			}
			if p.reach.NamesService(c.Service) || (allow && p.reach.AdmitsByName(c)) {
				out = append(out, &pb.PeerIdentity{SpiffeId: c.Principal, Service: c.Service})
			}
		}
	}
	slices.SortFunc(out, func(a, b *pb.PeerIdentity) int { return cmp.Compare(a.GetSpiffeId(), b.GetSpiffeId()) })
	out = slices.CompactFunc(out, func(a, b *pb.PeerIdentity) bool { return a.GetSpiffeId() == b.GetSpiffeId() })
	x.peers[string(p.JSON)] = out
	return out
}

// peerCandidates lists the callers peersOf must check for r: those its
// exact values name, or all of them.
func (x *scopeIndex) peerCandidates(r *authz.Reach) []int {
	principals, services, namespaces, ok := r.ExactKeys()
	named, namedOK := r.NamedExact()
	if !ok || !namedOK {
		all := make([]int, len(x.callers))
		for i := range all {
			all[i] = i
		}
		return all
	}
	var out []int
	for _, v := range principals {
		out = append(out, x.callersByPrincipal[v]...)
	}
	for _, v := range append(services, named...) {
		out = append(out, x.callersByService[v]...)
	}
	for _, v := range namespaces {
		out = append(out, x.callersByNamespace[v]...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
