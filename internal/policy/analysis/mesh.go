package analysis

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"

	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// Mesh is the state of a mesh the analyses run against, as its control
// plane shows it. The analyses only read it.
type Mesh struct {
	Spec     resource.MeshSpec
	Policies []resource.Object // the AuthorizationPolicies of every namespace
	Proxies  []Proxy           // the registered proxies
	// Services are the registered services, including those whose proxies
	// are gone. Only Lint and LintChanges read them.
	Services []Service
}

// Proxy is one registered proxy: the workload it fronts and the identity
// it runs as.
type Proxy struct {
	SPIFFEID           string
	Service, Namespace string
	Labels             map[string]string
}

// Service is one registered service.
type Service struct {
	Name, Namespace string
}

// Labels are a workload's labels.
type Labels map[string]string

// MarshalJSON writes {} rather than null for no labels.
func (l Labels) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]string(l))
}

// String is {k1=v1,k2=v2}, sorted by key; {} for no labels.
func (l Labels) String() string {
	if len(l) == 0 {
		return "{}"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// knownWorkloads lists the registered workloads: each proxy with its
// labels, and services whose proxies are gone without labels. Nil (the
// no-workload check skipped) when nothing is registered: a mesh being set
// up would otherwise see every policy reported.
func knownWorkloads(m *Mesh) []policy.Workload {
	if m == nil {
		return nil
	}
	var known []policy.Workload
	seen := map[string]bool{}
	for _, p := range m.Proxies {
		known = append(known, policy.Workload{Namespace: p.Namespace, Service: p.Service, Labels: p.Labels})
		seen[p.Service+"."+p.Namespace] = true
	}
	for _, s := range m.Services {
		if !seen[s.Name+"."+s.Namespace] {
			known = append(known, policy.Workload{Namespace: s.Namespace, Service: s.Name})
		}
	}
	return known
}
