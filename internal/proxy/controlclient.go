package proxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// maxSnapshotBytes bounds one pushed snapshot.
const maxSnapshotBytes = 64 << 20

// ControlClient keeps one Config stream open to the control plane: it sends
// Hello, applies every Snapshot through Apply (ACK on success, NACK with the
// error otherwise, keeping the last good config), reports what it runs, and
// reconnects with exponential backoff and jitter. While disconnected the
// proxy keeps serving with its last good config.
type ControlClient struct {
	Addr  string
	Roots *x509.CertPool // verify the control plane
	Certs *CertManager   // client certificate (required by the stream)
	Hello *pb.Hello      // sent first on every stream; running_* are filled in
	// Apply compiles and swaps in a snapshot; an error NACKs it.
	Apply func(*pb.Snapshot) error
	// Running returns the version and hash in use ("" before the first).
	Running func() (version, hash string)
	Log     *slog.Logger

	// OnConnect/OnDisconnect, when set, observe the stream's state.
	OnConnect    func()
	OnDisconnect func(error)
}

// Run keeps the stream up until ctx ends.
func (c *ControlClient) Run(ctx context.Context) {
	tlsCfg := controlTLSConfig(c.Roots, c.Certs.Certificate, saControl)
	conn, err := grpc.NewClient(c.Addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Snapshots of large meshes exceed gRPC's 4 MiB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxSnapshotBytes)),
	)
	if err != nil {
		c.Log.Error("config stream: bad control plane address", "control", c.Addr, "err", err)
		return
	}
	defer conn.Close()
	client := pb.NewConfigClient(conn)
	b := newBackoff(250*time.Millisecond, 30*time.Second)
	for ctx.Err() == nil {
		start := time.Now()
		err := c.stream(ctx, client)
		if ctx.Err() != nil {
			return
		}
		if c.OnDisconnect != nil {
			c.OnDisconnect(err)
		}
		// A stream that stayed up a while was healthy: start backing off
		// from the bottom again.
		if time.Since(start) > time.Minute {
			b.reset()
		}
		d := b.next()
		c.Log.Warn("config stream down; serving with the last good config", "control", c.Addr, "err", err, "retry_in", d.Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

func (c *ControlClient) stream(ctx context.Context, client pb.ConfigClient) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.Stream(sctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	hello := proto.Clone(c.Hello).(*pb.Hello)
	hello.RunningVersion, hello.RunningHash = c.Running()
	if err := st.Send(&pb.ProxyMessage{Message: &pb.ProxyMessage_Hello{Hello: hello}}); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	if c.OnConnect != nil {
		c.OnConnect()
	}
	// Receiving runs here; reports go out from a ticker goroutine. Sends
	// are serialized through sendMu-free ownership: only this goroutine
	// sends acks, the reporter sends through the same channel.
	out := make(chan *pb.ProxyMessage, 4)
	errc := make(chan error, 1)
	go func() {
		for {
			select {
			case <-sctx.Done():
				return
			case m := <-out:
				if err := st.Send(m); err != nil {
					select {
					case errc <- fmt.Errorf("send: %w", err):
					default:
					}
					cancel()
					return
				}
			}
		}
	}()
	interval := 30 * time.Second
	reportC := make(chan time.Duration, 1)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case d := <-reportC:
				t.Reset(d)
			case <-t.C:
				v, h := c.Running()
				select {
				case out <- &pb.ProxyMessage{Message: &pb.ProxyMessage_Report{Report: &pb.Report{RunningVersion: v, RunningHash: h}}}:
				case <-sctx.Done():
					return
				}
			}
		}
	}()
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
		if err := c.Apply(snap); err != nil {
			c.Log.Error("config rejected; keeping the last good config", "version", snap.GetVersion(), "err", err)
			reply = &pb.ProxyMessage{Message: &pb.ProxyMessage_Nack{Nack: &pb.Nack{Version: snap.GetVersion(), Error: err.Error()}}}
		} else {
			c.Log.Info("config applied", "version", snap.GetVersion(), "hash", short(snap.GetHash()), "services", len(snap.GetServices()), "policies", len(snap.GetPolicies()))
			reply = &pb.ProxyMessage{Message: &pb.ProxyMessage_Ack{Ack: &pb.Ack{Version: snap.GetVersion(), Hash: snap.GetHash()}}}
		}
		select {
		case out <- reply:
		case <-sctx.Done():
			return sctx.Err()
		}
	}
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
