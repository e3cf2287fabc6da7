package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/netcap"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// requireMark skips a test when this process may not set SO_MARK, or
// fails it under TRELLIS_REQUIRE_ALL.
func requireMark(t *testing.T) {
	t.Helper()
	if err := proxy.CheckMark(); err != nil {
		if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
			t.Fatalf("transparent mode: %v (TRELLIS_REQUIRE_ALL is set)", err)
		}
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("transparent mode needs CAP_NET_ADMIN to set SO_MARK: %v", err)
		}
		t.Skipf("transparent mode unavailable: %v", err)
	}
}

// startTransparentProxy starts a --transparent proxy for cfg.Service in
// namespace shop, its capture listener on loopback and fed by r.
func startTransparentProxy(t *testing.T, cp *meshtest.ControlPlane, cfg proxy.Config, r *testutil.Redirector) *proxy.Proxy {
	t.Helper()
	cfg.Transparent = true
	return meshtest.StartProxy(t, cp, cfg, meshtest.BeforeStart(func(p *proxy.Proxy) {
		if p.HTTPProxyAddr() != "" {
			t.Errorf("transparent proxy serves the HTTP proxy on %s, want it off (its default port is the capture port)", p.HTTPProxyAddr())
		}
		p.SetOrigDst(r.OrigDst)
	}))
}

// wantMarked checks with ss(8) that every established connection to dst
// carries the proxy's mark, and that there is one.
func wantMarked(t *testing.T, dst string) {
	t.Helper()
	if _, err := exec.LookPath("ss"); err != nil {
		if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
			t.Fatalf("ss (iproute2) is needed to check socket marks: %v", err)
		}
		t.Logf("no ss (iproute2): not checking socket marks")
		return
	}
	out, err := exec.Command("ss", "-tneH", "state", "established").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	n := 0
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != dst {
			continue
		}
		n++
		if !strings.Contains(line, fmt.Sprintf("fwmark:%#x", netcap.ProxyMark)) {
			t.Errorf("connection to %s without the proxy's mark: %s", dst, line)
		}
	}
	if n == 0 {
		t.Errorf("no established connection to %s found by ss", dst)
	}
}

// TestTransparentProxy runs real proxies against a real control plane:
// the transparent one's sockets are all marked (control plane, collector,
// peers, passthrough), and the Mesh's outbound mode reaches it.
func TestTransparentProxy(t *testing.T) {
	requireMark(t)
	r := testutil.NewRedirector(t)
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	app := startApp(t, testutil.EchoApp())
	catalog := startTransparentProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app}, r)
	frontend := startTransparentProxy(t, cp, proxy.Config{Service: "frontend"}, r)
	captured := func(result string) float64 {
		return testutil.Metric(t, frontend.MetricsForTest().Registry(), "trellis_outbound_captured_total", map[string]string{"result": result})
	}

	// Passthrough (the default) to a server outside the mesh.
	ext, accepted := testutil.CountingEcho(t)
	msg := []byte("hello, outside")
	if got := testutil.EchoThrough(t, r.MustDial(t, frontend.CaptureAddr(), ext), msg); !bytes.Equal(got, msg) {
		t.Fatalf("passthrough echoed %q, want %q", got, msg)
	}
	if got := captured("passthrough"); got != 1 {
		t.Errorf("passthrough counted %v, want 1", got)
	}

	// A direct connection to the capture port is refused, not looped.
	testutil.WantRefused(t, func() (net.Conn, error) { return net.DialTimeout("tcp", frontend.CaptureAddr(), 5*time.Second) })

	// A mesh service by its virtual IP, when the control plane assigns
	// them.
	var vip netip.Addr
	testutil.Eventually(t, "catalog in frontend's config", func() bool {
		s := frontend.CurrentSnapshot()
		if s == nil || s.Services[meshconfig.ServiceKey("catalog", "shop")] == nil || len(s.Services[meshconfig.ServiceKey("catalog", "shop")].Endpoints) == 0 {
			return false
		}
		vip = s.VIPs[meshconfig.ServiceKey("catalog", "shop")]
		return true
	})
	if vip.IsValid() {
		resp, _ := testutil.Get(t, r.Client(t, frontend.CaptureAddr(), netip.AddrPortFrom(vip, 8080), false), "http://catalog.shop.mesh:8080/items")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Path") != "/items" {
			t.Fatalf("GET via VIP %s: got %d path %q, want 200 /items", vip, resp.StatusCode, resp.Header.Get("X-Path"))
		}
		testutil.WantXFCC(t, resp, "spiffe://trellis.local/ns/shop/sa/frontend")
	} else {
		t.Log("the control plane assigned catalog no virtual IP: routing by VIP is covered by the in-process tests only")
	}

	// The proxies' own connections carry the mark: to the control plane
	// (config stream, telemetry), to the peer proxy, to the app.
	for _, dst := range []string{cp.GRPCAddr(), catalog.InboundAddr(), app} {
		wantMarked(t, dst)
	}

	// Block: the Mesh's outbound mode reaches the proxy.
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}, outbound: {mode: block}}\n")
	testutil.Eventually(t, "outbound mode block", func() bool { return frontend.CurrentSnapshot().OutboundMode == meshconfig.OutboundBlock })
	testutil.WantRefused(t, func() (net.Conn, error) { return r.Dial(context.Background(), frontend.CaptureAddr(), ext) })
	testutil.Eventually(t, "blocked counted", func() bool { return captured("blocked") == 1 })
	if got := accepted.Load(); got != 1 {
		t.Errorf("external server saw %d connections, want 1 (the passthrough one)", got)
	}
}

func TestTransparentConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  proxy.Config
		want string
	}{
		{"negative detect timeout", proxy.Config{ProtocolDetectTimeout: -time.Second}, "--protocol-detect-timeout -1s: want a positive duration"},
		{"capture address", proxy.Config{OutboundCaptureAddr: "15001"}, `--outbound-capture-addr "15001": want HOST:PORT`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Service, tc.cfg.CAFile, tc.cfg.Token, tc.cfg.Transparent = "web", "ca.crt", "token", true
			if _, err := proxy.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
