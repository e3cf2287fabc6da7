// Package collectortest runs a real collector on a loopback port, with a
// test mesh CA and workload client certificates, for the tests of the
// collector and of whatever reports to it. Only tests import it.
//
// It must not be imported by non-test code.
package collectortest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/telemetry"
	"github.com/trellismesh/trellis/internal/telemetry/collector"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
	"github.com/trellismesh/trellis/internal/testutil"
)

// PKI is a test mesh CA with helpers for both ends of the stream.
type PKI struct {
	CA          *meshca.CA
	TrustDomain spiffeid.TrustDomain
	Roots       *x509.CertPool
}

// NewPKI creates a CA for trust domain trellis.local.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, _ := testutil.NewCA(t, "trellis.local")
	roots := x509.NewCertPool()
	for _, r := range ca.Roots() {
		roots.AddCert(r)
	}
	return &PKI{CA: ca, TrustDomain: ca.TrustDomain(), Roots: roots}
}

// WorkloadID is spiffe://trellis.local/ns/<ns>/sa/<sa>.
func (p *PKI) WorkloadID(t testing.TB, ns, sa string) spiffeid.ID {
	t.Helper()
	id, err := identity.WorkloadID(p.TrustDomain, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// ServerTLS serves as the control plane identity on 127.0.0.1 and, like
// the control plane, verifies client certificates when given.
func (p *PKI) ServerTLS(t testing.TB) *tls.Config {
	t.Helper()
	cert, err := p.CA.IssueServing(identity.ControlPlaneID(p.TrustDomain), time.Hour, nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*cert},
		ClientCAs:    p.Roots,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			_, err := identity.VerifySVID(cs.PeerCertificates, p.Roots, p.TrustDomain, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// ClientTLS returns a client configuration source for emitter.Options.TLS
// presenting a fresh workload certificate for id (from a CSR, as a proxy
// gets it) and verifying the collector by its SPIFFE ID.
func (p *PKI) ClientTLS(t testing.TB, id spiffeid.ID) func() *tls.Config {
	t.Helper()
	csr, key := testutil.NewCSR(t, id.String())
	leaf, err := p.CA.SignCSR(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := leaf.TLSCertificate(key)
	return func() *tls.Config { return p.clientTLS(cert) }
}

// AnonymousTLS verifies the collector but presents no certificate.
func (p *PKI) AnonymousTLS() func() *tls.Config {
	return func() *tls.Config { return p.clientTLS(nil) }
}

func (p *PKI) clientTLS(cert *tls.Certificate) *tls.Config {
	// Verified by SPIFFE ID, as proxies do.
	return identity.SystemServerTLS{
		TrustDomain: p.TrustDomain,
		Accounts:    []string{identity.ControlServiceAccount},
		Roots:       func() *x509.CertPool { return p.Roots },
		Certificate: func() (*tls.Certificate, error) { return cert, nil },
	}.Config()
}

// Config says where a collector keeps its data. Zero values mean fresh
// temp dirs, a free loopback port and an event log in LogDir.
type Config struct {
	Addr     string
	StateDir string
	LogDir   string
	// App, when set, replaces the event log (LogDir is then unused).
	App telemetry.Appender
}

// Collector is a running collector.
type Collector struct {
	*collector.Server
	Addr     string
	Config   Config
	Log      *eventlog.Log // nil when Config.App was given
	Registry *prometheus.Registry

	pki      *PKI
	grpc     *grpc.Server
	served   chan struct{}
	stopOnce sync.Once
}

// StartCollector starts a collector serving on cfg.Addr; it is stopped
// when the test ends.
func (p *PKI) StartCollector(t testing.TB, cfg Config) *Collector {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(t.TempDir(), "collector")
	}
	if cfg.LogDir == "" {
		cfg.LogDir = filepath.Join(t.TempDir(), "events")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	c := &Collector{Config: cfg, pki: p, Registry: prometheus.NewRegistry(), served: make(chan struct{})}
	app := cfg.App
	if app == nil {
		l, err := eventlog.Open(cfg.LogDir, eventlog.Options{Logger: testutil.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		c.Log, app = l, l
	}
	srv, err := collector.New(app, cfg.StateDir, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	c.Server = srv
	c.Registry.MustRegister(srv)
	lis := listen(t, cfg.Addr)
	c.Addr = lis.Addr().String()
	c.Config.Addr = c.Addr
	c.grpc = grpc.NewServer(grpc.Creds(credentials.NewTLS(p.ServerTLS(t))), grpc.WaitForHandlers(true))
	srv.Register(c.grpc)
	go func() {
		defer close(c.served)
		_ = c.grpc.Serve(lis)
	}()
	t.Cleanup(func() { c.Stop(t) })
	return c
}

// listen binds addr, retrying briefly: a restarted collector takes its
// predecessor's port.
func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var err error
	for range 50 {
		var lis net.Listener
		if lis, err = net.Listen("tcp", addr); err == nil {
			return lis
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("listen %s: %v", addr, err)
	return nil
}

// Stop stops serving (ending every stream at once), then closes the
// collector, saving its high-water marks, and the event log. Calling it
// twice is fine.
func (c *Collector) Stop(t testing.TB) {
	t.Helper()
	c.stopOnce.Do(func() {
		c.grpc.Stop()
		<-c.served
		if err := c.Server.Close(); err != nil {
			t.Errorf("close collector: %v", err)
		}
		if c.Log != nil {
			if err := c.Log.Close(); err != nil {
				t.Errorf("close event log: %v", err)
			}
		}
	})
}

// Restart stops c and starts a new collector on the same address and
// directories.
func (c *Collector) Restart(t testing.TB) *Collector {
	t.Helper()
	c.Stop(t)
	return c.pki.StartCollector(t, c.Config)
}

// Records returns every record of the event log.
func (c *Collector) Records(t testing.TB) []telemetry.Record {
	t.Helper()
	if c.Log == nil {
		t.Fatal("collector has no event log of its own")
	}
	recs, err := c.Log.Read(1, int(c.Log.LastIndex())+1)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// Metric returns the value of a counter or gauge the collector exports,
// summed over label values whose labels include all of match ("k=v").
func (c *Collector) Metric(t testing.TB, name string, match ...string) float64 {
	t.Helper()
	return GatherValue(t, c.Registry, name, match...)
}

// GatherValue sums a counter or gauge of reg over the series whose labels
// include all of match ("k=v").
func GatherValue(t testing.TB, reg prometheus.Gatherer, name string, match ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, kv := range match {
				k, v, _ := strings.Cut(kv, "=")
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == k && l.GetValue() == v)
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
