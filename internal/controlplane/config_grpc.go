package controlplane

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane/registry"
	"github.com/trellismesh/trellis/internal/controlplane/tokens"
	"github.com/trellismesh/trellis/internal/identity"
)

// Why the control plane ends a stream (context causes).
var (
	errStreamReplaced = errors.New("replaced by a newer stream from the same proxy instance")
	errShuttingDown   = errors.New("control plane shutting down; reconnect with backoff")
)

// configServer implements Config.Stream (rules in config.proto).
type configServer struct {
	pb.UnimplementedConfigServer
	td      spiffeid.TrustDomain
	push    *pusher
	tokens  *tokens.Service
	log     *slog.Logger
	metrics *metrics
	// base is cancelled when the server closes; every stream ends with it.
	base context.Context
}

func (s *configServer) Stream(stream pb.Config_StreamServer) error {
	err := s.stream(stream)
	if code := status.Code(err); code != codes.OK && code != codes.Canceled {
		s.metrics.streamErrors.WithLabelValues(code.String()).Inc()
	}
	return err
}

func (s *configServer) stream(stream pb.Config_StreamServer) error {
	ctx := stream.Context()
	id, ns, err := s.peerWorkload(ctx)
	if err != nil {
		s.log.Warn("config stream refused", "err", err, "peer", peerAddr(ctx))
		return err
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "config stream closed before hello")
	}
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Errorf(codes.InvalidArgument, "the first message on a config stream must be hello, got %s", messageKind(first))
	}
	w, err := checkHello(hello, id.String(), ns)
	if err != nil {
		s.log.Warn("config stream refused", "err", err, "spiffe_id", id.String(), "peer", peerAddr(ctx))
		return err
	}

	// The service is not in the certificate (only namespace and service
	// account are): it must be one a join token for this identity named,
	// so no workload can register under another service's name.
	if err := s.tokens.Entitled(ctx, id.String(), w.Service); err != nil {
		s.log.Warn("config stream refused", "err", err, "spiffe_id", id.String(), "service", w.Service, "peer", peerAddr(ctx))
		return status.Errorf(codes.PermissionDenied, "hello: %v", err)
	}

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopOnClose := context.AfterFunc(s.base, func() { cancel(errShuttingDown) })
	defer stopOnClose()
	ps := newProxyStream(cancel)
	if err := s.push.reg.Connect(w, hello.GetProxyVersion(), hello.GetRunningVersion(), hello.GetRunningHash(), ps); err != nil {
		s.log.Warn("config stream refused", "err", err, "spiffe_id", id.String(), "peer", peerAddr(ctx))
		if errors.Is(err, registry.ErrTooManyInstances) {
			return status.Errorf(codes.ResourceExhausted, "hello: %v", err)
		}
		return status.Errorf(codes.PermissionDenied, "hello: %v; generate a new instance value", err)
	}
	defer func() {
		if s.push.reg.Disconnect(w.Instance, ps) {
			s.push.conv.gone(w.Instance)
		}
	}()
	s.push.kickJoined()
	log := s.log.With("instance", w.Instance, "spiffe_id", w.SPIFFEID, "service", w.Service, "namespace", w.Namespace)
	log.Info("proxy connected", "advertise_addr", w.AdvertiseAddr, "protocol", w.Protocol, "proxy_version", hello.GetProxyVersion(),
		"running_version", hello.GetRunningVersion(), "peer", peerAddr(ctx))

	// Receive on a goroutine of its own so this one can send: a proxy
	// that stops reading blocks only its own stream. When this handler
	// returns, gRPC ends the stream and the pending Recv returns.
	recvErr := make(chan error, 1)
	go func() { recvErr <- s.receive(stream, w.Instance, ps, log) }()
	ds := deltaSender{enabled: hello.GetAcceptsDeltas()}
	for {
		select {
		case snap := <-ps.slot:
			msg := ds.message(snap)
			if err := stream.Send(msg); err != nil {
				log.Info("proxy disconnected", "err", err)
				return err
			}
			s.metrics.snapshotPushes.Inc()
			if msg.GetDelta() != nil {
				s.metrics.deltaPushes.Inc()
			}
			log.Debug("snapshot sent", "version", snap.GetVersion(), "hash", snap.GetHash(), "delta", msg.GetDelta() != nil)
		case v := <-ps.resync:
			snap := ds.resync(v)
			if snap == nil {
				continue
			}
			if err := stream.Send(&pb.ControlMessage{Message: &pb.ControlMessage_Snapshot{Snapshot: snap}}); err != nil {
				log.Info("proxy disconnected", "err", err)
				return err
			}
			s.metrics.snapshotPushes.Inc()
			log.Info("delta refused by the proxy; sent the whole snapshot", "version", v)
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				log.Info("proxy disconnected")
				return nil
			}
			log.Info("proxy disconnected", "err", err)
			return err
		case <-sctx.Done():
			cause := context.Cause(sctx)
			switch {
			case errors.Is(cause, errStreamReplaced):
				log.Info("config stream closed", "reason", cause)
				return status.Error(codes.Aborted, cause.Error())
			case errors.Is(cause, errShuttingDown):
				log.Info("config stream closed", "reason", cause)
				return status.Error(codes.Unavailable, cause.Error())
			default:
				log.Info("proxy disconnected", "err", cause)
				return status.FromContextError(ctx.Err()).Err()
			}
		}
	}
}

// receive handles the proxy's answers until the stream ends.
func (s *configServer) receive(stream pb.Config_StreamServer, instance string, ps *proxyStream, log *slog.Logger) error {
	reg := s.push.reg
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		switch m := msg.GetMessage().(type) {
		case *pb.ProxyMessage_Ack:
			s.metrics.acks.Inc()
			reg.Ack(instance, ps, m.Ack)
			log.Debug("snapshot acked", "version", m.Ack.GetVersion(), "hash", m.Ack.GetHash())
		case *pb.ProxyMessage_Nack:
			s.metrics.nacks.Inc()
			reg.Nack(instance, ps, m.Nack)
			ps.askResync(m.Nack.GetVersion())
			log.Warn("snapshot rejected by proxy", "version", m.Nack.GetVersion(), "error", m.Nack.GetError())
		case *pb.ProxyMessage_Report:
			if err := registry.CheckReport(m.Report); err != nil {
				return status.Errorf(codes.InvalidArgument, "report: %v", err)
			}
			reg.Report(instance, ps, m.Report)
		case *pb.ProxyMessage_Discover:
			if err := s.discover(instance, ps, m.Discover); err != nil {
				return err
			}
		case *pb.ProxyMessage_Hello:
			return status.Error(codes.InvalidArgument, "hello may only be the first message; open a new stream to register again")
		default:
			return status.Error(codes.InvalidArgument, "empty proxy message: send ack, nack, report or discover")
		}
	}
}

// peerWorkload returns the workload identity in the stream's verified
// client certificate and the namespace it names. A stream is bound to that
// identity, so a certificate is required.
func (s *configServer) peerWorkload(ctx context.Context) (spiffeid.ID, string, error) {
	p, ok := peer.FromContext(ctx)
	var info credentials.TLSInfo
	if ok {
		info, ok = p.AuthInfo.(credentials.TLSInfo)
	}
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return spiffeid.ID{}, "", status.Error(codes.Unauthenticated, "config stream needs a client certificate: connect with the workload certificate from Identity.Certify")
	}
	id, err := identity.SPIFFEIDFromCert(info.State.VerifiedChains[0][0])
	if err != nil {
		return spiffeid.ID{}, "", status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	if id.TrustDomain() != s.td {
		return spiffeid.ID{}, "", status.Errorf(codes.PermissionDenied, "client certificate names trust domain %s, not %s", id.TrustDomain(), s.td)
	}
	_, ns, _, err := identity.ParseWorkloadID(id.String())
	if err != nil || id == identity.ControlPlaneID(s.td) {
		return spiffeid.ID{}, "", status.Errorf(codes.PermissionDenied, "client certificate %s is not a workload identity", id)
	}
	return id, ns, nil
}

func messageKind(m *pb.ProxyMessage) string {
	switch m.GetMessage().(type) {
	case *pb.ProxyMessage_Ack:
		return "ack"
	case *pb.ProxyMessage_Nack:
		return "nack"
	case *pb.ProxyMessage_Report:
		return "report"
	case *pb.ProxyMessage_Discover:
		return "discover"
	default:
		return "an empty message"
	}
}
