package controlclient_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlclient"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
	"github.com/trellismesh/trellis/internal/workloadcert"
)

// recordingTarget is a controlclient.Target that records what the control client
// does with it; apply errors while failing is set.
type recordingTarget struct {
	mu      sync.Mutex
	running *pb.Snapshot
	failing error

	applied chan *pb.Snapshot
	states  chan error // nil: up
}

func (r *recordingTarget) Apply(s *pb.Snapshot) error {
	r.mu.Lock()
	err := r.failing
	if err == nil {
		r.running = s
	}
	r.mu.Unlock()
	r.applied <- s
	return err
}

func (r *recordingTarget) Running() (string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running.GetVersion(), r.running.GetHash()
}

func (r *recordingTarget) Report() *pb.Report {
	v, h := r.Running()
	return &pb.Report{RunningVersion: v, RunningHash: h}
}

func (r *recordingTarget) StreamState(up bool, err error) {
	if up {
		err = nil
	} else if err == nil {
		err = errors.New("down without a reason")
	}
	r.states <- err
}

func (r *recordingTarget) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failing = err
}

// TestControlClientTarget drives the control client's small interface
// against a real control plane: a snapshot applied is ACKed, an Apply error
// is the NACK's error, and the stream's state is told both ways.
func TestControlClientTarget(t *testing.T) {
	cp, certs := catalogCerts(t)
	target := &recordingTarget{applied: make(chan *pb.Snapshot, 10), states: make(chan error, 10)}
	cc := &controlclient.Client{
		Addr:   cp.GRPCAddr(),
		Certs:  certs,
		Hello:  &pb.Hello{Instance: "catalog-1", Service: "catalog", Namespace: "shop", Protocol: meshconfig.ProtocolHTTP},
		Target: target,
		Log:    testutil.Logger(t),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	if err := await(t, target.states, "stream up"); err != nil {
		t.Fatalf("first stream state: down (%v), want up", err)
	}
	first := await(t, target.applied, "first snapshot")
	awaitProxy(t, cp, "ACK of the first snapshot", func(p adminapi.ProxyInfo) bool {
		return p.State == adminapi.ProxySynced && p.Acked != nil && p.Acked.Version == first.GetVersion()
	})

	target.fail(errors.New("target refuses this one"))
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog-reads, namespace: shop}
spec:
  selector: {service: catalog}
  rules: [{to: [{methods: [GET]}]}]
`)
	second := await(t, target.applied, "snapshot with the policy")
	awaitProxy(t, cp, "NACK with the target's error", func(p adminapi.ProxyInfo) bool {
		return p.State == adminapi.ProxyNacked && strings.Contains(p.Error, "target refuses this one") && p.Desired != nil && p.Desired.Version == second.GetVersion()
	})

	cp.Stop(t)
	if err := await(t, target.states, "stream down"); err == nil {
		t.Fatal("stream state after the control plane stopped: up, want down with a reason")
	}
}

func await[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
	}
	var zero T
	return zero
}

// awaitProxy waits until the control plane's entry of catalog-1 satisfies
// cond.
func awaitProxy(t *testing.T, cp *meshtest.ControlPlane, what string, cond func(adminapi.ProxyInfo) bool) {
	t.Helper()
	testutil.Eventually(t, what, func() bool {
		items, err := cp.Client(t).ListProxies(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range items {
			if p.Instance == "catalog-1" && cond(p) {
				return true
			}
		}
		return false
	})
}

// Reconnect waits run on the client's clock: after a failed stream the
// client waits on one timer and tries again only when the clock has moved
// past the wait (at most the 3 s cap).
func TestReconnectWaitsOnTheClock(t *testing.T) {
	_, certs := catalogCerts(t)
	// Nothing listens here: every stream fails at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	fake := clock.NewFake(time.Now())
	target := &recordingTarget{applied: make(chan *pb.Snapshot, 10), states: make(chan error, 10)}
	cc := &controlclient.Client{
		Addr: dead, Certs: certs, Target: target, Log: testutil.Logger(t), Clock: fake,
		Hello: &pb.Hello{Instance: "catalog-1", Service: "catalog", Namespace: "shop"},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	for attempt := 1; attempt <= 3; attempt++ {
		if err := await(t, target.states, "a failed stream"); err == nil {
			t.Fatalf("attempt %d: stream up against a dead address", attempt)
		}
		fake.BlockUntil(1) // waiting to retry
		select {
		case err := <-target.states:
			t.Fatalf("attempt %d: retried before the clock moved (%v)", attempt, err)
		default:
		}
		fake.Advance(3 * time.Second) // the cap: the wait is over whatever it drew
	}
}

// catalogCerts starts a control plane and obtains a certificate for
// catalog.shop from it.
func catalogCerts(t *testing.T) (*meshtest.ControlPlane, *workloadcert.Manager) {
	t.Helper()
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	tok, err := cp.Client(t).CreateToken(context.Background(), adminapi.CreateTokenRequest{Service: "catalog", Namespace: "shop"})
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
	certs := workloadcert.New(spiffeid.RequireFromString(tok.Info.SPIFFEID), cp.GRPCAddr(), pool, tok.Token, testutil.Logger(t), nil)
	if err := certs.Obtain(context.Background()); err != nil {
		t.Fatal(err)
	}
	return cp, certs
}
