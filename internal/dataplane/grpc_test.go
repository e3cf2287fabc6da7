package dataplane_test

import (
	"context"
	"errors"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// counterService is a hand-written gRPC service (no generated code):
// Count streams 0..n-1 back, then ends with trailers and a non-OK status so
// the test sees trailers cross both proxies; Echo is bidirectional.
var counterService = grpc.ServiceDesc{
	ServiceName: "trellis.test.Counter",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "Count", ServerStreams: true, Handler: countHandler},
		{StreamName: "Echo", ServerStreams: true, ClientStreams: true, Handler: echoHandler},
	},
}

func countHandler(_ any, stream grpc.ServerStream) error {
	in := new(wrapperspb.Int32Value)
	if err := stream.RecvMsg(in); err != nil {
		return err
	}
	if err := stream.SendHeader(metadata.Pairs("x-started", "yes")); err != nil {
		return err
	}
	for i := range in.Value {
		if err := stream.SendMsg(wrapperspb.Int32(i)); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.Pairs("x-count", strconv.Itoa(int(in.Value))))
	return status.Error(codes.OutOfRange, "counted to "+strconv.Itoa(int(in.Value)))
}

func echoHandler(_ any, stream grpc.ServerStream) error {
	for {
		in := new(wrapperspb.StringValue)
		if err := stream.RecvMsg(in); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := stream.SendMsg(wrapperspb.String("echo " + in.Value)); err != nil {
			return err
		}
	}
}

func startGRPCApp(t *testing.T) (string, *health.Server) {
	t.Helper()
	l := listen(t)
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	srv.RegisterService(&counterService, struct{}{})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String(), hs
}

func grpcClient(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestGRPCUnary(t *testing.T) {
	appAddr, hs := startGRPCApp(t)
	hs.SetServingStatus("catalog", healthpb.HealthCheckResponse_SERVING)
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: appAddr})
	client := healthpb.NewHealthClient(grpcClient(t, m.upstreamAddr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for i := 0; i < 3; i++ {
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "catalog"})
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check: status %v, want SERVING", resp.Status)
		}
	}
	// An error status travels in a trailers-only response.
	_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if got := status.Code(err); got != codes.NotFound {
		t.Errorf("Check(unknown service): code %v (%v), want NotFound", got, err)
	}
}

func TestGRPCStreaming(t *testing.T) {
	appAddr, hs := startGRPCApp(t)
	hs.SetServingStatus("catalog", healthpb.HealthCheckResponse_NOT_SERVING)
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: appAddr})
	cc := grpcClient(t, m.upstreamAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("server streaming with trailers", func(t *testing.T) {
		stream, err := cc.NewStream(ctx, &counterService.Streams[0], "/trellis.test.Counter/Count")
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(wrapperspb.Int32(50)); err != nil {
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		hdr, err := stream.Header()
		if err != nil || len(hdr.Get("x-started")) != 1 {
			t.Errorf("header metadata %v (%v), want x-started", hdr, err)
		}
		var got []int32
		for {
			msg := new(wrapperspb.Int32Value)
			err := stream.RecvMsg(msg)
			if err != nil {
				if got := status.Code(err); got != codes.OutOfRange || status.Convert(err).Message() != "counted to 50" {
					t.Errorf("stream ended with %v, want OutOfRange \"counted to 50\"", err)
				}
				break
			}
			got = append(got, msg.Value)
		}
		if len(got) != 50 || got[0] != 0 || got[49] != 49 {
			t.Errorf("received %d messages %v, want 0..49", len(got), got)
		}
		if tr := stream.Trailer().Get("x-count"); len(tr) != 1 || tr[0] != "50" {
			t.Errorf("trailer x-count %q, want [50]", tr)
		}
	})

	t.Run("health watch", func(t *testing.T) {
		w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{Service: "catalog"})
		if err != nil {
			t.Fatal(err)
		}
		first, err := w.Recv()
		if err != nil || first.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("first update %v (%v), want NOT_SERVING", first, err)
		}
		// The update must arrive while the stream stays open: nothing may
		// wait for the end of the response.
		hs.SetServingStatus("catalog", healthpb.HealthCheckResponse_SERVING)
		next, err := w.Recv()
		if err != nil || next.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("second update %v (%v), want SERVING", next, err)
		}
	})

	t.Run("bidirectional", func(t *testing.T) {
		stream, err := cc.NewStream(ctx, &counterService.Streams[1], "/trellis.test.Counter/Echo")
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			want := "ping " + strconv.Itoa(i)
			if err := stream.SendMsg(wrapperspb.String(want)); err != nil {
				t.Fatal(err)
			}
			got := new(wrapperspb.StringValue)
			if err := stream.RecvMsg(got); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if got.Value != "echo "+want {
				t.Errorf("got %q, want %q", got.Value, "echo "+want)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if err := stream.RecvMsg(new(wrapperspb.StringValue)); !errors.Is(err, io.EOF) {
			t.Errorf("after CloseSend: %v, want io.EOF (status OK)", err)
		}
	})
}
