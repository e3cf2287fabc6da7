package dataplane_test

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

// wsAccept computes Sec-WebSocket-Accept (RFC 6455 4.2.2).
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsEchoApp completes a minimal WebSocket handshake and then echoes raw
// bytes: enough to prove the proxies switch protocols and relay both ways.
func wsEchoApp(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want a websocket upgrade", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("app: hijack: %v", err)
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n" +
			"X-Got-Xfcc: " + r.Header.Get("X-Forwarded-Client-Cert") + "\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(c, brw)
	})
}

func TestWebSocketUpgrade(t *testing.T) {
	m := newMesh(t, meshOptions{app: wsEchoApp(t)})
	c, err := net.Dial("tcp", m.upstreamAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	_, err = io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: catalog.shop\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: "+key+"\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: status %d, want 101", resp.StatusCode)
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), wsAccept(key); got != want {
		t.Errorf("Sec-WebSocket-Accept %q, want %q", got, want)
	}
	if got := resp.Header.Get("Upgrade"); !strings.EqualFold(got, "websocket") {
		t.Errorf("Upgrade %q, want websocket", got)
	}
	if got, want := resp.Header.Get("X-Got-Xfcc"), "By="+catalogID.String()+";URI="+frontendID.String(); got != want {
		t.Errorf("app saw X-Forwarded-Client-Cert %q, want %q", got, want)
	}
	for _, msg := range []string{"hello", strings.Repeat("x", 100000), "bye"} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("read echo of %d bytes: %v", len(msg), err)
		}
		if string(got) != msg {
			t.Errorf("echo %.20q..., want %.20q...", got, msg)
		}
	}
}

func TestTCPEchoThroughUpstream(t *testing.T) {
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolTCP, appAddr: testutil.StartTCPEcho(t)})
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", m.upstreamAddr)
		if err != nil {
			t.Fatal(err)
		}
		if got := testutil.EchoThrough(t, c, msg); !bytes.Equal(got, msg) {
			t.Fatalf("connection %d: echoed %d bytes, want the %d sent", i, len(got), len(msg))
		}
	}
	labels := map[string]string{"direction": "inbound", "destination_service": "catalog"}
	if got := metric(t, m.serverMetrics, "trellis_tcp_connections_total", labels); got != 3 {
		t.Errorf("server trellis_tcp_connections_total = %v, want 3", got)
	}
	testutil.Eventually(t, "tcp byte counters", func() bool {
		return metric(t, m.serverMetrics, "trellis_tcp_received_bytes_total", labels) == 3*float64(len(msg)) &&
			metric(t, m.clientMetrics, "trellis_tcp_sent_bytes_total", map[string]string{"direction": "outbound"}) == 3*float64(len(msg))
	})
}

func TestTCPThroughConnect(t *testing.T) {
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolTCP, appAddr: testutil.StartTCPEcho(t)})
	c, err := net.Dial("tcp", m.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "CONNECT catalog.shop:5432 HTTP/1.1\r\nHost: catalog.shop:5432\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: status %d, want 200", resp.StatusCode)
	}
	msg := []byte("tunneled through CONNECT")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(br)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q (%v), want %q", got, err, msg)
	}
}

// TestConnectToHTTPService: raw bytes through CONNECT to an HTTP service
// are still parsed, authorized and stamped by the server proxy.
func TestConnectToHTTPService(t *testing.T) {
	m := newMesh(t, meshOptions{})
	c, err := net.Dial("tcp", m.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "CONNECT catalog.shop:80 HTTP/1.1\r\nHost: catalog.shop:80\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v %v, want 200", resp, err)
	}
	_, _ = io.WriteString(c, "GET /inside HTTP/1.1\r\nHost: catalog.shop\r\nX-Forwarded-Client-Cert: By=forged\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("X-Got-Xfcc"), "By="+catalogID.String()+";URI="+frontendID.String(); resp.StatusCode != 200 || got != want {
		t.Errorf("got %d, app saw X-Forwarded-Client-Cert %q; want 200 and %q", resp.StatusCode, got, want)
	}
}

func TestHTTPProxyRouting(t *testing.T) {
	m := newMesh(t, meshOptions{extra: []*meshconfig.Service{
		service("orders", "shop", meshconfig.ProtocolHTTP, []spiffeid.ID{catalogID}),
	}})
	c := testutil.HTTPClient(t)
	c.Transport.(*http.Transport).Proxy = http.ProxyURL(mustParseURL(t, "http://"+m.proxyAddr))

	resp, body := testutil.Get(t, c, "http://catalog.shop:8080/items?x=1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("http://catalog.shop:8080/items: status %d %q, want 200", resp.StatusCode, body)
	}
	for h, want := range map[string]string{"X-Path": "/items", "X-Query": "x=1", "X-Host": "catalog.shop:8080"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("app saw %s %q, want %q", h, got, want)
		}
	}

	for _, tc := range []struct {
		url, code, body string
	}{
		{"http://nope.shop/", "502", "unknown mesh service"},
		{"http://catalog/", "502", "SERVICE.NAMESPACE"},
		{"http://catalog.default/", "502", "unknown mesh service"},
		{"http://orders.shop/", "503", "no healthy endpoints for orders.shop"},
	} {
		resp, body := testutil.Get(t, c, tc.url)
		if got := resp.Status[:3]; got != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: got %s %q, want %s with %q", tc.url, resp.Status, body, tc.code, tc.body)
		}
	}
	// CONNECT to a name that is not a mesh service is an HTTP error, not a
	// tunnel.
	for _, host := range []string{"nope.shop:443", "catalog:443"} {
		c, err := net.Dial("tcp", m.proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "CONNECT "+host+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
		c.Close()
		if err != nil || resp.StatusCode != http.StatusBadGateway {
			t.Errorf("CONNECT %s: %v %v, want 502", host, resp, err)
		}
	}
	m.logs.WaitLog(t, "outbound call refused", "catalog.default", "unknown_service")
	m.logs.WaitLog(t, "host=catalog", "not SERVICE.NAMESPACE")
	m.logs.WaitLog(t, "outbound call refused", "orders.shop", "no_endpoints")
}
