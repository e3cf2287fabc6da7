package cli_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// stuckProxy is a hand-driven config stream: it acknowledges only what the
// test tells it to, so a proxy can be held out of sync.
type stuckProxy struct {
	stream pb.Config_StreamClient
	snaps  chan *pb.Snapshot
}

// startStuckProxy registers instance for service.namespace with a workload
// certificate of its own and returns after the first snapshot arrived.
func startStuckProxy(t *testing.T, cp *meshtest.ControlPlane, instance, service, namespace, addr string) (*stuckProxy, *pb.Snapshot) {
	t.Helper()
	ctx := context.Background()
	tok, err := cp.Client(t).CreateToken(ctx, adminapi.CreateTokenRequest{Service: service, Namespace: namespace})
	if err != nil {
		t.Fatal(err)
	}
	roots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	dial := func(cert *tls.Certificate) *grpc.ClientConn {
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		conn, err := grpc.NewClient(cp.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	csr, key := testutil.NewCSR(t, tok.Info.SPIFFEID)
	resp, err := pb.NewIdentityClient(dial(nil)).Certify(ctx, &pb.CertifyRequest{Csr: csr, Token: tok.Token})
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: append([][]byte{resp.GetLeaf()}, resp.GetIntermediates()...), PrivateKey: key}
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	stream, err := pb.NewConfigClient(dial(cert)).Stream(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.ProxyMessage{Message: &pb.ProxyMessage_Hello{Hello: &pb.Hello{Instance: instance, Service: service, Namespace: namespace, AdvertiseAddr: addr,
		// Its own service, so another instance joining changes its snapshot.
		ServicesWanted: []string{service + "." + namespace}}}}); err != nil {
		t.Fatal(err)
	}
	p := &stuckProxy{stream: stream, snaps: make(chan *pb.Snapshot, 16)}
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			p.snaps <- m.GetSnapshot()
		}
	}()
	return p, p.next(t)
}

func (p *stuckProxy) next(t *testing.T) *pb.Snapshot {
	t.Helper()
	select {
	case s := <-p.snaps:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot")
	}
	return nil
}

func (p *stuckProxy) ack(t *testing.T, s *pb.Snapshot) {
	t.Helper()
	if err := p.stream.Send(&pb.ProxyMessage{Message: &pb.ProxyMessage_Ack{Ack: &pb.Ack{Version: s.GetVersion(), Hash: s.GetHash()}}}); err != nil {
		t.Fatal(err)
	}
}

// startStatusMesh runs a control plane (an ack timeout no test reaches, so
// unanswered proxies stay SYNCING), real proxies frontend.shop and
// catalog.shop, and two hand-driven billing.pay instances: stuck-1
// acknowledged its first snapshot but not the second, which carries a new
// policy; stuck-2 acknowledged nothing.
func startStatusMesh(t *testing.T) *mesh {
	t.Helper()
	clearEnv(t)
	cp := meshtest.StartControlPlane(t, controlplane.Config{AckTimeout: time.Hour})
	m := &mesh{ControlPlane: cp, client: cp.Client(t)}
	meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", AppAddr: neverCalled})
	meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: neverCalled})
	stuck, first := startStuckProxy(t, cp, "stuck-1", "billing", "pay", "127.0.0.1:16001")
	stuck.ack(t, first)
	startStuckProxy(t, cp, "stuck-2", "billing", "pay", "127.0.0.1:16002")
	stuck.next(t) // stuck-2 joined: a new endpoint
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: billing-policy, namespace: pay}
spec:
  selector: {service: billing}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
`)
	want := map[string]bool{"frontend": true, "catalog": true}
	deadline := time.Now().Add(10 * time.Second)
	for {
		items, err := m.client.ListProxies(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		ready := len(items) == 4
		for _, p := range items {
			switch {
			case want[p.Service]:
				ready = ready && p.State == adminapi.ProxySynced && p.CertExpiry != nil && p.Running != nil && p.Running.Hash == p.Desired.Hash
			case p.Instance == "stuck-1":
				ready = ready && p.Desired != nil && p.Desired.Version == "3"
			}
		}
		if ready {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("mesh not settled: %+v", items)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStatus(t *testing.T) {
	m := startStatusMesh(t)

	t.Run("table", func(t *testing.T) {
		r := m.run(t, "", "status")
		if r.code != cli.ExitOK || r.stderr != "" {
			t.Fatalf("got %v, want exit 0", r)
		}
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		header := regexp.MustCompile(`^NAMESPACE +SERVICE +INSTANCE +ADDRESS +STATE +DESIRED +ACKED +RUNNING +CERT-EXPIRES +AGE$`)
		if len(lines) != 5 || !header.MatchString(lines[0]) {
			t.Fatalf("got\n%s\nwant a header and 4 rows", r.stdout)
		}
		for i, want := range []string{
			`^pay +billing +stuck-1 +127\.0\.0\.1:16001 +SYNCING for \d+s +3 +1 +1 +- +\d+s$`,
			`^pay +billing +stuck-2 +127\.0\.0\.1:16002 +SYNCING for \d+s +2 +- +- +- +\d+s$`,
			`^shop +catalog +[0-9a-f]{16} +127\.0\.0\.1:\d+ +SYNCED +\d+ +\d+ +\d+ +in 23h +\d+s$`,
			`^shop +frontend +[0-9a-f]{16} +127\.0\.0\.1:\d+ +SYNCED +\d+ +\d+ +\d+ +in 23h +\d+s$`,
		} {
			if !regexp.MustCompile(want).MatchString(lines[i+1]) {
				t.Errorf("row %d: %q does not match %s", i+1, lines[i+1], want)
			}
		}
	})

	t.Run("namespace", func(t *testing.T) {
		r := m.run(t, "", "status", "-n", "pay")
		if r.code != cli.ExitOK || strings.Count(r.stdout, "\n") != 3 || strings.Contains(r.stdout, "shop") {
			t.Errorf("got %v, want the two pay proxies", r)
		}
		if r := m.run(t, "", "status", "-A"); r.code != cli.ExitOK || strings.Count(r.stdout, "\n") != 5 {
			t.Errorf("-A: got %v, want every proxy", r)
		}
		if r := m.run(t, "", "status", "-n", "nowhere"); r.code != cli.ExitOK || r.stdout != "" || r.stderr != "No proxies registered in namespace nowhere.\n" {
			t.Errorf("empty namespace: got %v", r)
		}
	})

	t.Run("json", func(t *testing.T) {
		r := m.run(t, "", "status", "-o", "json")
		var got adminapi.ProxyListResponse
		if err := json.Unmarshal([]byte(r.stdout), &got); r.code != cli.ExitOK || err != nil {
			t.Fatalf("got %v (%v), want exit 0 and JSON", r, err)
		}
		want, err := m.client.ListProxies(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Items) != 4 || got.Items[0].Instance != "stuck-1" || got.Items[0].State != adminapi.ProxySyncing ||
			got.Items[2].CertIssuer == "" || len(got.Items[2].TrustRoots) != 1 || !sameObjects(t, got.Items[2].CertExpiry, want[2].CertExpiry) {
			t.Errorf("got %+v", got.Items)
		}
	})

	t.Run("one proxy with a diff", func(t *testing.T) {
		for _, arg := range []string{"stuck-1"} {
			r := m.run(t, "", "status", arg)
			if r.code != cli.ExitOK {
				t.Fatalf("status %s: %v", arg, r)
			}
			for _, want := range []string{
				"Instance:       stuck-1\n",
				"Service:        billing.pay\n",
				"Identity:       spiffe://trellis.local/ns/pay/sa/billing\n",
				"State:          SYNCING since ",
				"Desired:        3 (hash ",
				"Acked:          1 (hash ",
				"Certificate:    not reported yet\n",
				"Config diff (acknowledged -> desired):\n--- acked (version 1, hash ",
				"\n+++ desired (version 3, hash ",
				"\n+        \"name\": \"billing-policy\",\n",
				"\n+  \"version\": \"3\"\n",
			} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("status %s lacks %q:\n%s", arg, want, r.stdout)
				}
			}
		}
	})

	t.Run("one synced proxy by service", func(t *testing.T) {
		r := m.run(t, "", "status", "frontend.shop")
		for _, want := range []string{"Service:        frontend.shop\n", "State:          SYNCED since ", "Certificate:    expires ", "Trust roots:    ", "Config: the acknowledged config is the desired one (hash "} {
			if r.code != cli.ExitOK || !strings.Contains(r.stdout, want) {
				t.Errorf("status frontend.shop lacks %q: %v", want, r)
			}
		}
		// A prefix of the instance ID finds the same proxy.
		id := regexp.MustCompile(`Instance: +(\S+)`).FindStringSubmatch(r.stdout)[1]
		if r2 := m.run(t, "", "status", id[:len(id)-1]); r2.code != cli.ExitOK || !strings.Contains(r2.stdout, "Service:        frontend.shop\n") {
			t.Errorf("status %s: %v", id[:len(id)-1], r2)
		}
	})

	t.Run("one proxy as json", func(t *testing.T) {
		r := m.run(t, "", "status", "stuck-1", "-o", "json")
		var got adminapi.ProxyStatus
		if err := json.Unmarshal([]byte(r.stdout), &got); r.code != cli.ExitOK || err != nil {
			t.Fatalf("got %v (%v)", r, err)
		}
		if got.Instance != "stuck-1" || got.Acked.Version != "1" || got.Desired.Version != "3" || !strings.Contains(got.Diff, "billing-policy") ||
			!strings.Contains(string(got.DesiredConfig), "billing-policy") || strings.Contains(string(got.AckedConfig), "billing-policy") {
			t.Errorf("got %+v", got)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"nope"}, `status: no proxy matches "nope"`},
			{[]string{"billing.pay"}, "status: billing.pay has 2 instances (stuck-1, stuck-2); name one"},
			{[]string{"stuck"}, `status: "stuck" is a prefix of 2 instances (stuck-1, stuck-2)`},
			{[]string{"frontend.shop", "-n", "pay"}, `status: no proxy in namespace pay matches "frontend.shop"`},
			{[]string{"-o", "yaml"}, `status: -o "yaml": use table or json`},
			{[]string{"-n", "pay", "-A"}, "status: -n and -A exclude each other"},
			{[]string{"a", "b"}, "status: want at most one PROXY"},
		} {
			r := m.run(t, "", append([]string{"status"}, tc.args...)...)
			if r.code != cli.ExitUser || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("status %v: got %v, want exit 1 and %q", tc.args, r, tc.want)
			}
		}
	})
}
