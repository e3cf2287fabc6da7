package admission_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/extauthz"
	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/extauthztest"
)

const policies = `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: reads, namespace: shop}
spec: {selector: {service: catalog}, rules: [{to: [{methods: [GET]}]}]}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec: {selector: {service: catalog}, action: CUSTOM, provider: {name: ext}, rules: [{to: [{paths: ["/ext*", "/deny*", "/slow*"]}]}]}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ghost, namespace: shop}
spec: {selector: {service: catalog}, action: CUSTOM, provider: {name: ghost}, rules: [{to: [{paths: ["/ghost"]}]}]}
`

var caller = spiffeid.RequireFromString("spiffe://trellis.local/ns/shop/sa/frontend")

func snapshot(t *testing.T, prov *meshconfig.ExtAuthzProvider) *meshconfig.Snapshot {
	t.Helper()
	objs, err := resource.Decode([]byte(policies), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.Compile(objs, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &meshconfig.Snapshot{MTLSMode: "STRICT", AuthzDefault: "deny", Policies: objs, Engine: e,
		ExtAuthz: map[string]*meshconfig.ExtAuthzProvider{"ext": prov}}
}

func chain(t *testing.T, m *metrics.Metrics, pool *extauthz.Pool) *admission.Chain {
	return &admission.Chain{
		Authorizer: &admission.PolicyAuthorizer{Workload: policy.Workload{Namespace: "shop", Service: "catalog"}, Log: testutil.Logger(t)},
		Protocol:   meshconfig.ProtocolHTTP, Recorder: m, ExtAuthz: pool, Self: "spiffe://trellis.local/ns/shop/sa/catalog",
		Log: testutil.Logger(t),
	}
}

func get(path string) *h1.Head {
	return &h1.Head{Method: "GET", Target: path, Host: "catalog.shop", Minor: 1, Fields: []h1.Field{{Name: "Accept", Value: "*/*"}}}
}

// The custom step, on the fast path's view, against a real ext_authz
// server: its OK adds the listed header, its denial answers with its
// status, body and listed header, and a provider that is down, too slow
// or unknown fails closed with 403 saying so.
func TestCustomStep(t *testing.T) {
	srv := extauthztest.Start(t, &extauthztest.Server{})
	pool := extauthz.NewPool()
	defer pool.Close()
	prov := &meshconfig.ExtAuthzProvider{Name: "ext", Address: srv.Addr(), Timeout: 100 * time.Millisecond,
		UpstreamHeaders: []string{"x-ext-user"}, DownstreamHeaders: []string{"x-ext-reason"}}
	snap := snapshot(t, prov)
	m := metrics.New()
	c := chain(t, m, pool)
	var denials []string
	c.Authorizer.(*admission.PolicyAuthorizer).Events = func(e *pb.Event) {
		denials = append(denials, e.GetKind()+" "+e.GetPolicy()+" "+e.GetPath())
	}
	peer := admission.Peer{ID: caller, Principal: caller.String(), MTLS: true}
	admit := func(path string) (*admission.Verdict, *h1.Head) {
		req := get(path)
		var v admission.Verdict
		c.Admit(&admission.H1View{Req: req}, peer, snap, &v)
		return &v, req
	}

	v, req := admit("/ext/items")
	if v.Refused != nil {
		t.Fatalf("allowed: refused %+v", v.Refused)
	}
	if got := (&admission.H1View{Req: req}).Get("X-Ext-User"); got != caller.String() {
		t.Errorf("upstream x-ext-user: got %q, want %q", got, caller)
	}
	if got := (&admission.H1View{Req: req}).Get("X-Ext-Secret"); got != "" {
		t.Errorf("upstream x-ext-secret: got %q, want none (not listed)", got)
	}
	if v, _ := admit("/other"); v.Refused != nil {
		t.Errorf("no CUSTOM match: refused %+v", v.Refused)
	}
	before := srv.Checks()
	if v, _ := admit("/ext/items"); v.Refused != nil || srv.Checks() != before+1 {
		t.Errorf("second check: refused %v, checks %d, want %d (never cached)", v.Refused, srv.Checks(), before+1)
	}

	v, _ = admit("/deny/x")
	if rf := v.Refused; rf == nil || rf.Code != http.StatusUnauthorized || rf.Msg != extauthztest.DenyBody || rf.DeniedBy != "shop/ext" ||
		len(rf.Header) != 1 || rf.Header[0] != (admission.Field{Name: "x-ext-reason", Value: "path"}) {
		t.Errorf("denied: got %+v", v.Refused)
	}
	if v.Decision.Allow || v.Decision.Policy != "shop/ext" {
		t.Errorf("denied decision: got %+v", v.Decision)
	}
	if want := []string{"authz.deny shop/ext /deny/x"}; len(denials) != 1 || denials[0] != want[0] {
		t.Errorf("audit events: got %q, want %q", denials, want)
	}

	for _, tc := range []struct{ name, path, reason string }{
		{"timeout", "/slow", "timed out"},
		{"unknown provider", "/ghost", "ghost unavailable"},
	} {
		v, _ := admit(tc.path)
		if rf := v.Refused; rf == nil || rf.Code != http.StatusForbidden || !strings.Contains(rf.Msg, tc.reason) {
			t.Errorf("%s: got %+v, want 403 saying %q", tc.name, v.Refused, tc.reason)
		}
	}

	srv.Stop()
	for range 50 {
		v, _ := admit("/ext/items")
		if rf := v.Refused; rf == nil || rf.Code != http.StatusForbidden || !strings.Contains(rf.Msg, "external authorization service ext unavailable") {
			t.Fatalf("server down: got %+v, want 403 saying the service is unavailable", v.Refused)
		}
	}
	prov.FailOpen = true
	if v, _ := admit("/ext/items"); v.Refused != nil {
		t.Errorf("server down, failOpen: refused %+v", v.Refused)
	}
	for reason, want := range map[string]float64{admission.ReasonExtAuthzDenied: 1, admission.ReasonExtAuthzError: 52} {
		if got := testutil.Metric(t, m.Registry(), "trellis_inbound_refused_requests_total", map[string]string{"reason": reason}); got != want {
			t.Errorf("refused{reason=%s}: got %v, want %v", reason, got, want)
		}
	}
}

// Requests that no CUSTOM policy matches cost the chain no allocation,
// even when CUSTOM policies select the workload.
func TestAdmitWithoutCustomAllocatesNothing(t *testing.T) {
	pool := extauthz.NewPool()
	defer pool.Close()
	snap := snapshot(t, nil)
	c := chain(t, nil, pool)
	c.Log = nil
	peer := admission.Peer{ID: caller, Principal: caller.String(), MTLS: true}
	req := get("/items")
	view := &admission.H1View{Req: req}
	v := new(admission.Verdict)
	n := testing.AllocsPerRun(200, func() {
		req.Fields = req.Fields[:1]
		c.Admit(view, peer, snap, v)
	})
	if v.Refused != nil {
		t.Fatalf("refused %+v", v.Refused)
	}
	if n != 0 {
		t.Errorf("allocs per request: got %v, want 0", n)
	}
}
