package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// rotationWait bounds every wait in the root rotation test: generous, the
// steps themselves take milliseconds.
const rotationWait = 30 * time.Second

// TestRootRotationUnderTraffic rotates the mesh root with three real
// proxies and a request loop running (HTTP over pooled connections, and a
// TCP tunnel, so a fresh mTLS handshake between proxies, per iteration):
// rotate, every proxy renews from the new intermediate and reports both
// roots, retire-old is refused while a config stream with a certificate
// that never renews is registered, then accepted, and traffic goes on. Not
// one request may fail. New connections then verify with the new root
// only, and after a control plane restart the proxies, started with the
// old ca.crt, reconnect verifying it by the new root they learned.
func TestRootRotationUnderTraffic(t *testing.T) {
	start := time.Now()
	cfg := controlplane.Config{ReportInterval: time.Second, EndpointGracePeriod: 300 * time.Millisecond}
	cp := meshtest.StartControlPlane(t, cfg)
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	ready := meshtest.ReadyWithin(rotationWait)
	catalog := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app}, ready)
	ledger := meshtest.StartProxy(t, cp, proxy.Config{Service: "ledger", Protocol: meshconfig.ProtocolTCP, AppAddr: testutil.StartTCPEcho(t)}, ready)
	front := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{
		{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"},
		{Service: "ledger", Namespace: "shop", Listen: "127.0.0.1:0"},
	}}, ready)
	ctx := context.Background()
	api := cp.Client(t)

	// A certificate from the first CA, kept aside, and a config stream
	// whose certificate never renews.
	oldProbe := certifyFor(t, cp, "probe")
	stuck := openStuckStream(t, cp, "stuck")

	tr := startRotationTraffic(t, "http://"+front.UpstreamAddr(0)+"/", front.UpstreamAddr(1))
	defer tr.stop()
	tr.await(t, "traffic through both services", 50)
	first := waitCA(t, api, "every proxy reported the first CA", func(st adminapi.CAStatus) bool {
		return st.Proxies.Connected == 4 && st.Proxies.Done == 4
	})
	oldRoot := first.Roots[0].ID
	// During the overlap a certificate from the old intermediate is
	// still accepted; checked below.

	rot, err := api.RotateCA(ctx)
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	newRoot, newIssuer := rot.Added[0].ID, rot.Status.Issuer.ID
	t.Logf("rotated at %s: new root %.12s, issuer %.12s", time.Since(start).Round(time.Millisecond), newRoot, newIssuer)
	st := waitCA(t, api, "every real proxy renewed and trusts both roots", func(st adminapi.CAStatus) bool {
		return st.Proxies.Done == 3 && st.Proxies.PendingTotal == 1
	})
	if p := st.Proxies.Pending[0]; p.Instance != "stuck-1" || !p.BlocksRetire {
		t.Errorf("pending after the renewals: %+v, want only the stuck stream, blocking", p)
	}
	for _, p := range listProxies(t, api) {
		if p.Service != "stuck" && (p.CertIssuer != newIssuer || !slices.Equal(p.TrustRoots, []string{oldRoot, newRoot})) {
			t.Errorf("%s reports issuer %.12s roots %v, want %.12s and both roots", p.Service, p.CertIssuer, p.TrustRoots, newIssuer)
		}
	}
	tr.await(t, "traffic after the renewals", 50)
	if got, err := probeInbound(catalog.InboundAddr(), oldProbe, nil, false); !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Errorf("during the overlap, a certificate from the old intermediate: %.40q, %v; want 200", got, err)
	}

	// Refused while the stuck stream depends on the old root.
	_, err = api.RetireOldCA(ctx)
	var se *adminapi.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusConflict || !strings.Contains(err.Error(), "stuck.shop/stuck-1") ||
		!strings.Contains(err.Error(), "certificate from intermediate") {
		t.Fatalf("retire-old with the stuck stream registered: %v, want 409 naming stuck.shop/stuck-1 and its old certificate", err)
	}
	for _, s := range []string{"catalog", "ledger", "frontend"} {
		if strings.Contains(err.Error(), s+".shop/") {
			t.Errorf("the refusal names %s, which is done: %v", s, err)
		}
	}
	stuck()
	waitCA(t, api, "the stuck stream gone after its grace period", func(st adminapi.CAStatus) bool { return st.CanRetire })

	ret, err := api.RetireOldCA(ctx)
	if err != nil {
		t.Fatalf("retire-old: %v", err)
	}
	if len(ret.Retired) != 1 || ret.Retired[0].ID != oldRoot {
		t.Errorf("retired %+v, want the old root", ret.Retired)
	}
	t.Logf("retired the old root at %s", time.Since(start).Round(time.Millisecond))
	waitProxies(t, api, "every proxy reports only the new root", func(ps []adminapi.ProxyInfo) bool {
		for _, p := range ps {
			if !slices.Equal(p.TrustRoots, []string{newRoot}) {
				return false
			}
		}
		return len(ps) == 3
	})
	tr.await(t, "traffic after the retirement", 100)

	// New connections verify with the new root only: a fresh workload
	// certificate gets in and the inbound's chain verifies with the new
	// root alone; the certificate from the old intermediate is refused.
	roots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil || len(roots) != 1 || identity.CertID(roots[0]) != newRoot {
		t.Fatalf("ca.crt after retire-old: %d roots, %v; want only the new root", len(roots), err)
	}
	newProbe := certifyFor(t, cp, "probe")
	for _, tc := range []struct {
		name   string
		p      *proxy.Proxy
		tunnel bool
		want   string
	}{
		{"catalog", catalog, false, "HTTP/1.1 200"},
		{"frontend", front, false, "HTTP/1.1 "}, // no app: any answer shows the peer was accepted
		{"ledger", ledger, true, "ping"},
	} {
		if got, err := probeInbound(tc.p.InboundAddr(), newProbe, roots[0], tc.tunnel); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s inbound, new certificate, verified with the new root only: %.40q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if got, err := probeInbound(catalog.InboundAddr(), oldProbe, nil, false); got != "" || err == nil {
		t.Errorf("after retire-old the catalog inbound answered %.40q (%v) to a certificate from the old intermediate, want a refusal", got, err)
	}

	ok, failed := tr.stop()
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the root rotation; want none", failed, ok+failed)
	}
	t.Logf("root rotation under traffic: %d requests and tunnels, %d failed, %s", ok, failed, time.Since(start).Round(time.Millisecond))

	// The proxies were started with the old ca.crt: after a control plane
	// restart they reconnect, verifying it by the new root they learned.
	// (Traffic across a restart is the static stability tests' subject.)
	grpcAddr, apiAddr := cp.GRPCAddr(), cp.APIAddr()
	cp.Stop(t)
	cfg.DataDir, cfg.GRPCAddr, cfg.APIAddr = cp.DataDir, grpcAddr, apiAddr
	cp = meshtest.StartControlPlane(t, cfg)
	api = cp.Client(t)
	waitProxies(t, api, "the proxies reconnected to the restarted control plane", func(ps []adminapi.ProxyInfo) bool {
		n := 0
		for _, p := range ps {
			if p.Connected && p.CertIssuer == newIssuer {
				n++
			}
		}
		return n == 3
	})
}

// rotationTraffic runs HTTP requests and TCP tunnels through the client
// proxy until stopped, counting every outcome.
type rotationTraffic struct {
	ok, failed atomic.Int64
	logged     atomic.Int64
	done       chan struct{}
	wg         sync.WaitGroup
	t          *testing.T
	stopOnce   sync.Once
}

func startRotationTraffic(t *testing.T, httpURL, tcpAddr string) *rotationTraffic {
	tr := &rotationTraffic{done: make(chan struct{}), t: t}
	hc := testutil.HTTPClient(t)
	loop := func(once func() error) {
		defer tr.wg.Done()
		for {
			select {
			case <-tr.done:
				return
			default:
			}
			if err := once(); err != nil {
				tr.failed.Add(1)
				if tr.logged.Add(1) <= 10 {
					t.Errorf("during the root rotation: %v", err)
				}
			} else {
				tr.ok.Add(1)
			}
			time.Sleep(time.Millisecond)
		}
	}
	get := func() error {
		resp, err := hc.Get(httpURL)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || string(body) != "ok" {
			return fmt.Errorf("GET: %s %q %v", resp.Status, body, err)
		}
		return nil
	}
	tunnel := func() error {
		c, err := net.DialTimeout("tcp", tcpAddr, 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return fmt.Errorf("tunnel write: %w", err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "ping" {
			return fmt.Errorf("tunnel echoed %q, %v", got, err)
		}
		return nil
	}
	for range 3 {
		tr.wg.Add(1)
		go loop(get)
	}
	for range 2 {
		tr.wg.Add(1)
		go loop(tunnel)
	}
	return tr
}

// await waits until n more requests succeeded.
func (tr *rotationTraffic) await(t *testing.T, what string, n int64) {
	t.Helper()
	want := tr.ok.Load() + n
	deadline := time.Now().Add(rotationWait)
	for tr.ok.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d requests succeeded within %s", what, tr.ok.Load(), want, rotationWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (tr *rotationTraffic) stop() (ok, failed int64) {
	tr.stopOnce.Do(func() { close(tr.done) })
	tr.wg.Wait()
	return tr.ok.Load(), tr.failed.Load()
}

func waitCA(t *testing.T, api *adminapi.Client, what string, cond func(adminapi.CAStatus) bool) adminapi.CAStatus {
	t.Helper()
	deadline := time.Now().Add(rotationWait)
	for {
		st, err := api.CAStatus(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; status %+v", what, rotationWait, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func listProxies(t *testing.T, api *adminapi.Client) []adminapi.ProxyInfo {
	t.Helper()
	ps, err := api.ListProxies(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func waitProxies(t *testing.T, api *adminapi.Client, what string, cond func([]adminapi.ProxyInfo) bool) {
	t.Helper()
	deadline := time.Now().Add(rotationWait)
	for {
		ps := listProxies(t, api)
		if cond(ps) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; proxies %+v", what, rotationWait, ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// controlTLS verifies the control plane with the ca.crt of now.
func controlTLS(t *testing.T, cp *meshtest.ControlPlane, cert *tls.Certificate) grpc.DialOption {
	t.Helper()
	cfg := testutil.ControlTLS(t, cp.DataDir, cert)
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// certifyFor gets a workload certificate for shop/service with a join
// token, as a proxy does.
func certifyFor(t *testing.T, cp *meshtest.ControlPlane, service string) *tls.Certificate {
	t.Helper()
	tok, err := cp.Client(t).CreateToken(context.Background(), adminapi.CreateTokenRequest{Service: service, Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(cp.GRPCAddr(), controlTLS(t, cp, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	csr, key := testutil.NewCSR(t, tok.Info.SPIFFEID)
	resp, err := pb.NewIdentityClient(conn).Certify(context.Background(), &pb.CertifyRequest{Csr: csr, Token: tok.Token})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(resp.GetLeaf())
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: append([][]byte{resp.GetLeaf()}, resp.GetIntermediates()...), PrivateKey: key, Leaf: leaf}
}

// openStuckStream registers a config stream for shop/service whose
// certificate never renews: it reports the certificate and roots it got
// and ignores every snapshot. The returned func ends it.
func openStuckStream(t *testing.T, cp *meshtest.ControlPlane, service string) func() {
	t.Helper()
	cert := certifyFor(t, cp, service)
	conn, err := grpc.NewClient(cp.GRPCAddr(), controlTLS(t, cp, cert))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := pb.NewConfigClient(conn).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(cert.Certificate[1])
	var roots []string
	for _, r := range mustRoots(t, cp) {
		roots = append(roots, identity.CertID(r))
	}
	for _, m := range []*pb.ProxyMessage{
		{Message: &pb.ProxyMessage_Hello{Hello: &pb.Hello{Instance: service + "-1", Service: service, Namespace: "shop"}}},
		{Message: &pb.ProxyMessage_Report{Report: &pb.Report{CertIssuer: identity.CertID(inter), TrustRoots: roots}}},
	} {
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
	var once sync.Once
	end := func() {
		once.Do(func() {
			cancel()
			<-done
			conn.Close()
		})
	}
	t.Cleanup(end)
	return end
}

func mustRoots(t *testing.T, cp *meshtest.ControlPlane) []*x509.Certificate {
	t.Helper()
	roots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	return roots
}

// probeInbound talks to a proxy's inbound listener as a mesh peer
// presenting cert (with root set, the inbound's chain must verify with it
// alone): GET / over HTTP/1.1, or with tunnel a TCP tunnel it writes
// "ping" into. It returns what came back: an HTTP answer or the echo means
// the inbound accepted the certificate.
func probeInbound(addr string, cert *tls.Certificate, root *x509.Certificate, tunnel bool) (string, error) {
	alpn, send := "http/1.1", "GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
	if tunnel {
		alpn, send = "trellis-tcp/1", "ping"
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // checked below against root alone
		Certificates:       []tls.Certificate{*cert},
		NextProtos:         []string{alpn},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if root == nil {
				return nil
			}
			pool, inter := x509.NewCertPool(), x509.NewCertPool()
			pool.AddCert(root)
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		},
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, send); err != nil {
		return "", err
	}
	if tunnel {
		_ = c.CloseWrite()
	}
	got, err := io.ReadAll(c)
	return string(got), err
}
