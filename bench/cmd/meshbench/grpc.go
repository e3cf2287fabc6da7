package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

// The gRPC run uses one unary method carrying raw bytes: no generated
// code. The codec is forced on both sides, so the message is the payload
// itself. It calls itself "proto" so that the content-type on the wire is
// the usual application/grpc+proto.
const (
	grpcService = "meshbench.Bench"
	grpcMethod  = "/" + grpcService + "/Unary"
)

// rawCodec marshals a *[]byte as its bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

// Unmarshal copies: gRPC may reuse data once this returns.
func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// newGRPCUpstream is a gRPC server whose Unary method reads a request of
// any size and answers with body.
func newGRPCUpstream(body []byte) *grpc.Server {
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: grpcService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Unary",
			Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				var in []byte
				if err := dec(&in); err != nil {
					return nil, err
				}
				return &body, nil
			},
		}},
	}, struct{}{})
	return srv
}

// payload is n bytes of a-z, the body of every request and response.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// grpcConn is one client connection (one HTTP/2 connection: the
// passthrough resolver gives every ClientConn its own).
type grpcConn struct {
	cc   *grpc.ClientConn
	req  []byte
	resp []byte
	body int // expected response size
}

// dialGRPC connects to addr and waits until the connection is ready.
func dialGRPC(addr string, reqSize, body int, timeout time.Duration) (*grpcConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		if s == connectivity.Ready {
			break
		}
		if !cc.WaitForStateChange(ctx, s) {
			cc.Close()
			return nil, fmt.Errorf("grpc %s: not ready after %s (%s)", addr, timeout, s)
		}
	}
	return &grpcConn{cc: cc, req: payload(reqSize), body: body}, nil
}

// do makes one unary call and checks the response size.
func (g *grpcConn) do() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.resp = g.resp[:0]
	if err := g.cc.Invoke(ctx, grpcMethod, &g.req, &g.resp); err != nil {
		return err
	}
	if len(g.resp) != g.body {
		return fmt.Errorf("grpc: %d bytes, want %d", len(g.resp), g.body)
	}
	return nil
}

func (g *grpcConn) close() { g.cc.Close() }

// serveGRPC serves the gRPC upstream on addr until it fails.
func serveGRPC(addr string, body []byte) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return newGRPCUpstream(body).Serve(l)
}

// awaitGRPC waits until a unary call to addr succeeds with a response of
// size bytes, or one of ps exits.
func awaitGRPC(ctx context.Context, addr string, size int, timeout time.Duration, ps ...*proc) error {
	return await(ctx, timeout, ps, func() error {
		g, err := dialGRPC(addr, size, size, 2*time.Second)
		if err != nil {
			return err
		}
		defer g.close()
		return g.do()
	}, func(last error) error {
		return fmt.Errorf("grpc %s not serving after %s: %v", addr, timeout, last)
	})
}
