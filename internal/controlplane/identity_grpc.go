package controlplane

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane/resstore"
	"github.com/trellismesh/trellis/internal/controlplane/tokens"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/jointoken"
	"github.com/trellismesh/trellis/internal/meshca"
)

// maxCSRBytes bounds the CSR accepted by Certify.
const maxCSRBytes = 16 << 10

// WorkloadTokenReviewer checks a workload token that is no join token and
// returns the identity it proves; the error of a refused token says why
// (never quoting the token).
type WorkloadTokenReviewer interface {
	ReviewWorkloadToken(ctx context.Context, token string) (id spiffeid.ID, attrs map[string]string, err error)
}

// identityServer implements the Identity gRPC service.
type identityServer struct {
	pb.UnimplementedIdentityServer
	ca      *meshca.CA
	tokens  *tokens.Service
	res     *resstore.Resources
	log     *slog.Logger
	metrics *metrics
	// ttlOverride replaces the mesh's workloadTTL when set (tests).
	ttlOverride time.Duration
	audit       *audit
	// reviewer, when set, checks tokens that are no join tokens
	// (Config.WorkloadTokens).
	reviewer WorkloadTokenReviewer
}

func (s *identityServer) Certify(ctx context.Context, req *pb.CertifyRequest) (*pb.CertifyResponse, error) {
	resp, via, id, err := s.certify(ctx, req)
	if err != nil {
		st, _ := status.FromError(err)
		s.metrics.certifyFailures.WithLabelValues(st.Code().String()).Inc()
		s.log.Warn("certify refused", "code", st.Code().String(), "reason", st.Message(), "peer", peerAddr(ctx), "spiffe_id", id)
		return nil, err
	}
	s.metrics.certsIssued.WithLabelValues(via).Inc()
	return resp, nil
}

func (s *identityServer) certify(ctx context.Context, req *pb.CertifyRequest) (_ *pb.CertifyResponse, via, id string, _ error) {
	if len(req.GetCsr()) == 0 {
		return nil, "", "", status.Error(codes.InvalidArgument, "csr is empty: send a DER-encoded PKCS#10 request")
	}
	if len(req.GetCsr()) > maxCSRBytes {
		return nil, "", "", status.Errorf(codes.InvalidArgument, "csr is %d bytes, more than the %d allowed", len(req.GetCsr()), maxCSRBytes)
	}
	var want spiffeid.ID
	var tokenID string
	if req.GetToken() != "" && s.reviewer != nil && !jointoken.LooksLikeJoinToken(req.GetToken()) {
		via = "serviceaccount"
		id, attrs, err := s.reviewer.ReviewWorkloadToken(ctx, req.GetToken())
		if err != nil {
			s.audit.record(&pb.Event{Kind: "cert.refused", Decision: "deny", Reason: err.Error(), Attributes: map[string]string{"via": via, "peer": peerAddr(ctx)}})
			return nil, via, "", status.Errorf(codes.Unauthenticated, "service account token refused: %v", err)
		}
		if id.TrustDomain() != s.ca.TrustDomain() {
			return nil, via, id.String(), status.Errorf(codes.PermissionDenied, "service account token proves %s, outside trust domain %s", id, s.ca.TrustDomain())
		}
		want, tokenID = id, attrs["pod_uid"]
	} else if req.GetToken() != "" {
		via = "token"
		claims, err := s.tokens.Verify(ctx, req.GetToken())
		switch {
		case errors.Is(err, jointoken.ErrExpired):
			return nil, via, "", status.Errorf(codes.Unauthenticated, "join token expired or not yet valid: %v; create a new one with `trellis token create`", err)
		case errors.Is(err, jointoken.ErrInvalid):
			return nil, via, "", status.Errorf(codes.Unauthenticated, "join token rejected: %v", err)
		case errors.Is(err, tokens.ErrRevoked):
			return nil, via, "", status.Errorf(codes.PermissionDenied, "%v", err)
		case err != nil:
			return nil, via, "", status.Errorf(codes.Internal, "check join token: %v", err)
		}
		want, tokenID = claims.SPIFFEID, claims.ID
	} else {
		via = "renewal"
		got, err := s.peerWorkloadID(ctx)
		if err != nil {
			return nil, via, "", err
		}
		// A ServiceAccount identity renews with its token: the
		// certificate alone does not prove its pod still lives.
		if s.reviewer != nil {
			issued, err := s.tokens.AnyIssued(ctx, got.String())
			if err != nil {
				return nil, via, got.String(), status.Errorf(codes.Unavailable, "read join tokens: %v", err)
			}
			if !issued {
				return nil, via, got.String(), status.Error(codes.PermissionDenied, "renewal refused: a ServiceAccount identity renews with its ServiceAccount token (the certificate alone does not prove its pod still lives)")
			}
		}
		// Renewal lasts only as long as the identity's tokens: once every
		// token for it is revoked, its certificates are not renewed.
		if err := s.tokens.Entitled(ctx, got.String(), ""); err != nil {
			return nil, via, got.String(), status.Errorf(codes.PermissionDenied, "renewal refused: %v", err)
		}
		want = got
	}
	if want == identity.ControlPlaneID(s.ca.TrustDomain()) {
		return nil, via, want.String(), status.Error(codes.PermissionDenied, "the control plane's own identity is never issued through Certify")
	}
	mesh, err := s.res.Mesh(ctx)
	if err != nil {
		return nil, via, want.String(), status.Errorf(codes.Unavailable, "read mesh settings: %v", err)
	}
	ttl := mesh.Certificates.WorkloadTTL.Duration
	if s.ttlOverride > 0 {
		ttl = s.ttlOverride
	}
	leaf, err := s.ca.SignCSR(req.GetCsr(), want, ttl)
	switch {
	case errors.Is(err, meshca.ErrBadCSR):
		return nil, via, want.String(), status.Errorf(codes.InvalidArgument, "%v", err)
	case errors.Is(err, meshca.ErrWrongIdentity):
		return nil, via, want.String(), status.Errorf(codes.PermissionDenied, "%v", err)
	case errors.Is(err, meshca.ErrCAUnavailable):
		return nil, via, want.String(), status.Errorf(codes.FailedPrecondition, "%v", err)
	case err != nil:
		return nil, via, want.String(), status.Errorf(codes.Internal, "sign: %v", err)
	}
	resp := &pb.CertifyResponse{
		Leaf:      leaf.Cert.Raw,
		ExpiresAt: timestamppb.New(leaf.Cert.NotAfter),
		SpiffeId:  want.String(),
	}
	for _, c := range leaf.Intermediates {
		resp.Intermediates = append(resp.Intermediates, c.Raw)
	}
	for _, c := range leaf.Roots {
		resp.TrustBundle = append(resp.TrustBundle, c.Raw)
	}
	s.audit.record(&pb.Event{Kind: "cert.issued", SourceId: want.String(), Attributes: map[string]string{
		"via": via, "token_id": tokenID, "serial": leaf.Cert.SerialNumber.Text(16), "expires": leaf.Cert.NotAfter.UTC().Format(time.RFC3339), "peer": peerAddr(ctx),
	}})
	s.log.Info("certificate issued", "spiffe_id", want.String(), "via", via, "token_id", tokenID,
		"serial", leaf.Cert.SerialNumber.Text(16), "expires", leaf.Cert.NotAfter.UTC().Format(time.RFC3339), "peer", peerAddr(ctx))
	return resp, via, want.String(), nil
}

// peerWorkloadID returns the workload identity in the verified TLS client
// certificate, for renewal.
func (s *identityServer) peerWorkloadID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "no join token and no client certificate")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "no join token and no client certificate: send a token from `trellis token create`, or renew with your current certificate")
	}
	id, err := identity.SPIFFEIDFromCert(info.State.VerifiedChains[0][0])
	if err != nil {
		return spiffeid.ID{}, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	if id.TrustDomain() != s.ca.TrustDomain() {
		return spiffeid.ID{}, status.Errorf(codes.PermissionDenied, "client certificate names trust domain %s, not %s", id.TrustDomain(), s.ca.TrustDomain())
	}
	if id == identity.ControlPlaneID(s.ca.TrustDomain()) {
		return spiffeid.ID{}, status.Error(codes.PermissionDenied, "the control plane's own identity cannot be renewed through Certify")
	}
	if _, _, _, err := identity.ParseWorkloadID(id.String()); err != nil {
		return spiffeid.ID{}, status.Errorf(codes.PermissionDenied, "client certificate: %v", err)
	}
	return id, nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
