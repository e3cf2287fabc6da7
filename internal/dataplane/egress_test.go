package dataplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/egress"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
)

// withEgress publishes a copy of m's snapshot with the EgressPolicy of
// spec (in shop) selecting the workload.
func withEgress(t *testing.T, m *captureMesh, spec string) {
	t.Helper()
	objs, err := resource.Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: frontend-out, namespace: shop}\nspec: "+spec+"\n"), "egress.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := egress.FromObject(&objs[0])
	if err != nil {
		t.Fatal(err)
	}
	snap := *m.snap.get()
	snap.Egress = egress.NewRules([]egress.Policy{p})
	m.snap.set(&snap)
}

// externalTLS is an HTTPS server on loopback whose certificate names the
// given hosts, and a client pool trusting it.
func externalTLS(t *testing.T, pki testutil.PKI) (netip.AddrPort, *x509.CertPool) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "external sni=%s host=%s", r.TLS.ServerName, r.Host)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caPEM, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return netip.MustParseAddrPort(srv.Listener.Addr().String()), pool
}

// capturedClient is an HTTP(S) client whose every connection is captured
// on its way to dst, without keep-alive (each request a connection).
func capturedClient(m *captureMesh, dst netip.AddrPort, roots *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return m.r.Dial(ctx, m.capture, dst)
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		DisableKeepAlives: true,
	}}
}

// TestCaptureEgress: with an EgressPolicy selecting the workload,
// captured connections outside the mesh pass only to the hosts and ports
// it lists, matched by TLS SNI and HTTP Host, with the bytes replayed
// unchanged (the external TLS is the client's own); the rest is refused
// (403 for HTTP, an alert for TLS), counted and reported as egress.denied
// events naming the caller and the host.
func TestCaptureEgress(t *testing.T) {
	var events eventLog
	m := newCaptureMesh(t, meshOptions{clientEvents: events.emit}, meshconfig.OutboundBlock, 0)
	pki := testutil.NewPKI(t, t.TempDir(), testutil.PKIOptions{CAName: "ext-ca", ServerName: "api.psp.example", ServerDNSNames: []string{"api.psp.example", "evil.example"}})
	tlsDst, roots := externalTLS(t, pki)
	otherPort, _ := externalTLS(t, pki)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "plain host=%s", r.Host) }))
	t.Cleanup(plain.Close)
	plainDst := netip.MustParseAddrPort(plain.Listener.Addr().String())
	withEgress(t, m, fmt.Sprintf(`{hosts: [{name: api.psp.example, ports: [%d]}, {name: "*.s3.example", ports: [%d]}]}`, tlsDst.Port(), plainDst.Port()))

	const n = 40
	get := func(c *http.Client, url string) (string, int, error) {
		resp, err := c.Get(url)
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), resp.StatusCode, err
	}
	for i := range n {
		// Allowed: the SNI and port listed; the server sees the client's
		// own handshake.
		body, code, err := get(capturedClient(m, tlsDst, roots), "https://api.psp.example/")
		if err != nil || code != 200 || body != "external sni=api.psp.example host=api.psp.example" {
			t.Fatalf("allowed TLS #%d: %v %d %q", i, err, code, body)
		}
		body, code, err = get(capturedClient(m, plainDst, nil), "http://bucket.s3.example/")
		if err != nil || code != 200 || body != "plain host=bucket.s3.example" {
			t.Fatalf("allowed HTTP #%d: %v %d %q", i, err, code, body)
		}
		// Refused: another SNI, the right SNI on another port, a Host
		// not listed (the wildcard's own domain included).
		if _, _, err := get(capturedClient(m, tlsDst, roots), "https://evil.example/"); err == nil || !strings.Contains(err.Error(), "access denied") {
			t.Fatalf("TLS to evil.example #%d: got %v, want an access_denied alert", i, err)
		}
		if _, _, err := get(capturedClient(m, otherPort, roots), "https://api.psp.example/"); err == nil {
			t.Fatalf("TLS to an unlisted port #%d: allowed", i)
		}
		for _, host := range []string{"s3.example", "evil.example"} {
			body, code, err := get(capturedClient(m, plainDst, nil), "http://"+host+"/")
			if err != nil || code != http.StatusForbidden || !strings.Contains(body, "host "+host) || !strings.Contains(body, "shop/frontend-out") {
				t.Fatalf("HTTP to %s #%d: %v %d %q, want 403 naming the host and the policy", host, i, err, code, body)
			}
		}
	}
	// Bytes that name no host are matched by address: refused.
	testutil.WantRefused(t, func() (net.Conn, error) {
		c, err := m.r.Dial(context.Background(), m.capture, plainDst)
		if err == nil {
			_, err = c.Write([]byte{0, 1, 2, 3})
		}
		return c, err
	})

	const denied = 4*n + 1
	testutil.Eventually(t, "egress counted", func() bool {
		return m.captured("egress_allowed") == 2*n && m.captured("egress_denied") == denied
	})
	if got := m.captured("passthrough") + m.captured("blocked"); got != 0 {
		t.Errorf("outbound mode applied to %v connections; EgressPolicies decide instead", got)
	}
	evs := events.events()
	hosts := map[string]int{}
	for _, e := range evs {
		if e.GetKind() != "egress.denied" || e.GetSourceId() != frontendID.String() || e.GetDecision() != "deny" {
			t.Fatalf("event %v: want egress.denied from %s", e, frontendID)
		}
		hosts[e.GetAttributes()["host"]+":"+e.GetAttributes()["port"]]++
	}
	want := map[string]int{
		fmt.Sprintf("evil.example:%d", tlsDst.Port()):       n,
		fmt.Sprintf("api.psp.example:%d", otherPort.Port()): n,
		fmt.Sprintf("s3.example:%d", plainDst.Port()):       n,
		fmt.Sprintf("evil.example:%d", plainDst.Port()):     n,
		fmt.Sprintf("127.0.0.1:%d", plainDst.Port()):        1,
	}
	if len(evs) != denied || fmt.Sprint(hosts) != fmt.Sprint(want) {
		t.Errorf("events by host: %v (%d), want %v", hosts, len(evs), want)
	}
}

// Without an EgressPolicy selecting the workload, the outbound mode
// decides, as before.
func TestCaptureEgressNoPolicyKeepsOutboundMode(t *testing.T) {
	m := newCaptureMesh(t, meshOptions{}, meshconfig.OutboundPassthrough, 0)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	t.Cleanup(plain.Close)
	dst := netip.MustParseAddrPort(plain.Listener.Addr().String())
	resp, err := capturedClient(m, dst, nil).Get("http://evil.example/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("passthrough without EgressPolicies: %v", err)
	}
	resp.Body.Close()
	if m.captured("passthrough") != 1 || m.captured("egress_denied") != 0 {
		t.Errorf("passthrough %v, egress_denied %v; want 1, 0", m.captured("passthrough"), m.captured("egress_denied"))
	}
}
