package controlplane_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// waitFor bounds every wait for something the control plane should do
// "at once"; generous, so a loaded CI machine does not flake.
const waitFor = 5 * time.Second

// workloadCert gets a workload certificate for service in ns the way a
// proxy does: a join token, then Identity.Certify.
func workloadCert(t *testing.T, cp *cptest.ControlPlane, ns, service string) *tls.Certificate {
	t.Helper()
	tok, err := cp.Client(t).CreateToken(context.Background(), adminapi.CreateTokenRequest{Service: service, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	return certify(t, cp, tok.Token, tok.Info.SPIFFEID)
}

// dialConfig connects to the Config service verifying the control plane
// with ca.crt, presenting cert when given.
func dialConfig(t *testing.T, cp *cptest.ControlPlane, cert *tls.Certificate) pb.ConfigClient {
	t.Helper()
	cfg := testutil.ControlTLS(t, cp.DataDir, cert)
	conn, err := grpc.NewClient(cp.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewConfigClient(conn)
}

// testProxy is the proxy end of one config stream: a goroutine receives
// into msgs until the stream ends with err.
type testProxy struct {
	stream pb.Config_StreamClient
	cancel context.CancelFunc
	msgs   chan *pb.Snapshot
	deltas chan *pb.SnapshotDelta // only with Hello.accepts_deltas
	done   chan struct{}
	err    error // set before done closes
}

// openStream opens a config stream and sends first.
func openStream(t *testing.T, client pb.ConfigClient, first *pb.ProxyMessage) *testProxy {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.Stream(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p := &testProxy{stream: stream, cancel: cancel, msgs: make(chan *pb.Snapshot, 100), deltas: make(chan *pb.SnapshotDelta, 100), done: make(chan struct{})}
	t.Cleanup(p.close)
	// io.EOF: the server already ended the stream; Recv tells why.
	if err := stream.Send(first); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("send first message: %v", err)
	}
	go func() {
		defer close(p.done)
		for {
			m, err := stream.Recv()
			if err != nil {
				p.err = err
				return
			}
			if d := m.GetDelta(); d != nil {
				p.deltas <- d
				continue
			}
			p.msgs <- m.GetSnapshot()
		}
	}()
	return p
}

// connect opens a stream for a workload with its own certificate and waits
// for the first snapshot.
func connect(t *testing.T, cp *cptest.ControlPlane, cert *tls.Certificate, hello *pb.Hello) (*testProxy, *pb.Snapshot) {
	t.Helper()
	p := openStream(t, dialConfig(t, cp, cert), helloMsg(hello))
	return p, p.next(t)
}

func helloMsg(h *pb.Hello) *pb.ProxyMessage {
	return &pb.ProxyMessage{Message: &pb.ProxyMessage_Hello{Hello: h}}
}

// close ends the proxy's side of the stream, as a proxy process exiting.
func (p *testProxy) close() {
	p.cancel()
	<-p.done
}

// next waits for the next snapshot and checks it compiles as the proxy
// compiles it.
func (p *testProxy) next(t *testing.T) *pb.Snapshot {
	t.Helper()
	select {
	case s := <-p.msgs:
		if _, err := meshconfig.Compile(s); err != nil {
			t.Fatalf("snapshot %s does not compile: %v", s.GetVersion(), err)
		}
		return s
	case <-p.done:
		t.Fatalf("stream ended while waiting for a snapshot: %v", p.err)
	case <-time.After(waitFor):
		t.Fatalf("no snapshot within %s", waitFor)
	}
	return nil
}

// expectNone checks that no snapshot arrives for d.
func (p *testProxy) expectNone(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case s := <-p.msgs:
		t.Fatalf("unexpected snapshot %s (hash %s)", s.GetVersion(), s.GetHash())
	case <-time.After(d):
	}
}

// ended waits for the stream to end and returns its error.
func (p *testProxy) ended(t *testing.T) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(waitFor):
		t.Fatalf("stream still open after %s", waitFor)
	}
	return nil
}

func (p *testProxy) send(t *testing.T, m *pb.ProxyMessage) {
	t.Helper()
	if err := p.stream.Send(m); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func (p *testProxy) ack(t *testing.T, s *pb.Snapshot) {
	t.Helper()
	p.send(t, &pb.ProxyMessage{Message: &pb.ProxyMessage_Ack{Ack: &pb.Ack{Version: s.GetVersion(), Hash: s.GetHash()}}})
}

func (p *testProxy) nack(t *testing.T, s *pb.Snapshot, reason string) {
	t.Helper()
	p.send(t, &pb.ProxyMessage{Message: &pb.ProxyMessage_Nack{Nack: &pb.Nack{Version: s.GetVersion(), Error: reason}}})
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after %s", what, got, waitFor)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxyInfo returns the admin API's entry for instance.
func proxyInfo(t *testing.T, cp *cptest.ControlPlane, instance string) (adminapi.ProxyInfo, bool) {
	t.Helper()
	items, err := cp.Client(t).ListProxies(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range items {
		if p.Instance == instance {
			return p, true
		}
	}
	return adminapi.ProxyInfo{}, false
}

// endpoints lists "address=spiffe-id" of service name.ns in s.
func endpoints(s *pb.Snapshot, name, ns string) []string {
	for _, svc := range s.GetServices() {
		if svc.GetName() == name && svc.GetNamespace() == ns {
			out := []string{}
			for _, e := range svc.GetEndpoints() {
				out = append(out, e.GetAddress()+"="+e.GetSpiffeId())
			}
			return out
		}
	}
	return nil
}
