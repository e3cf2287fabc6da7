package cli_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/servingcert"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/extauthztest"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// shopThroughGateway routes shop.example.com to frontend, which lets the
// ingress namespace in.
const shopThroughGateway = `---
apiVersion: trellis.dev/v1alpha1
kind: GatewayRoute
metadata: {name: shop-public, namespace: shop}
spec:
  hosts: [shop.example.com]
  rules:
  - service: frontend
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: from-ingress, namespace: shop}
spec:
  rules:
  - from: [{namespaces: [ingress]}]
`

// whoApp answers with what a service behind the gateway sees.
func whoApp(t *testing.T, name string) string {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s host=%s path=%s proto=%s xff=%s xfcc=%s user=%s", name, r.Host, r.URL.RequestURI(),
			r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Client-Cert"), r.Header.Get("X-User-Id"))
	}))
	t.Cleanup(app.Close)
	return strings.TrimPrefix(app.URL, "http://")
}

// gatewayClient dials addr whatever the URL's host, verifying the
// gateway's certificate for that host against pool; h2 offers HTTP/2.
func gatewayClient(addr string, tlsConf *tls.Config, h2 bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if tlsConf != nil {
		// The transport adds its ALPN protocols to its configuration.
		tlsConf = tlsConf.Clone()
	}
	tr := &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		TLSClientConfig:     tlsConf,
		ForceAttemptHTTP2:   h2,
		MaxIdleConnsPerHost: 16,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func getBody(t *testing.T, c *http.Client, url string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), resp.Header
}

// The ingress gateway with real parts: a web PKI's certificates chosen by
// SNI, GatewayRoutes by host and path prefix, services behind real
// sidecars that see the gateway's SPIFFE ID, hundreds of requests over
// HTTP/1.1 (the fast path), HTTP/2 and plain HTTP without a failure, curl,
// a per-route rate limit, a certificate replaced on disk while requests
// run, and a second gateway redirecting plain HTTP to https.
func TestGatewayRoutesToMeshServices(t *testing.T) {
	m := startMesh(t)
	pki := testutil.NewServingPKI(t, t.TempDir())
	shopCert, shopKey, _ := pki.Issue(t, "shop", "shop.example.com", "www.shop.example.com")
	apiCert, apiKey, apiSerial := pki.Issue(t, "api", "api.example.com")
	m.mustRun(t, `apiVersion: trellis.dev/v1alpha1
kind: GatewayRoute
metadata: {name: shop-public, namespace: shop}
spec:
  hosts: [shop.example.com, "*.shop.example.com"]
  rules:
  - match: {pathPrefix: /api/}
    service: frontend
  - match: {pathPrefix: /limited}
    service: frontend
    rateLimit: {requestsPerSecond: 1, burst: 3}
  - service: catalog
---
apiVersion: trellis.dev/v1alpha1
kind: GatewayRoute
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  gateways: [public.ingress]
  rules:
  - service: catalog
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: from-ingress, namespace: shop}
spec:
  rules:
  - from: [{namespaces: [ingress]}]
`, "apply", "-f", "-")
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", AppAddr: whoApp(t, "frontend")})
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: whoApp(t, "catalog")})
	gw := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "public", Namespace: "ingress", HTTPProxyAddr: "off", Gateway: &proxy.GatewayConfig{
		ListenHTTPS: "127.0.0.1:0", ListenHTTP: "127.0.0.1:0", CertReloadInterval: 100 * time.Millisecond,
		Certs: []servingcert.Pair{{CertFile: shopCert, KeyFile: shopKey}, {CertFile: apiCert, KeyFile: apiKey}},
	}})
	gwID := gw.Identity().ID().String()
	tlsConf := &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12}
	h1 := gatewayClient(gw.GatewayHTTPSAddr(), tlsConf, false)
	h2 := gatewayClient(gw.GatewayHTTPSAddr(), tlsConf, true)
	plain := gatewayClient(gw.GatewayHTTPAddr(), nil, false)
	_, httpsPort, _ := net.SplitHostPort(gw.GatewayHTTPSAddr())
	shop := "https://shop.example.com:" + httpsPort
	api := "https://api.example.com:" + httpsPort

	testutil.EventuallyWithin(t, 15*time.Second, "the gateway routes to frontend", func() bool {
		code, _, _ := getBody(t, h1, shop+"/api/items", nil)
		return code == http.StatusOK
	})
	want := func(what string, code int, body string, wantCode int, parts ...string) {
		t.Helper()
		if code != wantCode {
			t.Fatalf("%s: %d %q, want %d", what, code, body, wantCode)
		}
		for _, p := range parts {
			if !strings.Contains(body, p) {
				t.Fatalf("%s: body %q lacks %q", what, body, p)
			}
		}
	}
	for i := range 300 {
		code, body, _ := getBody(t, h1, shop+"/api/items?i="+strconv.Itoa(i), map[string]string{"X-Forwarded-Client-Cert": "URI=spiffe://forged"})
		want(fmt.Sprintf("h1 request %d", i), code, body, 200, "frontend host=shop.example.com:"+httpsPort, "path=/api/items?i="+strconv.Itoa(i), "proto=https", "xff=127.0.0.1", "URI="+gwID)
		if strings.Contains(body, "forged") {
			t.Fatalf("h1 request %d: the client's X-Forwarded-Client-Cert reached the service: %q", i, body)
		}
		code, body, _ = getBody(t, h2, api+"/items/"+strconv.Itoa(i), nil)
		want(fmt.Sprintf("h2 request %d", i), code, body, 200, "catalog ", "path=/items/"+strconv.Itoa(i), "proto=https", "URI="+gwID)
		code, body, _ = getBody(t, plain, "http://m.shop.example.com/api/x", map[string]string{"X-Forwarded-For": "10.9.9.9"})
		want(fmt.Sprintf("plain request %d", i), code, body, 200, "frontend ", "proto=http ", "xff=10.9.9.9, 127.0.0.1")
		code, body, _ = getBody(t, h1, shop+"/apis", nil) // not /api/: the catch-all
		want(fmt.Sprintf("h1 request %d to /apis", i), code, body, 200, "catalog ")
	}
	// No route: 404 naming host and path, from the gateway itself.
	code, body, _ := getBody(t, plain, "http://nope.example.com/x", nil)
	want("unknown host", code, body, 404, `no GatewayRoute for host "nope.example.com" and path "/x"`)

	// SNI picks the certificate.
	for host, serial := range map[string]int64{"api.example.com": apiSerial} {
		c, err := tls.Dial("tcp", gw.GatewayHTTPSAddr(), &tls.Config{RootCAs: pki.Pool, ServerName: host})
		if err != nil {
			t.Fatalf("TLS to %s: %v", host, err)
		}
		if got := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != serial {
			t.Errorf("SNI %s got certificate serial %d, want %d", host, got, serial)
		}
		if v := c.ConnectionState().Version; v < tls.VersionTLS12 {
			t.Errorf("TLS version %x", v)
		}
		c.Close()
	}
	if _, err := tls.Dial("tcp", gw.GatewayHTTPSAddr(), &tls.Config{RootCAs: pki.Pool, ServerName: "shop.example.com", MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("the gateway accepted TLS 1.1")
	}

	// curl, over HTTP/2 and HTTP/1.1.
	for i := range 10 {
		for _, ver := range []string{"--http2", "--http1.1"} {
			out, err := exec.Command("curl", "-sS", ver, "--cacert", pki.CAFile, "--resolve", "shop.example.com:"+httpsPort+":127.0.0.1",
				"-w", " code=%{http_code}", shop+"/api/curl").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "code=200") || !strings.Contains(string(out), "URI="+gwID) {
				t.Fatalf("curl %s %d: %v: %s", ver, i, err, out)
			}
		}
	}

	// The route's own bucket: 3, then 429 with Retry-After.
	for i := range 3 {
		code, body, _ := getBody(t, h1, shop+"/limited", nil)
		want(fmt.Sprintf("limited %d", i), code, body, 200, "frontend ")
	}
	code, body, hdr := getBody(t, h1, shop+"/limited", nil)
	want("over the route's limit", code, body, 429, "rate limited by GatewayRoute shop/shop-public rule 1")
	if hdr.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}

	// Replace the shop certificate on disk while requests run: every
	// request succeeds, and new handshakes get the new certificate.
	var wg sync.WaitGroup
	errs := make(chan string, 1)
	stop := make(chan struct{})
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			c := gatewayClient(gw.GatewayHTTPSAddr(), tlsConf, n%2 == 0)
			code, body, _ := getBody(t, c, shop+"/api/reload", nil)
			c.CloseIdleConnections()
			if code != 200 {
				select {
				case errs <- fmt.Sprintf("during reload: %d %q", code, body):
				default:
				}
			}
		}
	})
	before := gw.CertReloads()
	_, _, newSerial := pki.Issue(t, "shop", "shop.example.com", "www.shop.example.com")
	testutil.EventuallyWithin(t, 10*time.Second, "the gateway presents the new certificate", func() bool {
		c, err := tls.Dial("tcp", gw.GatewayHTTPSAddr(), &tls.Config{RootCAs: pki.Pool, ServerName: "shop.example.com"})
		if err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64() == newSerial
	})
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	if gw.CertReloads() <= before {
		t.Errorf("reloads %d, want more than %d", gw.CertReloads(), before)
	}

	// A gateway redirecting plain HTTP.
	redir := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "public", Namespace: "ingress", HTTPProxyAddr: "off", Gateway: &proxy.GatewayConfig{
		ListenHTTPS: "127.0.0.1:0", ListenHTTP: "127.0.0.1:0", RedirectHTTP: true,
		Certs: []servingcert.Pair{{CertFile: shopCert, KeyFile: shopKey}},
	}})
	_, rport, _ := net.SplitHostPort(redir.GatewayHTTPSAddr())
	rc := gatewayClient(redir.GatewayHTTPAddr(), nil, false)
	for i := range 100 {
		path := "/api/a?b=" + strconv.Itoa(i)
		if i%2 == 1 {
			path = "/api/%61?b=" + strconv.Itoa(i) // net/http's path
		}
		code, _, hdr := getBody(t, rc, "http://shop.example.com"+path, nil)
		if code != http.StatusPermanentRedirect || hdr.Get("Location") != "https://shop.example.com:"+rport+path {
			t.Fatalf("redirect %d: %d Location %q", i, code, hdr.Get("Location"))
		}
	}
}

// The README's request: curl with an end user's JWT through the gateway
// to a service whose policy requires a claim. The gateway verifies the
// token too (a JWTAuthentication selecting it: a bad token stops at the
// edge with 401), forwards it, and frontend's proxy verifies it again
// and decides on its own claims: the binding rule (docs/end-user-auth.md).
func TestGatewayEndUserJWT(t *testing.T) {
	m := startMesh(t)
	iss := startIssuer(t)
	pki := testutil.NewServingPKI(t, t.TempDir())
	cert, key, _ := pki.Issue(t, "shop", "shop.example.com")
	m.mustRun(t, fmt.Sprintf(`apiVersion: trellis.dev/v1alpha1
kind: GatewayRoute
metadata: {name: shop-public, namespace: shop}
spec:
  hosts: [shop.example.com]
  rules:
  - match: {pathPrefix: /api/}
    service: frontend
---
apiVersion: trellis.dev/v1alpha1
kind: JWTAuthentication
metadata: {name: at-the-edge, namespace: ingress}
spec:
  selector: {service: public}
  issuers:
  - {issuer: %[1]s, audiences: [shop], jwksURI: %[2]s/jwks.json, forwardOriginalToken: true}
---
apiVersion: trellis.dev/v1alpha1
kind: JWTAuthentication
metadata: {name: shop-users, namespace: shop}
spec:
  selector: {service: frontend}
  issuers:
  - issuer: %[1]s
    audiences: [shop]
    jwksURI: %[2]s/jwks.json
    forwardClaims: {sub: x-user-id}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: admins-via-gateway, namespace: shop}
spec:
  selector: {service: frontend}
  rules:
  - from: [{namespaces: [ingress], requestPrincipals: ["%[1]s/*"]}]
    when: [{key: "request.auth.claims[groups]", values: [admin]}]
`, iss.issuer, iss.url), "apply", "-f", "-")
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", AppAddr: whoApp(t, "frontend"), JWKSCAFile: iss.caFile})
	gw := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "public", Namespace: "ingress", HTTPProxyAddr: "off", JWKSCAFile: iss.caFile,
		Gateway: &proxy.GatewayConfig{ListenHTTPS: "127.0.0.1:0", Certs: []servingcert.Pair{{CertFile: cert, KeyFile: key}}}})
	_, port, _ := net.SplitHostPort(gw.GatewayHTTPSAddr())
	url := "https://shop.example.com:" + port + "/api/orders"
	admin := iss.sign(t, "alice", []string{"admin"}, time.Hour)
	user := iss.sign(t, "bob", []string{"ops"}, time.Hour)
	expired := iss.sign(t, "carol", []string{"admin"}, -time.Hour)
	curl := func(token string, extra ...string) (code, body, challenge string) {
		args := []string{"-sS", "--cacert", pki.CAFile, "--resolve", "shop.example.com:" + port + ":127.0.0.1", "-D", "-", "-w", "\ncode=%{http_code}", url}
		if token != "" {
			args = append(args, "-H", "Authorization: Bearer "+token)
		}
		out, err := exec.Command("curl", append(args, extra...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		s := string(out)
		i := strings.LastIndex(s, "code=")
		for _, l := range strings.Split(s, "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "www-authenticate") {
				challenge = strings.TrimSpace(v)
			}
		}
		return strings.TrimSpace(s[i+5:]), s[:i], challenge
	}
	testutil.EventuallyWithin(t, 15*time.Second, "an admin's request passes", func() bool {
		code, _, _ := curl(admin)
		return code == "200"
	})
	for i := range 10 {
		if code, body, _ := curl(admin, "-H", "X-User-Id: mallory"); code != "200" || !strings.Contains(body, "user=alice") {
			t.Fatalf("admin %d: %s %q", i, code, body)
		}
		if code, body, _ := curl(user); code != "403" {
			t.Fatalf("user without the claim %d: %s %q", i, code, body)
		}
		if code, body, _ := curl(""); code != "403" {
			t.Fatalf("no token %d: %s %q", i, code, body)
		}
		code, body, challenge := curl(expired)
		if code != "401" || !strings.Contains(challenge, `error="invalid_token"`) || !strings.Contains(body, "invalid token") {
			t.Fatalf("expired token %d: %s %q %q", i, code, body, challenge)
		}
	}
	// Hundreds more through Go's client, HTTP/1.1 (the fast path) and h2.
	tlsConf := &tls.Config{RootCAs: pki.Pool}
	for _, h2 := range []bool{false, true} {
		c := gatewayClient(gw.GatewayHTTPSAddr(), tlsConf, h2)
		for i := range 150 {
			code, body, _ := getBody(t, c, url, map[string]string{"Authorization": "Bearer " + admin, "X-User-Id": "mallory"})
			if code != 200 || !strings.HasSuffix(body, " user=alice") {
				t.Fatalf("h2=%v admin %d: %d %q", h2, i, code, body)
			}
			if code, body, hdr := getBody(t, c, url, map[string]string{"Authorization": "Bearer " + expired}); code != 401 || hdr.Get("Www-Authenticate") == "" {
				t.Fatalf("h2=%v expired %d: %d %q", h2, i, code, body)
			}
			if code, body, _ := getBody(t, c, url, map[string]string{"Authorization": "Bearer " + user}); code != 403 {
				t.Fatalf("h2=%v user %d: %d %q", h2, i, code, body)
			}
		}
	}
}

// One of two frontend instances stops (its proxy drains) while clients
// send requests through the gateway over HTTP/1.1 and h2: none fails.
func TestGatewayAcrossAnEndpointRestart(t *testing.T) {
	m := startMesh(t)
	pki := testutil.NewServingPKI(t, t.TempDir())
	cert, key, _ := pki.Issue(t, "shop", "shop.example.com")
	m.mustRun(t, shopThroughGateway, "apply", "-f", "-")
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", AppAddr: whoApp(t, "frontend-a")})
	second := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", AppAddr: whoApp(t, "frontend-b")})
	gw := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "public", Namespace: "ingress", HTTPProxyAddr: "off",
		Gateway: &proxy.GatewayConfig{ListenHTTPS: "127.0.0.1:0", ListenHTTP: "127.0.0.1:0", Certs: []servingcert.Pair{{CertFile: cert, KeyFile: key}}}})
	_, port, _ := net.SplitHostPort(gw.GatewayHTTPSAddr())
	url := "https://shop.example.com:" + port + "/x"
	tlsConf := &tls.Config{RootCAs: pki.Pool}
	clients := []*http.Client{gatewayClient(gw.GatewayHTTPSAddr(), tlsConf, false), gatewayClient(gw.GatewayHTTPSAddr(), tlsConf, true),
		gatewayClient(gw.GatewayHTTPAddr(), nil, false)}
	urls := []string{url, url, "http://shop.example.com/x"}
	seen := map[string]bool{}
	testutil.EventuallyWithin(t, 15*time.Second, "both frontends answer through the gateway", func() bool {
		if code, body, _ := getBody(t, clients[0], url, nil); code == 200 {
			seen[strings.Fields(body)[0]] = true
		}
		return seen["frontend-a"] && seen["frontend-b"]
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fails []string
	var sent int
	stop := make(chan struct{})
	for i, c := range clients {
		for range 2 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					resp, err := c.Get(urls[i])
					mu.Lock()
					sent++
					if err != nil {
						fails = append(fails, err.Error())
					} else {
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							fails = append(fails, fmt.Sprintf("client %d: %s %q", i, resp.Status, b))
						}
					}
					mu.Unlock()
				}
			})
		}
	}
	time.Sleep(500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := second.Shutdown(ctx); err != nil {
		t.Errorf("stop the second frontend: %v", err)
	}
	cancel()
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	if sent < 600 || len(fails) > 0 {
		t.Fatalf("%d requests, %d failed: %v", sent, len(fails), fails[:min(len(fails), 10)])
	}
	t.Logf("%d requests across the restart, none failed", sent)
}

// External authorization at the gateway: a CUSTOM policy selecting the
// gateway's service asks a real ext_authz server (extauthztest) for every
// request, over HTTP/1.1 and h2: allowed ones reach frontend, denied ones
// get the provider's 401 and body from the gateway, and with the server
// stopped every request fails closed with 403 saying so.
func TestGatewayExtAuthz(t *testing.T) {
	m := startMesh(t)
	srv := extauthztest.Start(t, &extauthztest.Server{})
	pki := testutil.NewServingPKI(t, t.TempDir())
	cert, key, _ := pki.Issue(t, "shop", "shop.example.com")
	host, port, _ := net.SplitHostPort(srv.Addr())
	m.mustRun(t, fmt.Sprintf(`apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  extensionProviders:
  - name: ext
    envoyExtAuthzGrpc: {service: %s, port: %s, timeout: 2s, headersToDownstreamOnDeny: [x-ext-reason]}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ext-at-the-edge, namespace: ingress}
spec:
  selector: {service: public}
  action: CUSTOM
  provider: {name: ext}
  rules: [{}]
`, host, port)+shopThroughGateway, "apply", "-f", "-")
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", AppAddr: whoApp(t, "frontend")})
	gw := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "public", Namespace: "ingress", HTTPProxyAddr: "off",
		Gateway: &proxy.GatewayConfig{ListenHTTPS: "127.0.0.1:0", Certs: []servingcert.Pair{{CertFile: cert, KeyFile: key}}}})
	_, gport, _ := net.SplitHostPort(gw.GatewayHTTPSAddr())
	base := "https://shop.example.com:" + gport
	tlsConf := &tls.Config{RootCAs: pki.Pool}
	h1, h2 := gatewayClient(gw.GatewayHTTPSAddr(), tlsConf, false), gatewayClient(gw.GatewayHTTPSAddr(), tlsConf, true)
	testutil.EventuallyWithin(t, 15*time.Second, "the CUSTOM policy takes effect at the gateway", func() bool {
		code, _, _ := getBody(t, h1, base+extauthztest.DenyPrefix, nil)
		return code == http.StatusUnauthorized
	})
	checks := srv.Checks()
	for i := range 100 {
		for _, c := range []*http.Client{h1, h2} {
			code, body, _ := getBody(t, c, base+"/items/"+strconv.Itoa(i), nil)
			if code != 200 || !strings.HasPrefix(body, "frontend ") {
				t.Fatalf("allowed request %d: %d %q", i, code, body)
			}
			code, body, hdr := getBody(t, c, base+extauthztest.DenyPrefix+"/"+strconv.Itoa(i), nil)
			if code != http.StatusUnauthorized || body != extauthztest.DenyBody || hdr.Get("X-Ext-Reason") != "path" {
				t.Fatalf("denied request %d: %d %q %v", i, code, body, hdr)
			}
		}
	}
	if got := srv.Checks() - checks; got != 400 {
		t.Errorf("checks for 400 requests: %d (decisions are not cached)", got)
	}
	srv.Stop()
	for i := range 100 {
		for _, c := range []*http.Client{h1, h2} {
			code, body, _ := getBody(t, c, base+"/items/"+strconv.Itoa(i), nil)
			if code != http.StatusForbidden || !strings.Contains(body, "external authorization service ext unavailable") {
				t.Fatalf("provider down, request %d: %d %q, want 403 saying so", i, code, body)
			}
		}
	}
}
