package dataplane_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/extauthztest"
)

// External authorization (a CUSTOM policy) on the HTTP/2 relay, the twin
// of internal/cli's TestExtAuthzThroughProxies: against a real ext_authz
// server, 200 requests allowed with the provider's header, 200 denied
// with its status, body and header, then the server stopped and 200
// failing closed with 403 saying it is unavailable.
func TestExtAuthzOverTheHTTP2Relay(t *testing.T) {
	srv := extauthztest.Start(t, &extauthztest.Server{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user=%s secret=%s", r.Header.Get("X-Ext-User"), r.Header.Get("X-Ext-Secret"))
	})
	authz := &admission.PolicyAuthorizer{Workload: policy.Workload{Namespace: "shop", Service: "catalog"}, Log: testutil.Logger(t)}
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolHTTP2, appH2C: true, app: app, authorizer: authz})
	objs, err := resource.Decode([]byte(`apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec: {selector: {service: catalog}, action: CUSTOM, provider: {name: ext}, rules: [{}]}
`), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.Compile(objs, policy.Options{DefaultAllow: true})
	if err != nil {
		t.Fatal(err)
	}
	snap := *m.snap.get()
	snap.Policies, snap.Engine = objs, e
	snap.ExtAuthz = map[string]*meshconfig.ExtAuthzProvider{"ext": {Name: "ext", Address: srv.Addr(), Timeout: 2 * time.Second,
		UpstreamHeaders: []string{"x-ext-user"}, DownstreamHeaders: []string{"x-ext-reason"}}}
	m.snap.set(&snap)

	c := testutil.H2CClient(t)
	send := func(path string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, m.url(path), nil)
		return testutil.Do(t, c, req)
	}
	for i := range 200 {
		resp, body := send(fmt.Sprintf("/items/%d", i))
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || !strings.HasPrefix(body, "user=spiffe://") || !strings.HasSuffix(body, " secret=") {
			t.Fatalf("request %d, allowed: %s %d %q", i, resp.Proto, resp.StatusCode, body)
		}
		resp, body = send(fmt.Sprintf("/deny/%d", i))
		if resp.StatusCode != http.StatusUnauthorized || body != extauthztest.DenyBody || resp.Header.Get("X-Ext-Reason") != "path" ||
			resp.Header.Get("X-Ext-Secret") != "" || resp.Header.Get("X-Trellis-Denied-By") != "shop/ext" {
			t.Fatalf("request %d, denied: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
	}
	srv.Stop()
	for i := range 200 {
		resp, body := send(fmt.Sprintf("/items/%d", i))
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "external authorization service ext unavailable") {
			t.Fatalf("request %d, provider down: %d %q", i, resp.StatusCode, body)
		}
	}
}
