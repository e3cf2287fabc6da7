package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// report sends what a proxy reports about its certificate and roots.
func (p *testProxy) report(t *testing.T, issuer string, roots ...string) {
	t.Helper()
	p.send(t, &pb.ProxyMessage{Message: &pb.ProxyMessage_Report{Report: &pb.Report{CertIssuer: issuer, TrustRoots: roots}}})
}

// nextWith acks snapshots until one satisfies cond (earlier pushes, such
// as another proxy joining, may be queued before it).
func (p *testProxy) nextWith(t *testing.T, what string, cond func(*pb.Snapshot) bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		s := p.next(t)
		p.ack(t, s)
		if cond(s) {
			return
		}
	}
	t.Fatalf("no snapshot with %s within %s", what, waitFor)
}

func caStatus(t *testing.T, cp *cptest.ControlPlane) adminapi.CAStatus {
	t.Helper()
	st, err := cp.Client(t).CAStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// statusCode is the HTTP status of an admin API error, 0 for none.
func statusCode(err error) int {
	var se *adminapi.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// servingChain handshakes with the gRPC port trusting only roots and
// returns the control plane's chain, or the handshake error.
func servingChain(cp *cptest.ControlPlane, roots ...*x509.Certificate) ([]*x509.Certificate, error) {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	c, err := tls.Dial("tcp", cp.GRPCAddr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates, nil
}

// renew asks for a new certificate presenting cur, as a proxy renews.
func renew(t *testing.T, cp *cptest.ControlPlane, cur *tls.Certificate) *tls.Certificate {
	t.Helper()
	id := cur.Leaf.URIs[0].String()
	csr, key := testutil.NewCSR(t, id)
	resp, err := dialIdentity(t, cp, cur).Certify(context.Background(), &pb.CertifyRequest{Csr: csr})
	if err != nil {
		t.Fatalf("renew %s: %v", id, err)
	}
	return checkLeaf(t, cp, resp, id, key)
}

func issuerOf(c *tls.Certificate) string {
	ic, _ := x509.ParseCertificate(c.Certificate[1])
	return identity.CertID(ic)
}

// TestCARotateAndRetire walks a rotation through the admin API with raw
// config streams playing proxies: the snapshots carry both roots and the
// new issuer, renewal with an old certificate works, retire-old is refused
// (naming the proxies and what they lack, connected or in their grace
// period) until every proxy reports the new issuer and root.
func TestCARotateAndRetire(t *testing.T) {
	sink := filepath.Join(t.TempDir(), "audit.jsonl")
	cp := cptest.StartControlPlane(t, controlplane.Config{AuditSinks: []string{"file://" + sink}})
	ctx := context.Background()
	c := cp.Client(t)

	st := caStatus(t, cp)
	if len(st.Roots) != 1 || !st.Roots[0].Active || st.Rotating || st.CanRetire || st.External {
		t.Fatalf("fresh CA status %+v, want one active root, not rotating, nothing to retire", st)
	}
	oldRoot, oldIssuer := st.Roots[0].ID, st.Issuer.ID
	if _, err := c.RetireOldCA(ctx); statusCode(err) != http.StatusConflict || !strings.Contains(err.Error(), "no rotation in progress") {
		t.Errorf("retire-old without a rotation: %v, want 409 no rotation in progress", err)
	}

	webCert := workloadCert(t, cp, "shop", "web")
	web, s := connect(t, cp, webCert, &pb.Hello{Instance: "web-1", Service: "web", Namespace: "shop"})
	if s.GetIssuer() != oldIssuer || len(s.GetTrustBundle()) != 1 {
		t.Errorf("first snapshot: issuer %s, %d roots; want %s, 1", s.GetIssuer(), len(s.GetTrustBundle()), oldIssuer)
	}
	web.ack(t, s)
	web.report(t, issuerOf(webCert), oldRoot)
	// A second proxy reports, then goes away: it stays registered for the
	// grace period and counts as much as a connected one.
	apiCert := workloadCert(t, cp, "shop", "api")
	api, s2 := connect(t, cp, apiCert, &pb.Hello{Instance: "api-1", Service: "api", Namespace: "shop"})
	api.ack(t, s2)
	api.report(t, issuerOf(apiCert), oldRoot)
	eventually(t, "both proxies done with the first CA", func() (bool, string) {
		st := caStatus(t, cp)
		return st.Proxies.Done == 2 && st.Proxies.PendingTotal == 0, "not"
	})
	api.close()
	eventually(t, "api disconnected", func() (bool, string) {
		st := caStatus(t, cp)
		return st.Proxies.Connected == 1, "still connected"
	})

	rot, err := c.RotateCA(ctx)
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	st = rot.Status
	if len(rot.Added) != 1 || len(st.Roots) != 2 || st.Roots[0].ID != oldRoot || st.Roots[0].Active || !st.Roots[1].Active ||
		st.Roots[1].ID != rot.Added[0].ID || !st.Rotating || st.Issuer.ID == oldIssuer || st.CanRetire {
		t.Fatalf("after rotate: %+v, want the old root then the new active one, a new issuer, rotating, not retirable", rot)
	}
	newRoot, newIssuer := st.Roots[1].ID, st.Issuer.ID
	if st.Proxies.Done != 0 || st.Proxies.PendingTotal != 2 {
		t.Errorf("after rotate: %d done, %d pending; want 0 and 2", st.Proxies.Done, st.Proxies.PendingTotal)
	}
	bundle := readRoots(t, cp)
	if len(bundle) != 2 || identity.CertID(bundle[0]) != oldRoot || identity.CertID(bundle[1]) != newRoot {
		t.Fatalf("ca.crt holds %d roots, want the old and the new one", len(bundle))
	}

	// The connected proxy is pushed both roots and the new issuer.
	web.nextWith(t, "both roots and the new issuer", func(s *pb.Snapshot) bool {
		return s.GetIssuer() == newIssuer && len(s.GetTrustBundle()) == 2
	})

	// The serving certificate now comes from the new intermediate and
	// verifies with either root alone (cross-signed chain).
	for name, roots := range map[string][]*x509.Certificate{"old root": bundle[:1], "new root": bundle[1:]} {
		chain, err := servingChain(cp, roots...)
		if err != nil {
			t.Errorf("control plane serving certificate with only the %s: %v", name, err)
			continue
		}
		if got := identity.CertID(chain[1]); got != newIssuer {
			t.Errorf("serving certificate issued by %s, want the new intermediate %s", got, newIssuer)
		}
	}

	// A proxy with an old certificate renews with it and gets one from
	// the new intermediate.
	newWebCert := renew(t, cp, webCert)
	if got := issuerOf(newWebCert); got != newIssuer {
		t.Errorf("renewed certificate from %s, want %s", got, newIssuer)
	}

	// Refused: web still reports the old certificate, api (in grace)
	// never reported again.
	_, err = c.RetireOldCA(ctx)
	if statusCode(err) != http.StatusConflict {
		t.Fatalf("retire-old during the rotation: %v, want 409", err)
	}
	for _, want := range []string{"2 registered proxies", "web.shop/web-1", "api.shop/api-1", "certificate from intermediate " + oldIssuer[:12], "the active root " + newRoot[:12]} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not mention %q", err, want)
		}
	}

	// web has the new certificate but not yet the new root: still refused.
	web.report(t, newIssuer, oldRoot)
	eventually(t, "web's new issuer recorded", func() (bool, string) {
		for _, p := range caStatus(t, cp).Proxies.Pending {
			if p.Instance == "web-1" && p.CertIssuer == newIssuer {
				return true, ""
			}
		}
		return false, "old issuer"
	})
	if _, err = c.RetireOldCA(ctx); statusCode(err) != http.StatusConflict || !strings.Contains(err.Error(), "web.shop/web-1 (the active root "+newRoot[:12]) {
		t.Errorf("retire-old while web lacks the new root: %v, want 409 naming what web lacks", err)
	}

	// api comes back renewed; both report everything: retire-old goes.
	api, s2 = connect(t, cp, renew(t, cp, apiCert), &pb.Hello{Instance: "api-1", Service: "api", Namespace: "shop"})
	api.ack(t, s2)
	api.report(t, newIssuer, oldRoot, newRoot)
	web.report(t, newIssuer, oldRoot, newRoot)
	eventually(t, "every proxy done", func() (bool, string) {
		st := caStatus(t, cp)
		return st.CanRetire && st.Proxies.Done == 2 && st.Proxies.PendingTotal == 0, "not yet"
	})
	ret, err := c.RetireOldCA(ctx)
	if err != nil {
		t.Fatalf("retire-old: %v", err)
	}
	if len(ret.Retired) != 1 || ret.Retired[0].ID != oldRoot || len(ret.Status.Roots) != 1 || ret.Status.Roots[0].ID != newRoot || ret.Status.Rotating {
		t.Errorf("retire-old answered %+v, want the old root retired and only the new one left", ret)
	}
	if bundle := readRoots(t, cp); len(bundle) != 1 || identity.CertID(bundle[0]) != newRoot {
		t.Errorf("ca.crt after retire-old holds %d roots, want only the new one", len(bundle))
	}
	web.nextWith(t, "only the new root", func(s *pb.Snapshot) bool {
		return s.GetIssuer() == newIssuer && len(s.GetTrustBundle()) == 1
	})
	if _, err := servingChain(cp, bundle[:1]...); err == nil {
		t.Errorf("after retire-old the serving certificate still verifies with only the old root")
	}
	if _, err := servingChain(cp, bundle[1:]...); err != nil {
		t.Errorf("after retire-old, serving certificate with the new root: %v", err)
	}

	deadline := time.Now().Add(waitFor)
	for !(slices.Contains(readKinds(t, sink), "ca.rotated") && slices.Contains(readKinds(t, sink), "ca.retired")) {
		if time.Now().After(deadline) {
			t.Fatalf("audit sink has %v, want ca.rotated and ca.retired", readKinds(t, sink))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readRoots(t *testing.T, cp *cptest.ControlPlane) []*x509.Certificate {
	t.Helper()
	roots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	return roots
}

// A restart in the middle of a rotation keeps both roots and the new
// issuer, and the rotation can finish.
func TestCARotationSurvivesRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "control")
	cp := cptest.StartControlPlane(t, controlplane.Config{DataDir: dir})
	rot, err := cp.Client(t).RotateCA(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cp.Stop(t)
	cp = cptest.StartControlPlane(t, controlplane.Config{DataDir: dir})
	st := caStatus(t, cp)
	if st.Issuer.ID != rot.Status.Issuer.ID || len(st.Roots) != 2 || st.Roots[1].ID != rot.Added[0].ID || !st.CanRetire {
		t.Errorf("after a restart: %+v, want the rotated CA (%+v), retirable with no proxies", st, rot.Status)
	}
	if _, err := cp.Client(t).RetireOldCA(context.Background()); err != nil {
		t.Errorf("retire-old after the restart: %v", err)
	}
}

func TestCARotateExternalCA(t *testing.T) {
	certFile, keyFile, _ := testutil.UserPKI(t, t.TempDir())
	cp := cptest.StartControlPlane(t, controlplane.Config{CACertFile: certFile, CAKeyFile: keyFile})
	if st := caStatus(t, cp); !st.External || len(st.Roots) != 1 {
		t.Errorf("status %+v, want external with one root", st)
	}
	for name, call := range map[string]func(context.Context) (adminapi.CAChangeResponse, error){
		"rotate": cp.Client(t).RotateCA, "retire-old": cp.Client(t).RetireOldCA,
	} {
		_, err := call(context.Background())
		if statusCode(err) != http.StatusConflict || !strings.Contains(err.Error(), "rotate it in your PKI") {
			t.Errorf("%s with --ca-cert: %v, want 409 telling to rotate in the user's PKI", name, err)
		}
	}
}

func TestCAEndpointsNeedToken(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	c := cp.Client(t)
	c.Token = ""
	if _, err := c.RotateCA(context.Background()); statusCode(err) != http.StatusUnauthorized {
		t.Errorf("rotate without a token: %v, want 401", err)
	}
	if st := caStatus(t, cp); st.Rotating {
		t.Errorf("an unauthenticated rotate changed the CA")
	}
}
