package dataplane_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/capture"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

// The capture listener's tests run without iptables: a redirector stands
// in for the rules by telling the listener where each connection "was
// going" (see capture.Config.WithOrigDst). The real rules are tested
// in test/e2e.

var catalogVIP = netip.MustParseAddr("240.240.0.10")

// captureMesh is the data path mesh (catalog.shop behind a server proxy)
// with the client proxy serving a capture listener, catalog at
// catalogVIP and the given outbound mode.
type captureMesh struct {
	*mesh
	r       *testutil.Redirector
	capture string
}

func newCaptureMesh(t *testing.T, o meshOptions, mode string, detect time.Duration) *captureMesh {
	t.Helper()
	r := testutil.NewRedirector(t)
	m := newMesh(t, o)
	snap := *m.snap.get()
	snap.VIPs = map[string]netip.Addr{meshconfig.ServiceKey("catalog", "shop"): catalogVIP}
	snap.ServiceByVIP = map[netip.Addr]string{catalogVIP: meshconfig.ServiceKey("catalog", "shop")}
	snap.OutboundMode = mode
	m.snap.set(&snap)
	l := listen(t)
	cfg := capture.Config{DetectTimeout: detect, OriginalDst: r.OrigDst}
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

func TestCaptureHTTPToVirtualIP(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, "", 0)
	dst := netip.AddrPortFrom(catalogVIP, 8080)
	for _, h2c := range []bool{false, true} {
		resp, _ := testutil.Get(t, m.r.Client(t, m.capture, dst, h2c), "http://catalog.shop.mesh:8080/items?x=1")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Path") != "/items" || resp.Header.Get("X-Query") != "x=1" {
			t.Fatalf("h2c %v: got %d path %q query %q, want 200 /items x=1", h2c, resp.StatusCode, resp.Header.Get("X-Path"), resp.Header.Get("X-Query"))
		}
		if got, want := resp.Header.Get("X-Host"), "catalog.shop.mesh:8080"; got != want {
			t.Errorf("h2c %v: Host at the app = %q, want %q", h2c, got, want)
		}
		testutil.WantXFCC(t, resp, frontendID.String())
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
	m := newCaptureMesh(t, meshOptions{protocol: meshconfig.ProtocolTCP, appAddr: testutil.StartTCPEcho(t)}, "", 0)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<14)
	for _, port := range []uint16{5432, 3306} {
		c := m.r.MustDial(t, m.capture, netip.AddrPortFrom(catalogVIP, port))
		if got := testutil.EchoThrough(t, c, msg); !bytes.Equal(got, msg) {
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
	c := m.r.MustDial(t, m.capture, netip.AddrPortFrom(catalogVIP, 3306))
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
	testutil.WantXFCC(t, resp, frontendID.String())
}

func TestCaptureDetectionTimeout(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, "", 50*time.Millisecond)
	c := m.r.MustDial(t, m.capture, netip.AddrPortFrom(catalogVIP, 8080))
	testutil.Eventually(t, "the detection timeout", func() bool { return m.detectTimeouts() == 1 })
	testutil.Eventually(t, "an opaque tunnel", func() bool { return m.outboundTunnels() == 1 })
	resp := rawGet(t, c, "/slow-client")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Path") != "/slow-client" {
		t.Fatalf("got %d path %q, want 200 /slow-client", resp.StatusCode, resp.Header.Get("X-Path"))
	}
	testutil.WantXFCC(t, resp, frontendID.String())

	// Bytes that cannot start HTTP are tunneled at once, no timeout.
	c2 := m.r.MustDial(t, m.capture, netip.AddrPortFrom(catalogVIP, 8080))
	if _, err := c2.Write([]byte("\x16\x03\x01\x00\x05hello")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "a second tunnel", func() bool { return m.outboundTunnels() == 2 })
	if got := m.detectTimeouts(); got != 1 {
		t.Errorf("trellis_protocol_detect_timeouts_total = %v, want 1", got)
	}
}

func TestCapturePassthrough(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, meshconfig.OutboundPassthrough, 0)
	ext, accepted := testutil.CountingEcho(t)
	msg := []byte("outside the mesh")
	if got := testutil.EchoThrough(t, m.r.MustDial(t, m.capture, ext), msg); !bytes.Equal(got, msg) {
		t.Fatalf("echoed %q, want %q", got, msg)
	}
	if accepted.Load() != 1 || m.captured("passthrough") != 1 {
		t.Errorf("external server saw %d connections, passthrough counted %v; want 1, 1", accepted.Load(), m.captured("passthrough"))
	}
	// A destination that refuses is refused to the app too.
	dead := listen(t)
	deadAddr := dead.Addr().(*net.TCPAddr).AddrPort()
	dead.Close()
	testutil.WantRefused(t, func() (net.Conn, error) { return m.r.Dial(context.Background(), m.capture, deadAddr) })
	testutil.Eventually(t, "the failed passthrough counted", func() bool { return m.captured("error") == 1 })
}

func TestCaptureBlock(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, meshconfig.OutboundBlock, 0)
	ext, accepted := testutil.CountingEcho(t)
	testutil.WantRefused(t, func() (net.Conn, error) { return m.r.Dial(context.Background(), m.capture, ext) })
	testutil.Eventually(t, "blocked counted", func() bool { return m.captured("blocked") == 1 })
	if accepted.Load() != 0 {
		t.Errorf("external server saw %d connections, want 0", accepted.Load())
	}
	// Mesh services are still reachable.
	resp, _ := testutil.Get(t, m.r.Client(t, m.capture, netip.AddrPortFrom(catalogVIP, 80), false), "http://catalog.shop.mesh/")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("mesh call under block: got %d, want 200", resp.StatusCode)
	}
}

func TestCaptureRefusesDirectConnections(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, "", 0)
	testutil.WantRefused(t, func() (net.Conn, error) { return net.DialTimeout("tcp", m.capture, 5*time.Second) })
	testutil.Eventually(t, "the refusal counted", func() bool { return m.captured("error") == 1 })

	// The same with the real SO_ORIGINAL_DST, which fails or names the
	// listener itself for a connection no rule redirected.
	l := listen(t)
	serve(t, "capture (SO_ORIGINAL_DST)", func() error { return m.out.ServeCapture(l, capture.Config{}) })
	t.Cleanup(func() { shutdown(t, m.out.Shutdown) })
	testutil.WantRefused(t, func() (net.Conn, error) { return net.DialTimeout("tcp", l.Addr().String(), 5*time.Second) })
	testutil.Eventually(t, "the second refusal counted", func() bool { return m.captured("error") == 2 })
}
