// Package controlclient keeps a proxy's config stream to the control
// plane: Hello, every pushed snapshot applied through a Target (ACK or
// NACK), reports, and reconnection with backoff. It must not depend on the
// proxy role, the data plane, the control plane or the CA.
package controlclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/backoff"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/workloadcert"
)

// maxSnapshotBytes bounds one pushed snapshot.
const maxSnapshotBytes = 64 << 20

// Reconnecting after the stream ended: the proxy waits from
// controlRetryMin doubling to controlRetryMax, each wait jittered to
// between half and all of it, and gRPC redials the control plane at least
// every controlRedialMax (plus 20% jitter) meanwhile. So however long the
// control plane was down, a proxy is back within about
// controlRetryMax+controlRedialMax of it listening again, and retries
// several times within the control plane's restore grace period (30 s,
// see docs/config-stream.md), so the workloads it restored from before a
// restart are never dropped while their proxies are on their way back.
const (
	controlRetryMin  = 250 * time.Millisecond
	controlRetryMax  = 3 * time.Second
	controlRedialMax = time.Second
)

// Target is what a Client keeps configured: the proxy, or a
// stand-in in tests. The client calls it from its stream goroutines, so its
// methods must be safe for concurrent use.
type Target interface {
	// Apply compiles and swaps in a snapshot. An error NACKs it, and the
	// target must keep its last good config.
	Apply(*pb.Snapshot) error
	// Running returns the version and hash of the config in use ("" before
	// the first), for each Hello.
	Running() (version, hash string)
	// Report returns a new Report (running config, certificate, trust
	// anchors), which the client owns.
	Report() *pb.Report
	// StreamState is told when a stream is up (Hello and the first Report
	// sent; err nil) and when one ended (up false, err says why).
	StreamState(up bool, err error)
}

// Client keeps one Config stream open to the control plane: it sends
// Hello, applies every Snapshot through Target.Apply (ACK on success, NACK
// with the error otherwise, keeping the last good config), reports what it
// runs, and reconnects with exponential backoff and jitter, capped at a few
// seconds (controlRetryMax). While disconnected the proxy keeps serving
// with its last good config.
//
// Reports go out right after Hello, every Snapshot.report_interval_seconds,
// whenever ReportNow delivers, and after applying a snapshot whose trust
// bundle differs from the last one applied (a CA rotation waits on them).
// Each is built when it is sent, so a report never names an older config
// than an ACK sent before it.
type Client struct {
	Addr  string
	Roots *x509.CertPool        // verify the control plane when Certs is nil (else Certs.ControlRoots)
	Certs *workloadcert.Manager // client certificate (required by the stream)
	Hello *pb.Hello             // sent first on every stream; running_* are filled in
	// Dial, when set, opens the TCP connection (transparent mode marks
	// it); nil means gRPC's default dialer.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Target applies snapshots and says what it runs (required).
	Target Target
	// ReportNow, when set, asks for a report at once (the certificate
	// changed). A signal while disconnected is covered by the report that
	// follows the next Hello.
	ReportNow <-chan struct{}
	Log       *slog.Logger
	// Clock times reconnect waits and reports; nil is the system clock.
	Clock clock.Clock
	// Wanted, when set, gives each Hello's services_wanted: the services
	// the proxy calls whatever its policies say (explicit upstreams, and
	// those it discovered).
	Wanted func() []string

	discoverOnce sync.Once
	discover     chan *pb.Discover // to the current (or next) stream

	// bundle is the trust bundle of the last snapshot applied (owned by
	// the stream goroutine): a change is reported at once.
	bundle [][]byte
	// last is the last snapshot applied, whole (owned by the stream
	// goroutine): the base of the next SnapshotDelta.
	last *pb.Snapshot
}

// Run keeps the stream up until ctx ends.
func (c *Client) Run(ctx context.Context) {
	tlsCfg := identity.SystemServerTLS{
		TrustDomain: c.Certs.ID().TrustDomain(),
		Accounts:    []string{identity.ControlServiceAccount},
		Roots:       c.controlRoots,
		Certificate: func() (*tls.Certificate, error) { return c.Certs.Certificate(), nil },
		Hint:        workloadcert.CAFileHint,
	}.Config()
	conn, err := grpc.NewClient(c.Addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Snapshots of large meshes exceed gRPC's 4 MiB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxSnapshotBytes)),
		grpc.WithContextDialer(c.Dial),
		// gRPC's own redial backoff grows to 2 min by default: after a long
		// outage the channel would still be waiting out that backoff,
		// failing every stream attempt, long after the control plane
		// came back.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: controlRetryMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: controlRedialMax},
			MinConnectTimeout: 10 * time.Second,
		}),
	)
	if err != nil {
		c.Log.Error("config stream: bad control plane address", "control", c.Addr, "err", err)
		return
	}
	defer conn.Close()
	client := pb.NewConfigClient(conn)
	clk := clock.Or(c.Clock)
	b := backoff.Backoff{Min: controlRetryMin, Max: controlRetryMax}
	for ctx.Err() == nil {
		start := clk.Now()
		err := c.stream(ctx, client)
		if ctx.Err() != nil {
			return
		}
		c.Target.StreamState(false, err)
		// A stream that stayed up a while was healthy: start backing off
		// from the bottom again.
		if clk.Now().Sub(start) > time.Minute {
			b.Reset()
		}
		d := b.Next()
		c.Log.Warn("config stream down; serving with the last good config", "control", c.Addr, "err", err, "retry_in", d.Round(time.Millisecond).String())
		t := clk.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// Discover asks the control plane for services the config lacks
// (pb.Discover) on the current stream, or the next one. It never blocks:
// false means too many asks are queued, and the caller's bounded wait
// ends without an answer.
func (c *Client) Discover(d *pb.Discover) bool {
	select {
	case c.discoverChan() <- d:
		return true
	default:
		return false
	}
}

func (c *Client) discoverChan() chan *pb.Discover {
	c.discoverOnce.Do(func() { c.discover = make(chan *pb.Discover, 64) })
	return c.discover
}

func (c *Client) stream(ctx context.Context, client pb.ConfigClient) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.Stream(sctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	hello := proto.Clone(c.Hello).(*pb.Hello)
	hello.RunningVersion, hello.RunningHash = c.Target.Running()
	if c.Wanted != nil {
		hello.ServicesWanted = c.Wanted()
	}
	hello.AcceptsDeltas = true
	if err := st.Send(&pb.ProxyMessage{Message: &pb.ProxyMessage_Hello{Hello: hello}}); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	// The report right after Hello covers any pending ReportNow signal.
	select {
	case <-c.ReportNow:
	default:
	}
	if err := st.Send(c.reportMessage()); err != nil {
		return fmt.Errorf("send report: %w", err)
	}
	c.Target.StreamState(true, nil)
	// Receiving runs here; one goroutine sends: acks and nacks come from
	// here through out, reports are asked for through reportDue and built
	// just before sending.
	out := make(chan *pb.ProxyMessage, 4)
	reportDue := make(chan struct{}, 1)
	errc := make(chan error, 1)
	discover := c.discoverChan()
	go func() {
		for {
			var m *pb.ProxyMessage
			select {
			case <-sctx.Done():
				return
			case m = <-out:
			case d := <-discover:
				m = &pb.ProxyMessage{Message: &pb.ProxyMessage_Discover{Discover: d}}
			case <-reportDue:
				m = c.reportMessage()
			}
			if err := st.Send(m); err != nil {
				select {
				case errc <- fmt.Errorf("send: %w", err):
				default:
				}
				cancel()
				return
			}
		}
	}()
	interval := 30 * time.Second
	reportC := make(chan time.Duration, 1)
	go func(d time.Duration) {
		t := clock.Or(c.Clock).NewTimer(d)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case nd := <-reportC:
				d = nd
				t.Stop()
				t.Reset(d)
			case <-t.C():
				t.Reset(d)
				wake(reportDue)
			case <-c.ReportNow:
				wake(reportDue)
			}
		}
	}(interval)
	for {
		msg, err := st.Recv()
		if err != nil {
			select {
			case e := <-errc:
				return e
			default:
			}
			if errors.Is(err, io.EOF) {
				return errors.New("control plane closed the stream")
			}
			return err
		}
		snap := msg.GetSnapshot()
		var deltaErr error
		if d := msg.GetDelta(); d != nil {
			if snap, deltaErr = applyDelta(c.last, d); deltaErr != nil {
				snap = &pb.Snapshot{Version: d.GetVersion()}
			}
		}
		if snap == nil {
			continue
		}
		if s := snap.GetReportIntervalSeconds(); s > 0 && time.Duration(s)*time.Second != interval {
			interval = time.Duration(s) * time.Second
			select {
			case reportC <- interval:
			default:
			}
		}
		var reply *pb.ProxyMessage
		err = deltaErr
		if err == nil {
			err = c.Target.Apply(snap)
		}
		if err != nil {
			c.Log.Error("config rejected; keeping the last good config", "version", snap.GetVersion(), "err", err)
			reply = &pb.ProxyMessage{Message: &pb.ProxyMessage_Nack{Nack: &pb.Nack{Version: snap.GetVersion(), Error: err.Error()}}}
		} else {
			c.Log.Info("config applied", "version", snap.GetVersion(), "hash", short(snap.GetHash()), "services", len(snap.GetServices()), "policies", len(snap.GetPolicies()))
			reply = &pb.ProxyMessage{Message: &pb.ProxyMessage_Ack{Ack: &pb.Ack{Version: snap.GetVersion(), Hash: snap.GetHash()}}}
			c.last = snap
		}
		select {
		case out <- reply:
		case <-sctx.Done():
			return sctx.Err()
		}
		if reply.GetAck() != nil && !slices.EqualFunc(c.bundle, snap.GetTrustBundle(), bytes.Equal) {
			c.bundle = snap.GetTrustBundle()
			wake(reportDue)
		}
	}
}

// reportMessage wraps the current Report.
func (c *Client) reportMessage() *pb.ProxyMessage {
	return &pb.ProxyMessage{Message: &pb.ProxyMessage_Report{Report: c.Target.Report()}}
}

// wake sends on c without blocking; a pending signal suffices.
func wake(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// controlRoots verifies the control plane: Roots (--ca-file) without a
// certificate manager, else the roots it keeps (see
// workloadcert.Manager.ControlRoots).
func (c *Client) controlRoots() *x509.CertPool {
	if c.Certs == nil {
		return c.Roots
	}
	return c.Certs.ControlRoots()
}
