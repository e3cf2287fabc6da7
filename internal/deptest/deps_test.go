package deptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/trellismesh/trellis"

// roles are the packages behind the subcommands of the one binary; none may
// depend on another (they share code through the packages below them).
var roles = []string{
	"internal/controlplane/...",
	"internal/proxy/...",
	"internal/collectord/...",
	"internal/gateway/...", // not written yet
}

// dataPlane is what a proxy links.
var dataPlane = []string{
	"internal/proxy/...",
	"internal/dataplane/...",
	"internal/meshconfig/...",
	"internal/meshdns/...",
	"internal/controlclient/...",
	"internal/policy/...",
	"internal/workloadcert/...",
	"internal/identity/...",
}

// rule: no package matching from may depend, even indirectly, on a package
// matching a banned pattern. A pattern is a path relative to the module, or
// an external import path; "/..." also matches everything below.
type rule struct {
	from, banned []string
	why          string
}

var rules = []rule{
	{
		from: dataPlane,
		banned: []string{
			"internal/meshca/...", "internal/jointoken/...",
			"internal/store/...", "go.etcd.io/bbolt/...", "go.etcd.io/etcd/...",
			"internal/controlplane/...", "k8s.io/...", "internal/kube/...", "sigs.k8s.io/gateway-api/...",
		},
		why: "the data plane must not link the CA or token signer, the store or its etcd client, the control plane or the Kubernetes libraries (client-go alone adds 5-15 MB to a process's RSS)",
	},
	{
		from: []string{"internal/store/etcd/..."},
		banned: []string{
			"internal/controlplane/...", "internal/meshca/...", "internal/jointoken/...",
			"internal/proxy/...", "internal/dataplane/...", "internal/kube/...", "k8s.io/...",
		},
		why: "the etcd store backend stands on the store contract (internal/store) and the etcd client: it must not reach the control plane, the signers, the proxy, the data plane or Kubernetes mode",
	},
	{
		from:   []string{"internal/identity/...", "internal/cowmap/..."},
		banned: []string{module + "/..."},
		why:    "identity (which every role imports) and cowmap stand on the standard library and go-spiffe alone",
	},
	{
		from:   []string{"internal/egress/..."},
		banned: []string{"internal/dataplane/...", "internal/proxy/...", "internal/controlplane/...", "internal/store/...", "internal/meshca/...", "internal/jointoken/...", "internal/kube/...", "k8s.io/...", "internal/identity/..."},
		why:    "egress selection and matching is shared by the proxy, the snapshot builder and the CLI: it stands on internal/resource and internal/policy alone",
	},
	{
		from:   []string{"internal/policy/..."},
		banned: []string{"internal/identity/..."},
		why:    "the policy engine depends only on internal/resource",
	},
	{
		from:   []string{"internal/policy/analysis/..."},
		banned: []string{"internal/adminapi/...", "internal/controlplane/...", "internal/store/...", "go.etcd.io/bbolt/...", "internal/meshca/...", "internal/jointoken/..."},
		why:    "policy analysis decides from the mesh state it is given: it must not fetch it (the admin API client) or reach the control plane, the store or the signers",
	},
	{
		from:   []string{"internal/dataplane/...", "internal/meshconfig/...", "internal/meshdns/...", "internal/controlclient/..."},
		banned: []string{"internal/proxy/..."},
		why:    "the proxy's parts below the role (the data plane, its compiled config, mesh DNS, the control-plane client) must not reach back into it",
	},
	{
		from:   []string{"internal/dataplane/h2relay/..."},
		banned: []string{"internal/dataplane/admission/...", "internal/dataplane/metrics/...", "internal/meshconfig/...", "internal/policy/..."},
		why:    "the HTTP/2 relay is protocol machinery: routing, admission, metrics and config reach it only through its Handler",
	},
	{
		from:   []string{"internal/controlplane/snapshot/..."},
		banned: []string{"internal/store/...", "go.etcd.io/bbolt/...", "internal/meshca/...", "internal/jointoken/...", "internal/proxy/...", "internal/dataplane/..."},
		why:    "the snapshot builder is pure: its input is given, it does no I/O and holds no state",
	},
	{
		from:   []string{"internal/dataplane/admission/...", "internal/dataplane/metrics/...", "internal/dataplane/relay/...", "internal/dataplane/connset/...", "internal/dataplane/mtls/...", "internal/dataplane/upstream/...", "internal/dataplane/capture/...", "internal/dataplane/limits/...", "internal/dataplane/h2relay/..."},
		banned: []string{"internal/dataplane", "internal/controlclient/...", "internal/meshdns/..."},
		why:    "the data path's parts (admission chain, metrics, relays, connection sets, mTLS, upstream pools, capture, limits, the HTTP/2 relay) never import its transports (internal/dataplane), the control client or mesh DNS",
	},
	{
		from: []string{"internal/controlplane/registry/..."},
		banned: []string{
			"internal/controlplane", "internal/meshca/...", "internal/jointoken/...",
			"internal/store/bolt/...", "go.etcd.io/bbolt/...", "internal/store/etcd/...", "go.etcd.io/etcd/...", "internal/proxy/...", "internal/dataplane/...",
		},
		why: "the proxy registry knows a config stream only as a handle: it must not reach the control plane's server, the signers, a store backend or the data plane",
	},
	{
		from: []string{"internal/controlplane/vips/..."},
		banned: []string{
			"internal/controlplane", "internal/controlplane/registry/...", "internal/meshca/...", "internal/jointoken/...",
			"internal/store/bolt/...", "go.etcd.io/bbolt/...", "internal/store/etcd/...", "go.etcd.io/etcd/...", "internal/proxy/...", "internal/dataplane/...",
		},
		why: "the VIP allocator works from service keys and a store.Store: it must not reach the control plane's server, the registry, the signers, a store backend or the data plane",
	},
	{
		from: []string{"internal/controlplane/resstore/..."},
		banned: []string{
			"internal/controlplane", "internal/controlplane/registry/...", "internal/controlplane/vips/...", "internal/controlplane/tokens/...",
			"internal/meshca/...", "internal/jointoken/...", "internal/store/bolt/...", "go.etcd.io/bbolt/...", "internal/store/etcd/...", "go.etcd.io/etcd/...", "internal/proxy/...", "internal/dataplane/...",
		},
		why: "the resource store works from a store.Store or an external source: it must not reach the control plane's server, the registry, the VIP allocator, the join tokens, the signers, a store backend or the data plane",
	},
	{
		from: []string{"internal/controlplane/tokens/..."},
		banned: []string{
			"internal/controlplane", "internal/controlplane/registry/...", "internal/controlplane/vips/...", "internal/controlplane/resstore/...",
			"internal/meshca/...", "internal/store/bolt/...", "go.etcd.io/bbolt/...", "internal/store/etcd/...", "go.etcd.io/etcd/...", "internal/proxy/...", "internal/dataplane/...",
		},
		why: "the join-token service works from the token authority and its records: it must not reach the control plane's server, the registry, the VIP allocator, the resource store, the CA signer, a store backend or the data plane",
	},
	{
		from: []string{"internal/controlplane/admintokens/..."},
		banned: []string{
			"internal/controlplane", "internal/controlplane/registry/...", "internal/controlplane/vips/...", "internal/controlplane/resstore/...", "internal/controlplane/tokens/...",
			"internal/meshca/...", "internal/jointoken/...", "internal/store/bolt/...", "go.etcd.io/bbolt/...", "internal/store/etcd/...", "go.etcd.io/etcd/...", "internal/proxy/...", "internal/dataplane/...",
			"internal/kube/...", "k8s.io/...",
		},
		why: "the admin-token service works from its Records (a store.Store's by default): it must not reach the control plane's server, the registry, the VIP allocator, the resources, the join tokens, the signers, a store backend, Kubernetes or the data plane",
	},
	{
		from: []string{"internal/console/..."},
		banned: []string{
			"internal/controlplane/...", "internal/store/...", "go.etcd.io/bbolt/...", "go.etcd.io/etcd/...", "internal/meshca/...", "internal/jointoken/...",
			"internal/proxy/...", "internal/dataplane/...", "internal/kube/...", "k8s.io/...",
		},
		why: "the web console reaches the mesh only through the admin API's handlers it is given and the policy commands' code: it must not link the control plane, the store, the signers, the proxy or Kubernetes mode",
	},
	{
		from:   []string{"internal/adminauth/..."},
		banned: []string{"internal/controlplane/...", "internal/store/...", "go.etcd.io/bbolt/...", "internal/meshca/...", "internal/jointoken/...", "internal/proxy/...", "internal/dataplane/...", "internal/adminapi/..."},
		why:    "the permission check decides from the principal and the action it is given, for the admin API and any other front end: it must not link the control plane, the store, the signers, the proxy or the admin API's wire types",
	},
	{
		from:   []string{"internal/meshca/..."},
		banned: []string{"internal/controlplane/...", "internal/store/...", "go.etcd.io/bbolt/...", "internal/proxy/...", "internal/dataplane/..."},
		why:    "the CA, signing and rotation are given what they need (a data dir, the proxies' certificate reports): they must not reach the control plane, its registry, the store or the data plane",
	},
	{
		from:   []string{"internal/meshhealth/..."},
		banned: []string{"internal/controlplane/...", "internal/store/...", "go.etcd.io/bbolt/...", "internal/meshca/...", "internal/jointoken/...", "internal/proxy/...", "internal/dataplane/..."},
		why:    "trellis check's findings judge what a control plane's admin API answers: they must not link the control plane, the store, the signers or the proxy",
	},
	{
		from:   []string{"internal/adminview/..."},
		banned: []string{"internal/controlplane/...", "internal/store/...", "go.etcd.io/bbolt/...", "internal/meshca/...", "internal/jointoken/...", "internal/proxy/...", "internal/dataplane/..."},
		why:    "the admin API's views draw its answers: they must not link the control plane, the store, the signers or the proxy",
	},
	{
		from:   []string{"internal/kube/crd/...", "internal/kube/webhook/...", "internal/kube/inject/..."},
		banned: []string{"internal/controlplane/...", "internal/store/...", "internal/proxy/...", "internal/dataplane/...", "k8s.io/client-go/..."},
		why:    "the CRDs and the webhooks work from internal/resource alone: no control plane, store, proxy or API client",
	},
	{
		from:   []string{"internal/kube/satoken/...", "internal/kube/workloads/...", "internal/kube/resources/...", "internal/kube/leader/...", "internal/kube/casecret/...", "internal/kube/cabundle/...", "internal/kube/install/...", "internal/kube/kubecheck/...", "internal/kube/tokenrecords/..."},
		banned: []string{"internal/controlplane", "internal/controlplane/registry/...", "internal/controlplane/vips/...", "internal/store/...", "internal/proxy/...", "internal/dataplane/...", "internal/meshca/..."},
		why:    "the token reviewer and the workload source read the API server alone (the workload source hands the pure snapshot builder its input): no control plane server, registry, store, signer or data plane",
	},
	{
		from: []string{"internal/kube/admintokenrecords/..."},
		banned: []string{
			"internal/controlplane", "internal/controlplane/registry/...", "internal/controlplane/vips/...", "internal/controlplane/resstore/...", "internal/controlplane/tokens/...",
			"internal/store/bolt/...", "go.etcd.io/bbolt/...", "internal/store/etcd/...", "go.etcd.io/etcd/...", "internal/proxy/...", "internal/dataplane/...", "internal/meshca/...", "internal/jointoken/...",
		},
		why: "the admin tokens' Secrets are read from the API server alone, with the record type of internal/controlplane/admintokens (whose store contract comes along): no control plane server, registry, resources, join tokens, store backend, signer or data plane",
	},
	{
		from:   []string{"internal/extauthz/..."},
		banned: []string{"internal/dataplane/...", "internal/proxy/...", "internal/controlplane/...", "internal/store/..."},
		why:    "the ext_authz client speaks Envoy's API for the admission chain: it must not reach the data path, the proxy, the control plane or the store",
	},
	{
		from:   []string{"internal/tracing/..."},
		banned: []string{"internal/dataplane/...", "internal/proxy/...", "internal/controlplane/...", "internal/store/...", "k8s.io/..."},
		why:    "tracing reads trace headers and exports spans for the data path: it must not reach the data path, the proxy, the control plane, the store or the Kubernetes libraries",
	},
	{
		from:   []string{"internal/collectord/..."},
		banned: []string{"internal/proxy/...", "internal/meshca/...", "internal/jointoken/..."},
		why:    "the collector shares the workload certificate manager (internal/workloadcert), not the proxy, and never signs",
	},
}

// roleRules: every role against every other.
func roleRules() []rule {
	var out []rule
	for _, r := range roles {
		var others []string
		for _, o := range roles {
			if o != r {
				others = append(others, o)
			}
		}
		out = append(out, rule{from: []string{r}, banned: others, why: "a role must not import another role"})
	}
	return out
}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Standard   bool
}

func TestDependencyRules(t *testing.T) {
	pkgs := list(t)
	paths := slices.Sorted(maps.Keys(pkgs))
	for _, r := range append(rules, roleRules()...) {
		for _, from := range r.from {
			if strings.HasPrefix(from, "internal/gateway") {
				continue
			}
			if !slices.ContainsFunc(paths, func(p string) bool { return match(from, p) }) {
				t.Errorf("rule %q: no package matches %s; was it renamed?", r.why, from)
			}
		}
		for _, p := range paths {
			if !matchAny(r.from, p) {
				continue
			}
			for _, d := range pkgs[p].Deps {
				if matchAny(r.banned, d) && !matchAny(r.from, d) {
					t.Errorf("%s depends on %s: %s\n\timport chain: %s", short(p), short(d), r.why, strings.Join(chain(pkgs, p, d), " -> "))
				}
			}
		}
	}
}

// list runs go list over the module and returns every package of the
// build graph (the module's and their dependencies) by import path. Test
// files are not included: the rules are about what the binary links.
func list(t *testing.T) map[string]*pkg {
	t.Helper()
	cmd := exec.Command(goTool(), "list", "-deps", "-json=ImportPath,Imports,Deps,Standard", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	pkgs := map[string]*pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if !p.Standard {
			pkgs[p.ImportPath] = &p
		}
	}
	return pkgs
}

// goTool is the go command of the toolchain running the test.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// match reports whether import path p matches pattern.
func match(pattern, p string) bool {
	if strings.HasPrefix(pattern, "internal/") {
		pattern = module + "/" + pattern
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return p == base || strings.HasPrefix(p, base+"/")
	}
	return p == pattern
}

func matchAny(patterns []string, p string) bool {
	return slices.ContainsFunc(patterns, func(pat string) bool { return match(pat, p) })
}

// chain is the shortest import path from a to b.
func chain(pkgs map[string]*pkg, a, b string) []string {
	prev := map[string]string{a: ""}
	queue := []string{a}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == b {
			var out []string
			for ; p != ""; p = prev[p] {
				out = append(out, short(p))
			}
			slices.Reverse(out)
			return out
		}
		if pkgs[p] == nil {
			continue
		}
		for _, i := range pkgs[p].Imports {
			if _, seen := prev[i]; !seen {
				prev[i] = p
				queue = append(queue, i)
			}
		}
	}
	return []string{short(a), "...", short(b)}
}

func short(p string) string { return strings.TrimPrefix(p, module+"/") }

// TestSidecarBuildLeavesKubernetesOut: the sidecar build of the binary
// (-tags trellis_nokube, make build-proxy) links no Kubernetes library and
// no package of Kubernetes mode; client-go and the API types would add
// 5-15 MB to every proxy's resident memory. Nor does it link the etcd
// store backend and its client (trellis control --store etcd://).
func TestSidecarBuildLeavesKubernetesOut(t *testing.T) {
	cmd := exec.Command(goTool(), "list", "-deps", "-tags", "trellis_nokube", module+"/cmd/trellis")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	for p := range strings.Lines(string(out)) {
		p = strings.TrimSpace(p)
		if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "sigs.k8s.io/gateway-api/") || match("internal/kube/...", p) {
			t.Errorf("the sidecar build links %s: keep Kubernetes mode behind the trellis_nokube build tag (internal/cli/kube.go)", p)
		}
		if strings.HasPrefix(p, "go.etcd.io/etcd/") || match("internal/store/etcd/...", p) {
			t.Errorf("the sidecar build links %s: keep the etcd store backend behind the trellis_nokube build tag (internal/cli/store_etcd.go)", p)
		}
	}
}
