package proxy_test

import (
	"net/http"
	"testing"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// TestCallerAuthorizerUntouched: a PolicyAuthorizer the caller passes is
// used as given; the proxy writes nothing into it.
func TestCallerAuthorizerUntouched(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	app := startApp(t, http.NotFoundHandler())
	pa := &admission.PolicyAuthorizer{Workload: policy.Workload{Namespace: "shop", Service: "catalog"}, Log: testutil.Logger(t)}
	meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app, Authorizer: pa})
	if pa.Metrics != nil || pa.Events != nil {
		t.Errorf("caller's PolicyAuthorizer after New and Start: Metrics %v, Events set %v; want both left nil", pa.Metrics, pa.Events != nil)
	}
}
