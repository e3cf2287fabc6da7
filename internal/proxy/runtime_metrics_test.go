package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// TestRuntimeMetrics: the proxy's /metrics carries the standard Go
// runtime and process collectors, as the control plane's does.
func TestRuntimeMetrics(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	p := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: startApp(t, http.NotFoundHandler())})
	scrape := func(url string) string {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
		}
		return string(b)
	}
	targets := map[string]string{
		"proxy":         scrape("http://" + p.AdminAddr() + "/metrics"),
		"control plane": scrape(cp.APIURL() + "/metrics"),
	}
	for _, target := range []string{"proxy", "control plane"} {
		for _, name := range []string{
			"go_goroutines", "go_threads", "go_info", "go_memstats_heap_alloc_bytes", "go_gc_duration_seconds",
			"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
		} {
			if got := hasSample(targets[target], name); !got {
				t.Errorf("%s /metrics: got no sample of %s, want one", target, name)
			}
		}
	}
}

// hasSample reports whether a text exposition has a sample of name.
func hasSample(exposition, name string) bool {
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			return true
		}
	}
	return false
}
