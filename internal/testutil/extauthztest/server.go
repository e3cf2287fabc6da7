// Package extauthztest is an external authorization server for tests: a
// small implementation of Envoy's ext_authz gRPC API
// (envoy.service.auth.v3.Authorization/Check) written only against the
// Envoy API types, standing in for OPA's Envoy plugin and other servers
// that are not part of Trellis. It knows nothing of Trellis. Only tests
// import it.
package extauthztest

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// The default decision (Decide): a path under DenyPrefix is denied
// with 401, DenyBody, X-Ext-Reason: path (and X-Ext-Secret, which a
// proxy not told to pass it must drop); one under SlowPrefix is answered
// after Slow; every other request is allowed with X-Ext-User set to the
// caller's principal (and X-Ext-Secret, likewise).
const (
	DenyPrefix = "/deny"
	SlowPrefix = "/slow"
	DenyBody   = "denied by the test ext_authz server\n"
	Slow       = time.Second
)

// Server is an ext_authz gRPC server on loopback.
type Server struct {
	// Decide answers a check; nil means the default decision above.
	Decide func(*authv3.CheckRequest) *authv3.CheckResponse

	authv3.UnimplementedAuthorizationServer
	addr   string
	srv    *grpc.Server
	checks atomic.Int64
	mu     sync.Mutex
	last   *authv3.CheckRequest
}

// Start serves s on a loopback port until the test ends (or Stop).
func Start(t testing.TB, s *Server) *Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	s.serve(lis)
	t.Cleanup(s.Stop)
	return s
}

// Restart serves s again on the address it had; the port must be free.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	s.serve(lis)
}

func (s *Server) serve(lis net.Listener) {
	s.srv = grpc.NewServer()
	authv3.RegisterAuthorizationServer(s.srv, s)
	go s.srv.Serve(lis)
}

// Addr is host:port.
func (s *Server) Addr() string { return s.addr }

// Stop closes the listener and every connection.
func (s *Server) Stop() { s.srv.Stop() }

// Checks counts the checks answered.
func (s *Server) Checks() int64 { return s.checks.Load() }

// Last is the last check received, nil before any.
func (s *Server) Last() *authv3.CheckRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Check implements envoy.service.auth.v3.Authorization.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.mu.Lock()
	s.last = req
	s.mu.Unlock()
	decide := s.Decide
	if decide == nil {
		decide = Default
	}
	if strings.HasPrefix(req.GetAttributes().GetRequest().GetHttp().GetPath(), SlowPrefix) {
		select {
		case <-time.After(Slow):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	resp := decide(req)
	s.checks.Add(1)
	return resp, nil
}

// Default is the default decision.
func Default(req *authv3.CheckRequest) *authv3.CheckResponse {
	if strings.HasPrefix(req.GetAttributes().GetRequest().GetHttp().GetPath(), DenyPrefix) {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Body:    DenyBody,
				Headers: []*corev3.HeaderValueOption{header("x-ext-reason", "path"), header("x-ext-secret", "s3cret")},
			}},
		}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{header("x-ext-user", req.GetAttributes().GetSource().GetPrincipal()), header("x-ext-secret", "s3cret")},
		}},
	}
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}
