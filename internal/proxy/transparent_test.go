package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
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

// The capture listener's tests run without iptables: a redirector stands
// in for the rules by telling the listener where each connection "was
// going" (see proxy.CaptureConfig.WithOrigDst). The real rules are tested
// in test/e2e.

// redirector hands every connection a loopback source address of its own
// (127.77.x.y) and remembers the destination the app meant for it; a
// connection from any other source reports its own local address, as
// SO_ORIGINAL_DST does for a connection that was not redirected.
type redirector struct {
	mu   sync.Mutex
	n    int
	dsts map[netip.Addr]netip.AddrPort
}

func newRedirector(t *testing.T) *redirector {
	if runtime.GOOS != "linux" {
		t.Skip("transparent mode is Linux only (SO_ORIGINAL_DST, SO_MARK)")
	}
	return &redirector{dsts: map[netip.Addr]netip.AddrPort{}}
}

func (r *redirector) origDst(c net.Conn) (netip.AddrPort, error) {
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	r.mu.Lock()
	dst, ok := r.dsts[src]
	r.mu.Unlock()
	if ok {
		return dst, nil
	}
	return c.LocalAddr().(*net.TCPAddr).AddrPort(), nil
}

// dial connects to the capture listener at capture as if the app had
// dialed dst and the rules had redirected it.
func (r *redirector) dial(ctx context.Context, capture string, dst netip.AddrPort) (net.Conn, error) {
	r.mu.Lock()
	r.n++
	src := netip.AddrFrom4([4]byte{127, 77, byte(r.n / 250), byte(1 + r.n%250)})
	r.dsts[src] = dst
	r.mu.Unlock()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 5 * time.Second}
	return d.DialContext(ctx, "tcp", capture)
}

func (r *redirector) mustDial(t *testing.T, capture string, dst netip.AddrPort) net.Conn {
	t.Helper()
	c, err := r.dial(context.Background(), capture, dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// client is an HTTP client whose every connection is captured on its
// way to dst; h2c speaks HTTP/2 with prior knowledge (as gRPC apps do).
func (r *redirector) client(t *testing.T, capture string, dst netip.AddrPort, h2c bool) *http.Client {
	var p http.Protocols
	p.SetHTTP1(!h2c)
	p.SetUnencryptedHTTP2(h2c)
	tr := &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return r.dial(ctx, capture, dst)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

var catalogVIP = netip.MustParseAddr("240.240.0.10")

// captureMesh is the data path mesh (catalog.shop behind a server proxy)
// with the client proxy serving a capture listener, catalog at
// catalogVIP and the given outbound mode.
type captureMesh struct {
	*mesh
	r       *redirector
	capture string
}

func newCaptureMesh(t *testing.T, o meshOptions, mode string, detect time.Duration) *captureMesh {
	t.Helper()
	r := newRedirector(t)
	m := newMesh(t, o)
	snap := *m.snap.get()
	snap.VIPs = map[string]netip.Addr{svcKey("catalog", "shop"): catalogVIP}
	snap.ServiceByVIP = map[netip.Addr]string{catalogVIP: svcKey("catalog", "shop")}
	snap.OutboundMode = mode
	m.snap.set(&snap)
	l := listen(t)
	cfg := proxy.CaptureConfig{DetectTimeout: detect}.WithOrigDst(r.origDst)
	serve(t, "capture", func() error { return m.out.ServeCapture(l, cfg) })
	t.Cleanup(func() { shutdown(t, m.out.Shutdown) })
	return &captureMesh{mesh: m, r: r, capture: l.Addr().String()}
}

func (m *captureMesh) captured(result string) float64 {
	return metric(m.t, m.clientMetrics, "trellis_outbound_captured_total", map[string]string{"result": result})
}

func (m *captureMesh) detectTimeouts() float64 {
	return metric(m.t, m.clientMetrics, "trellis_protocol_detect_timeouts_total", nil)
}

func (m *captureMesh) outboundTunnels() float64 {
	return metric(m.t, m.clientMetrics, "trellis_tcp_connections_total", map[string]string{"direction": "outbound"})
}

// wantXFCC checks that the app saw the caller's identity.
func wantXFCC(t *testing.T, resp *http.Response, caller string) {
	t.Helper()
	if got := strings.Join(resp.Header.Values("X-Got-Xfcc"), ","); !strings.Contains(got, "URI="+caller) {
		t.Errorf("X-Forwarded-Client-Cert at the app = %q, want URI=%s", got, caller)
	}
}

func TestCaptureHTTPToVirtualIP(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, "", 0)
	dst := netip.AddrPortFrom(catalogVIP, 8080)
	for _, h2c := range []bool{false, true} {
		resp, _ := get(t, m.r.client(t, m.capture, dst, h2c), "http://catalog.shop.mesh:8080/items?x=1")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Path") != "/items" || resp.Header.Get("X-Query") != "x=1" {
			t.Fatalf("h2c %v: got %d path %q query %q, want 200 /items x=1", h2c, resp.StatusCode, resp.Header.Get("X-Path"), resp.Header.Get("X-Query"))
		}
		if got, want := resp.Header.Get("X-Host"), "catalog.shop.mesh:8080"; got != want {
			t.Errorf("h2c %v: Host at the app = %q, want %q", h2c, got, want)
		}
		wantXFCC(t, resp, frontendID.String())
	}
	if got := m.captured("mesh"); got != 2 {
		t.Errorf("trellis_outbound_captured_total{result=mesh} = %v, want 2", got)
	}
	if got := m.detectTimeouts(); got != 0 {
		t.Errorf("trellis_protocol_detect_timeouts_total = %v, want 0", got)
	}
	if got := m.outboundTunnels(); got != 0 {
		t.Errorf("outbound tunnels = %v, want 0 (HTTP was detected)", got)
	}
}

func TestCaptureTCPToVirtualIP(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{protocol: meshconfig.ProtocolTCP, appAddr: startTCPEcho(t)}, "", 0)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<14)
	for _, port := range []uint16{5432, 3306} {
		c := m.r.mustDial(t, m.capture, netip.AddrPortFrom(catalogVIP, port))
		if got := echoThrough(t, c, msg); !bytes.Equal(got, msg) {
			t.Fatalf("port %d: echoed %d bytes, want the %d sent", port, len(got), len(msg))
		}
	}
	if got := m.outboundTunnels(); got != 2 {
		t.Errorf("outbound tunnels = %v, want 2", got)
	}
}

// rawGet sends an HTTP/1.1 request on c and reads the answer.
func rawGet(t *testing.T, c net.Conn, path string) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: catalog.shop.mesh\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	return resp
}

func TestCaptureServerFirstPortSkipsDetection(t *testing.T) {
	// Detection would wait 10s for the client, which says nothing: a
	// MySQL-style server speaks first.
	m := newCaptureMesh(t, meshOptions{}, "", 10*time.Second)
	c := m.r.mustDial(t, m.capture, netip.AddrPortFrom(catalogVIP, 3306))
	testutil.Eventually(t, "a tunnel opened at once", func() bool { return m.outboundTunnels() == 1 })
	if got := m.detectTimeouts(); got != 0 {
		t.Errorf("trellis_protocol_detect_timeouts_total = %v, want 0", got)
	}
	// catalog is an HTTP service: its proxy still parses the tunnel as
	// HTTP and says who called.
	resp := rawGet(t, c, "/late")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Path") != "/late" {
		t.Fatalf("got %d path %q, want 200 /late", resp.StatusCode, resp.Header.Get("X-Path"))
	}
	wantXFCC(t, resp, frontendID.String())
}

func TestCaptureDetectionTimeout(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, "", 50*time.Millisecond)
	c := m.r.mustDial(t, m.capture, netip.AddrPortFrom(catalogVIP, 8080))
	testutil.Eventually(t, "the detection timeout", func() bool { return m.detectTimeouts() == 1 })
	testutil.Eventually(t, "an opaque tunnel", func() bool { return m.outboundTunnels() == 1 })
	resp := rawGet(t, c, "/slow-client")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Path") != "/slow-client" {
		t.Fatalf("got %d path %q, want 200 /slow-client", resp.StatusCode, resp.Header.Get("X-Path"))
	}
	wantXFCC(t, resp, frontendID.String())

	// Bytes that cannot start HTTP are tunneled at once, no timeout.
	c2 := m.r.mustDial(t, m.capture, netip.AddrPortFrom(catalogVIP, 8080))
	if _, err := c2.Write([]byte("\x16\x03\x01\x00\x05hello")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "a second tunnel", func() bool { return m.outboundTunnels() == 2 })
	if got := m.detectTimeouts(); got != 1 {
		t.Errorf("trellis_protocol_detect_timeouts_total = %v, want 1", got)
	}
}

// countingListener is a loopback server outside the mesh: an echo server
// that counts its connections.
func countingEcho(t *testing.T) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	l := listen(t)
	t.Cleanup(func() { l.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort(), &n
}

// wantRefused checks that a connection is reset without a byte; on
// loopback the reset may beat the end of connect.
func wantRefused(t *testing.T, dial func() (net.Conn, error)) {
	t.Helper()
	c, err := dial()
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial: %v, want a connection that is then reset", err)
		}
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 16))
	if err == nil || n != 0 {
		t.Fatalf("read on a refused connection: %d bytes, err %v; want none and an error", n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection neither served nor refused: %v", err)
	}
}

func TestCapturePassthrough(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, meshconfig.OutboundPassthrough, 0)
	ext, accepted := countingEcho(t)
	msg := []byte("outside the mesh")
	if got := echoThrough(t, m.r.mustDial(t, m.capture, ext), msg); !bytes.Equal(got, msg) {
		t.Fatalf("echoed %q, want %q", got, msg)
	}
	if accepted.Load() != 1 || m.captured("passthrough") != 1 {
		t.Errorf("external server saw %d connections, passthrough counted %v; want 1, 1", accepted.Load(), m.captured("passthrough"))
	}
	// A destination that refuses is refused to the app too.
	dead := listen(t)
	deadAddr := dead.Addr().(*net.TCPAddr).AddrPort()
	dead.Close()
	wantRefused(t, func() (net.Conn, error) { return m.r.dial(context.Background(), m.capture, deadAddr) })
	testutil.Eventually(t, "the failed passthrough counted", func() bool { return m.captured("error") == 1 })
}

func TestCaptureBlock(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, meshconfig.OutboundBlock, 0)
	ext, accepted := countingEcho(t)
	wantRefused(t, func() (net.Conn, error) { return m.r.dial(context.Background(), m.capture, ext) })
	testutil.Eventually(t, "blocked counted", func() bool { return m.captured("blocked") == 1 })
	if accepted.Load() != 0 {
		t.Errorf("external server saw %d connections, want 0", accepted.Load())
	}
	// Mesh services are still reachable.
	resp, _ := get(t, m.r.client(t, m.capture, netip.AddrPortFrom(catalogVIP, 80), false), "http://catalog.shop.mesh/")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("mesh call under block: got %d, want 200", resp.StatusCode)
	}
}

func TestCaptureRefusesDirectConnections(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, "", 0)
	wantRefused(t, func() (net.Conn, error) { return net.DialTimeout("tcp", m.capture, 5*time.Second) })
	testutil.Eventually(t, "the refusal counted", func() bool { return m.captured("error") == 1 })

	// The same with the real SO_ORIGINAL_DST, which fails or names the
	// listener itself for a connection no rule redirected.
	l := listen(t)
	serve(t, "capture (SO_ORIGINAL_DST)", func() error { return m.out.ServeCapture(l, proxy.CaptureConfig{}) })
	t.Cleanup(func() { shutdown(t, m.out.Shutdown) })
	wantRefused(t, func() (net.Conn, error) { return net.DialTimeout("tcp", l.Addr().String(), 5*time.Second) })
	testutil.Eventually(t, "the second refusal counted", func() bool { return m.captured("error") == 2 })
}

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
func startTransparentProxy(t *testing.T, cp *meshtest.ControlPlane, cfg proxy.Config, r *redirector) *proxy.Proxy {
	t.Helper()
	cfg.Transparent = true
	return meshtest.StartProxy(t, cp, cfg, meshtest.BeforeStart(func(p *proxy.Proxy) {
		if p.HTTPProxyAddr() != "" {
			t.Errorf("transparent proxy serves the HTTP proxy on %s, want it off (its default port is the capture port)", p.HTTPProxyAddr())
		}
		p.SetOrigDst(r.origDst)
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
	r := newRedirector(t)
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	app := startApp(t, echoApp())
	catalog := startTransparentProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app}, r)
	frontend := startTransparentProxy(t, cp, proxy.Config{Service: "frontend"}, r)
	captured := func(result string) float64 {
		return metric(t, frontend.MetricsForTest(), "trellis_outbound_captured_total", map[string]string{"result": result})
	}

	// Passthrough (the default) to a server outside the mesh.
	ext, accepted := countingEcho(t)
	msg := []byte("hello, outside")
	if got := echoThrough(t, r.mustDial(t, frontend.CaptureAddr(), ext), msg); !bytes.Equal(got, msg) {
		t.Fatalf("passthrough echoed %q, want %q", got, msg)
	}
	if got := captured("passthrough"); got != 1 {
		t.Errorf("passthrough counted %v, want 1", got)
	}

	// A direct connection to the capture port is refused, not looped.
	wantRefused(t, func() (net.Conn, error) { return net.DialTimeout("tcp", frontend.CaptureAddr(), 5*time.Second) })

	// A mesh service by its virtual IP, when the control plane assigns
	// them.
	var vip netip.Addr
	testutil.Eventually(t, "catalog in frontend's config", func() bool {
		s := frontend.CurrentSnapshot()
		if s == nil || s.Services[svcKey("catalog", "shop")] == nil || len(s.Services[svcKey("catalog", "shop")].Endpoints) == 0 {
			return false
		}
		vip = s.VIPs[svcKey("catalog", "shop")]
		return true
	})
	if vip.IsValid() {
		resp, _ := get(t, r.client(t, frontend.CaptureAddr(), netip.AddrPortFrom(vip, 8080), false), "http://catalog.shop.mesh:8080/items")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Path") != "/items" {
			t.Fatalf("GET via VIP %s: got %d path %q, want 200 /items", vip, resp.StatusCode, resp.Header.Get("X-Path"))
		}
		wantXFCC(t, resp, "spiffe://trellis.local/ns/shop/sa/frontend")
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
	wantRefused(t, func() (net.Conn, error) { return r.dial(context.Background(), frontend.CaptureAddr(), ext) })
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
