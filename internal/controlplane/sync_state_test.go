package controlplane_test

import (
	"bufio"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// TestConfigStreamStale: a proxy that never answers is SYNCING until the
// ack timeout passes on the control plane's clock, then STALE.
func TestConfigStreamStale(t *testing.T) {
	const ackTimeout = time.Second
	clk := clock.NewFake(time.Now())
	cp := cptest.StartControlPlane(t, controlplane.Config{Clock: clk, AckTimeout: ackTimeout})
	p, snap := connect(t, cp, workloadCert(t, cp, "shop", "frontend"), &pb.Hello{Instance: "f-1", Service: "frontend", Namespace: "shop"})
	sent := clk.Now()

	info, _ := proxyInfo(t, cp, "f-1")
	if info.State != adminapi.ProxySyncing || info.Since == nil || !info.Since.Equal(sent) {
		t.Errorf("unanswered within the ack timeout: %s since %v, want SYNCING since %s", info.State, info.Since, sent)
	}
	clk.Advance(ackTimeout - time.Millisecond)
	if info, _ := proxyInfo(t, cp, "f-1"); info.State != adminapi.ProxySyncing {
		t.Errorf("just before the ack timeout: %s, want SYNCING", info.State)
	}
	clk.Advance(time.Millisecond)
	info, _ = proxyInfo(t, cp, "f-1")
	if info.State != adminapi.ProxyStale || info.Since == nil || !info.Since.Equal(sent) || info.Desired.Version != snap.GetVersion() || info.Acked != nil {
		t.Errorf("unanswered for the ack timeout: %+v, want STALE since %s, desired %s, nothing acked", info, sent, snap.GetVersion())
	}
	for _, want := range []string{`trellis_control_proxies{state="STALE"} 1`, `trellis_control_proxies{state="SYNCED"} 0`} {
		if got := controlMetrics(t, cp); !strings.Contains(got, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	detail, err := cp.Client(t).GetProxy(t.Context(), "f-1")
	if err != nil {
		t.Fatal(err)
	}
	if detail.State != adminapi.ProxyStale || len(detail.DesiredConfig) == 0 || detail.AckedConfig != nil || detail.Note == "" || detail.Diff != "" {
		t.Errorf("detail of a proxy that acknowledged nothing: %+v, want its desired config and a note", detail)
	}

	// A late answer settles it.
	p.ack(t, snap)
	eventually(t, "state after a late ack", func() (bool, string) {
		info, _ := proxyInfo(t, cp, "f-1")
		return info.State == adminapi.ProxySynced, info.State
	})
	if got := controlMetrics(t, cp); !strings.Contains(got, `trellis_control_proxies{state="SYNCED"} 1`+"\n") {
		t.Errorf("/metrics does not count the proxy SYNCED")
	}
}

func TestProxyDetailUnknown(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	_, err := cp.Client(t).GetProxy(t.Context(), "no/such instance")
	var se *adminapi.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusNotFound || !strings.Contains(se.Body.Error, `no proxy instance "no/such instance" is registered`) {
		t.Errorf("got %v, want 404 naming the instance", err)
	}
}

// TestConvergenceMetric: one policy change that alters two real proxies'
// snapshots gives one convergence sample once both have ACKed.
func TestConvergenceMetric(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	front := startRealProxy(t, cp, "frontend")
	cat := startRealProxy(t, cp, "catalog")
	// Settled: both SYNCED (snapshots are scoped: catalog joining changes
	// nothing frontend may call, so frontend stays at its first version).
	settled := func(minFrontVersion int) func() (bool, string) {
		return func() (bool, string) {
			items, err := cp.Client(t).ListProxies(t.Context(), "shop")
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range items {
				if p.State != adminapi.ProxySynced {
					return false, p.Service + " " + p.State
				}
				if v, _ := strconv.Atoi(p.Desired.Version); p.Service == "frontend" && v < minFrontVersion {
					return false, "frontend at version " + p.Desired.Version
				}
			}
			return len(items) == 2, strconv.Itoa(len(items)) + " proxies"
		}
	}
	eventually(t, "both proxies synced", settled(1))
	samples := controlMetric(t, cp, "trellis_control_config_convergence_seconds_count")
	abandoned := controlMetric(t, cp, "trellis_control_config_convergence_abandoned_total")
	frontVersion := front.ConfigVersion()

	// A mesh-wide policy (trellis-system, empty selector) selects both.
	if _, err := cp.Client(t).Apply(t.Context(), decode(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: trellis-system}
spec:
  action: DENY
  rules:
  - to: [{paths: ["/debug/*"]}]
`), false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "one more convergence sample", func() (bool, string) {
		n := controlMetric(t, cp, "trellis_control_config_convergence_seconds_count")
		return n == samples+1, strconv.FormatFloat(n-samples, 'f', -1, 64) + " new samples"
	})
	if front.ConfigVersion() == frontVersion || cat.ConfigVersion() == "" {
		t.Errorf("frontend still runs version %s", frontVersion)
	}
	if got := controlMetric(t, cp, "trellis_control_config_convergence_abandoned_total"); got != abandoned {
		t.Errorf("abandoned rounds %v, want %v", got, abandoned)
	}
	eventually(t, "both proxies synced after the change", settled(2))
}

// startRealProxy runs a proxy for service.shop against cp until the test
// ends and waits for its first config.
func startRealProxy(t *testing.T, cp *cptest.ControlPlane, service string) *realProxy {
	t.Helper()
	p := meshtest.StartProxy(t, cp, proxy.Config{Service: service})
	return &realProxy{p: p, admin: p.AdminAddr(), t: t}
}

type realProxy struct {
	p     *proxy.Proxy
	admin string
	t     *testing.T
}

// ConfigVersion is the version the proxy runs, from its metrics.
func (r *realProxy) ConfigVersion() string {
	r.t.Helper()
	return strconv.FormatFloat(scrape(r.t, "http://"+r.admin+"/metrics", "trellis_config_version"), 'f', -1, 64)
}

// controlMetrics is the control plane's /metrics text.
func controlMetrics(t *testing.T, cp *cptest.ControlPlane) string {
	t.Helper()
	resp, err := http.Get(cp.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return b.String()
}

// controlMetric is the value of one series (name with labels, as printed)
// on the control plane's /metrics; 0 when absent.
func controlMetric(t *testing.T, cp *cptest.ControlPlane, series string) float64 {
	t.Helper()
	return scrape(t, cp.APIURL()+"/metrics", series)
}

func scrape(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", series, v, err)
			}
			return f
		}
	}
	return 0
}
