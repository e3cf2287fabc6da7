package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	grpcService      = "meshbench.Bench"
	grpcMethod       = "/" + grpcService + "/Unary"
	grpcStreamMethod = "/" + grpcService + "/Stream"
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
// any size and answers with body, and whose bidirectional Stream method
// answers each message with the same message.
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
		Streams: []grpc.StreamDesc{{
			StreamName:    "Stream",
			ServerStreams: true,
			ClientStreams: true,
			Handler: func(_ any, st grpc.ServerStream) error {
				var msg []byte
				for {
					if err := st.RecvMsg(&msg); err != nil {
						if errors.Is(err, io.EOF) {
							return nil
						}
						return err
					}
					if err := st.SendMsg(&msg); err != nil {
						return err
					}
				}
			},
		}},
	}, struct{}{})
	return srv
}

// grpcStream is one long-lived bidirectional stream on its own connection:
// each do sends a message and waits for its echo.
type grpcStream struct {
	g      *grpcConn
	st     grpc.ClientStream
	cancel context.CancelFunc
}

// dialGRPCStream connects to addr and opens the stream.
func dialGRPCStream(addr string, size int, timeout time.Duration) (*grpcStream, error) {
	g, err := dialGRPC(addr, size, size, timeout)
	if err != nil {
		return nil, err
	}
	s := &grpcStream{g: g}
	if err := s.open(); err != nil {
		g.close()
		return nil, err
	}
	return s, nil
}

func (s *grpcStream) open() error {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := s.g.cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, grpcStreamMethod)
	if err != nil {
		cancel()
		return err
	}
	s.st, s.cancel = st, cancel
	return nil
}

// do exchanges one message; after a failure the next do opens a new
// stream.
func (s *grpcStream) do() error {
	if s.st == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	err := s.st.SendMsg(&s.g.req)
	if err == nil {
		s.g.resp = s.g.resp[:0]
		err = s.st.RecvMsg(&s.g.resp)
	}
	if err == nil && len(s.g.resp) != s.g.body {
		err = fmt.Errorf("grpc stream: %d bytes, want %d", len(s.g.resp), s.g.body)
	}
	if err != nil {
		s.cancel()
		s.st = nil
	}
	return err
}

func (s *grpcStream) close() {
	if s.st != nil {
		_ = s.st.CloseSend()
		s.cancel()
	}
	s.g.close()
}

// awaitStream waits until a message of size bytes comes back on a stream
// to addr, or one of ps exits.
func awaitStream(ctx context.Context, addr string, size int, timeout time.Duration, ps ...*proc) error {
	return await(ctx, timeout, ps, func() error {
		s, err := dialGRPCStream(addr, size, 2*time.Second)
		if err != nil {
			return err
		}
		defer s.close()
		return s.do()
	}, func(last error) error {
		return fmt.Errorf("grpc stream %s not echoed after %s: %v", addr, timeout, last)
	})
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
