package dataplane_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/dataplane"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

// readsNothing reports whether c is closed without any bytes coming back.
func readsNothing(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after 5s, want it closed")
	}
	if len(b) > 0 {
		t.Fatalf("read %q, want the connection closed without a response", b)
	}
}

func TestStrictRefusesPlaintext(t *testing.T) {
	var hits counter
	m := newMesh(t, meshOptions{app: hits.wrap(testutil.EchoApp())})
	c, err := net.Dial("tcp", m.inboundAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: catalog.shop\r\n\r\n")
	readsNothing(t, c)
	if got := hits.n.Load(); got != 0 {
		t.Errorf("app reached %d times, want 0", got)
	}
	if got := metric(t, m.serverMetrics, "trellis_inbound_rejected_total", map[string]string{"reason": "plaintext"}); got != 1 {
		t.Errorf("trellis_inbound_rejected_total{reason=plaintext} = %v, want 1", got)
	}
	m.logs.WaitLog(t, "inbound connection refused", "reason=plaintext")
}

func TestStrictRefusesTLSWithoutMeshCert(t *testing.T) {
	var hits counter
	m := newMesh(t, meshOptions{app: hits.wrap(testutil.EchoApp())})
	other := newPKI(t) // a different CA: same trust domain name, other keys
	for _, tc := range []struct {
		name   string
		certs  []tls.Certificate
		reason string
	}{
		{"no client certificate", nil, "no_client_cert"},
		{"certificate from another CA", []tls.Certificate{*other.cert(frontendID)}, "bad_peer_cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", m.inboundAddr, &tls.Config{InsecureSkipVerify: true, Certificates: tc.certs, NextProtos: []string{"http/1.1"}})
			if err == nil {
				defer c.Close()
				// In TLS 1.3 the server judges the client certificate after
				// the client's handshake is done: the refusal shows up on
				// the first read.
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: catalog.shop\r\n\r\n")
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err == nil {
					t.Fatalf("got a response (%s), want the connection refused", resp.Status)
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("no answer after 5s, want the connection refused")
				}
			}
			// The client may see the refusal a moment before the server
			// has counted it.
			var got float64
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				got = metric(t, m.serverMetrics, "trellis_inbound_rejected_total", map[string]string{"reason": tc.reason})
				if got >= 1 || time.Now().After(deadline) {
					break
				}
			}
			if got != 1 {
				t.Errorf("trellis_inbound_rejected_total{reason=%s} = %v, want 1", tc.reason, got)
			}
		})
	}
	if got := hits.n.Load(); got != 0 {
		t.Errorf("app reached %d times, want 0", got)
	}
}

func TestPermissiveAcceptsPlaintext(t *testing.T) {
	m := newMesh(t, meshOptions{mode: "PERMISSIVE"})
	c := testutil.HTTPClient(t)
	req, _ := http.NewRequest(http.MethodGet, "http://"+m.inboundAddr+"/plain", nil)
	req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://trellis.test/ns/shop/sa/catalog;URI=spiffe://trellis.test/ns/shop/sa/admin")
	resp, _ := testutil.Do(t, c, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("plaintext GET: status %d, want 200", resp.StatusCode)
	}
	if got := resp.Header.Values("X-Got-Xfcc"); len(got) != 0 {
		t.Errorf("app saw X-Forwarded-Client-Cert %q from a plaintext caller, want none", got)
	}
	// mTLS still works on the same port.
	resp, _ = testutil.Get(t, c, m.url("/mtls"))
	if got, want := resp.Header.Get("X-Got-Xfcc"), "By="+catalogID.String()+";URI="+frontendID.String(); got != want {
		t.Errorf("mTLS caller: app saw %q, want %q", got, want)
	}
	plain := map[string]string{"direction": "inbound", "mtls": "false", "source_principal": "unknown", "response_code": "200"}
	if got := metric(t, m.serverMetrics, "trellis_requests_total", plain); got != 1 {
		t.Errorf("trellis_requests_total%v = %v, want 1", plain, got)
	}

	// Switching to STRICT stops plaintext requests, even on a connection
	// accepted before the switch.
	snap := *m.snap.get()
	snap.MTLSMode = "STRICT"
	m.snap.set(&snap)
	req, _ = http.NewRequest(http.MethodGet, "http://"+m.inboundAddr+"/plain", nil)
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("plaintext after STRICT: status %d, want 403 or a refused connection", resp.StatusCode)
		}
	}
}

func TestForgedXFCCNeverReachesApp(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		m := newMesh(t, meshOptions{})
		c := testutil.HTTPClient(t)
		if h2c {
			c = testutil.H2CClient(t)
		}
		req, _ := http.NewRequest(http.MethodGet, m.url("/"), nil)
		req.Header.Add("X-Forwarded-Client-Cert", "By=spiffe://trellis.test/ns/shop/sa/catalog;URI=spiffe://trellis.test/ns/kube-system/sa/admin")
		req.Header.Add("x-forwarded-client-cert", "URI=spiffe://evil")
		resp, _ := testutil.Do(t, c, req)
		want := "By=" + catalogID.String() + ";URI=" + frontendID.String()
		if got := resp.Header.Values("X-Got-Xfcc"); len(got) != 1 || got[0] != want {
			t.Errorf("h2c=%v: app saw X-Forwarded-Client-Cert %q, want exactly [%q]", h2c, got, want)
		}
	}
}

func TestSecureNamingRejectsWrongIdentity(t *testing.T) {
	var hits counter
	m := newMesh(t, meshOptions{app: hits.wrap(testutil.EchoApp()), serverID: evilID})
	resp, body := testutil.Get(t, testutil.HTTPClient(t), m.url("/"))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	if !strings.Contains(body, evilID.String()) || !strings.Contains(body, catalogID.String()) {
		t.Errorf("body %q, want it to name the identity presented and the one expected", body)
	}
	if got := hits.n.Load(); got != 0 {
		t.Errorf("app reached %d times, want 0", got)
	}
	m.logs.WaitLog(t, "outbound call failed", "reason=identity_mismatch", evilID.String(), catalogID.String())
	f := map[string]string{"destination_service": "catalog", "reason": "identity_mismatch"}
	if got := metric(t, m.clientMetrics, "trellis_upstream_failures_total", f); got < 1 {
		t.Errorf("trellis_upstream_failures_total%v = %v, want >= 1", f, got)
	}

	// A TCP tunnel to the impostor is closed too.
	tm := newMesh(t, meshOptions{protocol: meshconfig.ProtocolTCP, appAddr: testutil.StartTCPEcho(t), serverID: evilID})
	c, err := net.Dial("tcp", tm.upstreamAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "secret")
	readsNothing(t, c)
}

func TestMeshDefaultDeny(t *testing.T) {
	var hits counter
	m := newMesh(t, meshOptions{authz: "deny", app: hits.wrap(testutil.EchoApp())})
	resp, body := testutil.Get(t, testutil.HTTPClient(t), m.url("/"))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "access denied") {
		t.Errorf("got %d %q, want 403 access denied", resp.StatusCode, body)
	}
	if got := hits.n.Load(); got != 0 {
		t.Errorf("app reached %d times, want 0", got)
	}
	deny := map[string]string{"decision": "deny", "policy": ""}
	if got := metric(t, m.serverMetrics, "trellis_authz_decisions_total", deny); got != 1 {
		t.Errorf("trellis_authz_decisions_total%v = %v, want 1", deny, got)
	}

	tm := newMesh(t, meshOptions{authz: "deny", protocol: meshconfig.ProtocolTCP, appAddr: testutil.StartTCPEcho(t)})
	c, err := net.Dial("tcp", tm.upstreamAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "let me in")
	readsNothing(t, c)
	if got := metric(t, tm.serverMetrics, "trellis_authz_decisions_total", deny); got != 1 {
		t.Errorf("tcp: trellis_authz_decisions_total%v = %v, want 1", deny, got)
	}
}

// TestAuthorizerSeesRequest checks the policy hook gets the caller and the
// request, and that its decision is enforced per request.
func TestAuthorizerSeesRequest(t *testing.T) {
	m := newMesh(t, meshOptions{})
	seen := make(chan admission.Request, 10)
	agents := make(chan string, 10)
	auth := authorizerFunc(func(_ *meshconfig.Snapshot, r *admission.Request) admission.Decision {
		seen <- *r
		// Headers are valid during the decision only.
		agents <- r.HeaderValue("User-Agent")
		return admission.Decision{Allow: r.Method == http.MethodGet, Policy: "shop/readers"}
	})
	// A second inbound with the custom authorizer, swapped into the
	// snapshot as catalog's endpoint.
	inL := listen(t)
	in := dataplane.NewInbound(dataplane.DataPlaneConfig{
		Identity: m.pki.identity(catalogID), Snapshot: m.snap.get, Authorizer: auth,
		Service: "catalog", Namespace: "shop", AppAddr: m.appAddr, Logger: m.logs.Logger, Metrics: m.serverMetrics,
	})
	serve(t, "inbound", func() error { return in.Serve(inL) })
	t.Cleanup(func() { shutdown(t, in.Shutdown) })
	snap := *m.snap.get()
	snap.Services = map[string]*meshconfig.Service{m.svc.Key(): service("catalog", "shop", meshconfig.ProtocolHTTP, []spiffeid.ID{catalogID}, inL.Addr().String())}
	m.snap.set(&snap)

	c := testutil.HTTPClient(t)
	resp, _ := testutil.Get(t, c, m.url("/items?q=1"))
	if resp.StatusCode != 200 {
		t.Errorf("GET: %d, want 200", resp.StatusCode)
	}
	r := <-seen
	if ua := <-agents; r.Source != frontendID || r.Method != "GET" || r.Path != "/items" || r.Protocol != "http" || ua == "" {
		t.Errorf("authorizer saw %+v, want source %s GET /items over http with headers", r, frontendID)
	}
	req, _ := http.NewRequest(http.MethodPost, m.url("/items"), strings.NewReader("x"))
	resp, _ = testutil.Do(t, c, req)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST: %d, want 403", resp.StatusCode)
	}
	<-seen
	deny := map[string]string{"decision": "deny", "policy": "shop/readers"}
	if got := metric(t, m.serverMetrics, "trellis_authz_decisions_total", deny); got != 1 {
		t.Errorf("trellis_authz_decisions_total%v = %v, want 1", deny, got)
	}
}

type authorizerFunc func(*meshconfig.Snapshot, *admission.Request) admission.Decision

func (f authorizerFunc) Authorize(s *meshconfig.Snapshot, r *admission.Request) admission.Decision {
	return f(s, r)
}

func TestPermissivePlaintextTCP(t *testing.T) {
	m := newMesh(t, meshOptions{mode: "PERMISSIVE", protocol: meshconfig.ProtocolTCP, appAddr: testutil.StartTCPEcho(t)})
	c, err := net.Dial("tcp", m.inboundAddr)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("plain bytes, no TLS")
	if got := testutil.EchoThrough(t, c, msg); string(got) != string(msg) {
		t.Errorf("echo %q, want %q", got, msg)
	}
	// STRICT refuses the same connection.
	snap := *m.snap.get()
	snap.MTLSMode = "STRICT"
	m.snap.set(&snap)
	c, err = net.Dial("tcp", m.inboundAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(msg)
	readsNothing(t, c)
}
