package dataplane_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/dataplane"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

// probeServer is a bare TLS endpoint posing as a peer proxy for a tcp
// service; it records the serial of each client certificate it sees, to
// show which certificate the outbound side presents on new handshakes.
type probeServer struct {
	addr    string
	mu      sync.Mutex
	serials []string
}

func startProbe(t *testing.T, cert *tls.Certificate) *probeServer {
	t.Helper()
	p := &probeServer{}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{*cert},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"trellis-tcp/1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p.addr = l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					return
				}
				p.mu.Lock()
				p.serials = append(p.serials, tc.ConnectionState().PeerCertificates[0].SerialNumber.String())
				p.mu.Unlock()
				_, _ = io.Copy(tc, tc)
			}()
		}
	}()
	return p
}

func (p *probeServer) last() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.serials) == 0 {
		return ""
	}
	return p.serials[len(p.serials)-1]
}

// serverSerial handshakes with the inbound port as a mesh client and
// returns the serial of the certificate the server presents.
func serverSerial(t *testing.T, addr string, clientCert *tls.Certificate) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{
		InsecureSkipVerify: true, Certificates: []tls.Certificate{*clientCert}, NextProtos: []string{"h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestCertificateRotationUnderTraffic(t *testing.T) {
	p := newPKI(t)
	client, server := p.rotating(frontendID), p.rotating(catalogID)
	probe := startProbe(t, p.cert(catalogID))
	m := newMesh(t, meshOptions{
		pki: p, clientIdent: client, serverIdent: server,
		extra: []*meshconfig.Service{service("probe", "shop", meshconfig.ProtocolTCP, []spiffeid.ID{catalogID}, probe.addr)},
	})
	probeAddr := m.upstream(meshconfig.ServiceKey("probe", "shop"))

	// A second server proxy with the same rotating identity: moving the
	// endpoint to it mid-traffic forces a fresh HTTP/2 handshake.
	in2L := listen(t)
	in2 := dataplane.NewInbound(dataplane.DataPlaneConfig{
		Identity: server, Snapshot: m.snap.get, Service: "catalog", Namespace: "shop", AppAddr: m.appAddr, Logger: m.logs.Logger,
	})
	serve(t, "inbound 2", func() error { return in2.Serve(in2L) })
	t.Cleanup(func() { shutdown(t, in2.Shutdown) })

	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	c := testutil.HTTPClient(t)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(m.url("/"))
				if err != nil {
					failed.Add(1)
					t.Errorf("request during rotation: %v", err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Errorf("request during rotation: status %d", resp.StatusCode)
					continue
				}
				ok.Add(1)
			}
		}()
	}

	tunnelOnce := func() {
		t.Helper()
		tc, err := net.Dial("tcp", probeAddr)
		if err != nil {
			t.Fatal(err)
		}
		if got := testutil.EchoThrough(t, tc, []byte("probe")); string(got) != "probe" {
			t.Fatalf("probe tunnel echoed %q", got)
		}
	}
	endpoints := []string{m.inboundAddr, in2L.Addr().String()}
	for round := 1; round <= 3; round++ {
		time.Sleep(50 * time.Millisecond)
		before := ok.Load()
		newServer, newClient := p.cert(catalogID), p.cert(frontendID)
		server.swap(newServer)
		client.swap(newClient)
		if got, want := serverSerial(t, m.inboundAddr, newClient), serial(newServer); got != want {
			t.Errorf("round %d: inbound presented serial %s on a new handshake, want the new certificate's %s", round, got, want)
		}
		tunnelOnce()
		if got, want := probe.last(), serial(newClient); got != want {
			t.Errorf("round %d: outbound presented client serial %s on a new handshake, want the new certificate's %s", round, got, want)
		}
		snap := *m.snap.get()
		snap.Services = map[string]*meshconfig.Service{
			m.svc.Key():                            service("catalog", "shop", meshconfig.ProtocolHTTP, []spiffeid.ID{catalogID}, endpoints[round%2]),
			meshconfig.ServiceKey("probe", "shop"): snap.Services[meshconfig.ServiceKey("probe", "shop")],
		}
		m.snap.set(&snap)
		testutil.Eventually(t, "requests after the swap", func() bool { return ok.Load() > before+20 })
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() < 60 {
		t.Errorf("%d requests failed, %d succeeded during rotation; want 0 failed", failed.Load(), ok.Load())
	}
}
