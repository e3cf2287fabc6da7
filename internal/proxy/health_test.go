package proxy_test

import (
	"net/http"
	"testing"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// TestHealthAddr: --health-addr serves /ready and /live for a kubelet's
// probes, and nothing of the admin endpoint (/config, /metrics); without
// it there is no such listener.
func TestHealthAddr(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	p := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: startApp(t, http.NotFoundHandler()), HealthAddr: "127.0.0.1:0"})
	get := func(path string) int {
		t.Helper()
		resp, err := http.Get("http://" + p.HealthAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for path, want := range map[string]int{"/ready": 200, "/live": 200, "/config": 404, "/metrics": 404} {
		if got := get(path); got != want {
			t.Errorf("health %s: %d, want %d", path, got, want)
		}
	}
	off := meshtest.StartProxy(t, cp, proxy.Config{Service: "orders", AppAddr: startApp(t, http.NotFoundHandler())})
	if off.HealthAddr() != "" {
		t.Errorf("health listener %s without --health-addr", off.HealthAddr())
	}
}
