package dataplane_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellismesh/trellis/internal/dataplane"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

// The HTTP/2 and gRPC conformance table: every kind of call a gRPC user
// makes, through the client proxy's h2c listener, the mTLS h2 hop and
// the server proxy into a grpc-go app, pushed hundreds of times where a
// rare failure could hide.

// confApp is a hand-written gRPC service for the table.
type confApp struct {
	// cancelled counts handlers that saw their context end before they
	// finished (deadline or cancellation propagated to the app).
	cancelled atomic.Int64
	// sleeping counts handlers that began an x-sleep-ms wait.
	sleeping atomic.Int64
	// floodSent counts the bytes Flood handed to the transport.
	floodSent atomic.Int64
}

var confService = grpc.ServiceDesc{
	ServiceName: "trellis.test.Conformance",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Echo", Handler: confEcho},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "Sum", ClientStreams: true, Handler: confSum},
		{StreamName: "Flood", ServerStreams: true, Handler: confFlood},
		{StreamName: "Wait", ServerStreams: true, ClientStreams: true, Handler: confWait},
	},
}

// confEcho returns the request's bytes; metadata x-code and x-message
// make it fail with that status, x-sleep-ms makes it wait (watching its
// context), and x-echo comes back as header and trailer metadata.
func confEcho(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	app := srv.(*confApp)
	in := new(wrapperspb.BytesValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-echo"); len(v) > 0 {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-echo", v[0]))
		_ = grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailer", v[0]))
	}
	if v := md.Get("x-echo-bin"); len(v) > 0 {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-echo-bin", v[0]))
	}
	if v := md.Get("x-sleep-ms"); len(v) > 0 {
		ms, _ := strconv.Atoi(v[0])
		app.sleeping.Add(1)
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			app.cancelled.Add(1)
			return nil, ctx.Err()
		}
	}
	if v := md.Get("x-code"); len(v) > 0 {
		code, _ := strconv.Atoi(v[0])
		// The message crosses the proxies percent-encoded (grpc-message).
		return nil, status.Error(codes.Code(code), md.Get("x-message")[0]+": ünïcode, 100% and\ttabs")
	}
	return in, nil
}

// confSum reads every message and answers their total size; after
// x-stop-after messages it answers early with FailedPrecondition.
func confSum(_ any, stream grpc.ServerStream) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	stop := -1
	if v := md.Get("x-stop-after"); len(v) > 0 {
		stop, _ = strconv.Atoi(v[0])
	}
	total, n := 0, 0
	for {
		in := new(wrapperspb.BytesValue)
		err := stream.RecvMsg(in)
		if errors.Is(err, io.EOF) {
			return stream.SendMsg(wrapperspb.Int64(int64(total)))
		}
		if err != nil {
			return err
		}
		total += len(in.Value)
		n++
		if n == stop {
			return status.Error(codes.FailedPrecondition, "enough after "+strconv.Itoa(n))
		}
	}
}

// confFlood sends 64 KiB messages until the client goes away.
func confFlood(srv any, stream grpc.ServerStream) error {
	app := srv.(*confApp)
	in := new(wrapperspb.Int32Value)
	if err := stream.RecvMsg(in); err != nil {
		return err
	}
	msg := wrapperspb.Bytes(bytes.Repeat([]byte{'f'}, 64<<10))
	for i := int32(0); in.Value == 0 || i < in.Value; i++ {
		if err := stream.SendMsg(msg); err != nil {
			return err
		}
		app.floodSent.Add(64 << 10)
	}
	return nil
}

// confWait blocks until its context ends, counting the cancellation.
func confWait(srv any, stream grpc.ServerStream) error {
	app := srv.(*confApp)
	_ = stream.SendHeader(metadata.Pairs("x-waiting", "yes"))
	<-stream.Context().Done()
	app.cancelled.Add(1)
	return stream.Context().Err()
}

func startConfApp(t testing.TB) (string, *confApp) {
	t.Helper()
	l := listen(t)
	app := &confApp{}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(8<<20), grpc.MaxSendMsgSize(8<<20))
	srv.RegisterService(&confService, app)
	srv.RegisterService(&counterService, struct{}{})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String(), app
}

func confClient(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)),
	}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func echo(ctx context.Context, cc *grpc.ClientConn, in []byte, opts ...grpc.CallOption) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	err := cc.Invoke(ctx, "/trellis.test.Conformance/Echo", wrapperspb.Bytes(in), out, opts...)
	return out.Value, err
}

func TestGRPCConformance(t *testing.T) {
	appAddr, app := startConfApp(t)
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: appAddr})
	cc := confClient(t, m.upstreamAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("unary, 2000 calls from 40 goroutines on 4 connections", func(t *testing.T) {
		conns := []*grpc.ClientConn{cc, confClient(t, m.upstreamAddr), confClient(t, m.upstreamAddr), confClient(t, m.upstreamAddr)}
		var failed atomic.Int64
		var wg sync.WaitGroup
		for g := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := conns[g%len(conns)]
				for i := range 50 {
					want := []byte("call " + strconv.Itoa(g) + "/" + strconv.Itoa(i))
					got, err := echo(ctx, c, want)
					if err != nil || !bytes.Equal(got, want) {
						if failed.Add(1) < 5 {
							t.Errorf("call %d/%d: %q, %v", g, i, got, err)
						}
					}
				}
			}()
		}
		wg.Wait()
		if n := failed.Load(); n != 0 {
			t.Fatalf("%d of 2000 calls failed", n)
		}
	})

	t.Run("status codes and messages", func(t *testing.T) {
		for code := codes.Canceled; code <= codes.Unauthenticated; code++ {
			msg := "failed: " + code.String()
			ctx := metadata.AppendToOutgoingContext(ctx, "x-code", strconv.Itoa(int(code)), "x-message", msg)
			_, err := echo(ctx, cc, []byte("x"))
			st := status.Convert(err)
			if st.Code() != code || st.Message() != msg+": ünïcode, 100% and\ttabs" {
				t.Errorf("code %v: got %v %q", code, st.Code(), st.Message())
			}
		}
	})

	t.Run("metadata both ways", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(ctx, "x-echo", "hello there", "x-echo-bin", string([]byte{0, 1, 2, 255}))
		var hdr, tr metadata.MD
		if _, err := echo(ctx, cc, []byte("m"), grpc.Header(&hdr), grpc.Trailer(&tr)); err != nil {
			t.Fatal(err)
		}
		if v := hdr.Get("x-echo"); len(v) != 1 || v[0] != "hello there" {
			t.Errorf("header x-echo %q", v)
		}
		if v := hdr.Get("x-echo-bin"); len(v) != 1 || v[0] != string([]byte{0, 1, 2, 255}) {
			t.Errorf("header x-echo-bin %q", v)
		}
		if v := tr.Get("x-echo-trailer"); len(v) != 1 || v[0] != "hello there" {
			t.Errorf("trailer x-echo-trailer %q", v)
		}
	})

	t.Run("server streaming, 2000 messages with trailers", func(t *testing.T) {
		stream, err := cc.NewStream(ctx, &counterService.Streams[0], "/trellis.test.Counter/Count")
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(wrapperspb.Int32(2000)); err != nil {
			t.Fatal(err)
		}
		_ = stream.CloseSend()
		n := int32(0)
		for {
			msg := new(wrapperspb.Int32Value)
			if err := stream.RecvMsg(msg); err != nil {
				if status.Code(err) != codes.OutOfRange {
					t.Errorf("end: %v", err)
				}
				break
			}
			if msg.Value != n {
				t.Fatalf("message %d: got %d", n, msg.Value)
			}
			n++
		}
		if n != 2000 {
			t.Errorf("got %d messages", n)
		}
		if v := stream.Trailer().Get("x-count"); len(v) != 1 || v[0] != "2000" {
			t.Errorf("trailer %q", v)
		}
	})

	t.Run("client streaming, 300 messages of 10 kB", func(t *testing.T) {
		stream, err := cc.NewStream(ctx, &confService.Streams[0], "/trellis.test.Conformance/Sum")
		if err != nil {
			t.Fatal(err)
		}
		chunk := wrapperspb.Bytes(bytes.Repeat([]byte{'s'}, 10_000))
		for range 300 {
			if err := stream.SendMsg(chunk); err != nil {
				t.Fatal(err)
			}
		}
		_ = stream.CloseSend()
		got := new(wrapperspb.Int64Value)
		if err := stream.RecvMsg(got); err != nil || got.Value != 3_000_000 {
			t.Fatalf("sum %d, %v; want 3000000", got.Value, err)
		}
	})

	t.Run("server answers a client stream early", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(ctx, "x-stop-after", "3")
		stream, err := cc.NewStream(ctx, &confService.Streams[0], "/trellis.test.Conformance/Sum")
		if err != nil {
			t.Fatal(err)
		}
		chunk := wrapperspb.Bytes(bytes.Repeat([]byte{'s'}, 1000))
		for range 100 {
			if err := stream.SendMsg(chunk); err != nil {
				break // io.EOF once the server has answered
			}
		}
		err = stream.RecvMsg(new(wrapperspb.Int64Value))
		if st := status.Convert(err); st.Code() != codes.FailedPrecondition || st.Message() != "enough after 3" {
			t.Errorf("got %v, want FailedPrecondition \"enough after 3\"", err)
		}
	})

	t.Run("bidirectional, 500 round trips", func(t *testing.T) {
		stream, err := cc.NewStream(ctx, &counterService.Streams[1], "/trellis.test.Counter/Echo")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 500 {
			want := "ping " + strconv.Itoa(i)
			if err := stream.SendMsg(wrapperspb.String(want)); err != nil {
				t.Fatal(err)
			}
			got := new(wrapperspb.StringValue)
			if err := stream.RecvMsg(got); err != nil || got.Value != "echo "+want {
				t.Fatalf("round trip %d: %q, %v", i, got.Value, err)
			}
		}
		_ = stream.CloseSend()
		if err := stream.RecvMsg(new(wrapperspb.StringValue)); !errors.Is(err, io.EOF) {
			t.Errorf("after CloseSend: %v", err)
		}
	})

	t.Run("1 MB messages both ways, 50 calls", func(t *testing.T) {
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
		for i := range 50 {
			big[i] = byte(i)
			got, err := echo(ctx, cc, big)
			if err != nil || !bytes.Equal(got, big) {
				t.Fatalf("call %d: %d bytes back, %v", i, len(got), err)
			}
		}
	})

	t.Run("deadline exceeded reaches the app", func(t *testing.T) {
		before, began := app.cancelled.Load(), app.sleeping.Load()
		for range 20 {
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-sleep-ms", "10000"), 200*time.Millisecond)
			_, err := echo(ctx, cc, []byte("slow"))
			cancel()
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("got %v, want DeadlineExceeded", err)
			}
		}
		// Every call that reached the app (on a loaded machine a
		// deadline can pass before one does) ends there with it.
		reached := app.sleeping.Load() - began
		if reached < 10 {
			t.Fatalf("only %d of 20 calls with a 200ms deadline reached the app", reached)
		}
		testutil.Eventually(t, "the app to see every deadline", func() bool { return app.cancelled.Load()-before == reached })
	})

	t.Run("cancellation reaches the app", func(t *testing.T) {
		before := app.cancelled.Load()
		for range 20 {
			ctx, cancel := context.WithCancel(ctx)
			stream, err := cc.NewStream(ctx, &confService.Streams[2], "/trellis.test.Conformance/Wait")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Header(); err != nil {
				t.Fatal(err)
			}
			cancel()
			if err := stream.RecvMsg(new(wrapperspb.Int32Value)); status.Code(err) != codes.Canceled {
				t.Errorf("after cancel: %v", err)
			}
		}
		testutil.Eventually(t, "the app to see 20 cancellations", func() bool { return app.cancelled.Load()-before == 20 })
	})

	t.Run("400 concurrent streams on one connection", func(t *testing.T) {
		one := confClient(t, m.upstreamAddr)
		var failed atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := range 400 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stream, err := one.NewStream(ctx, &counterService.Streams[1], "/trellis.test.Counter/Echo")
				if err != nil {
					failed.Add(1)
					return
				}
				<-start
				for i := range 5 {
					want := strconv.Itoa(g) + "." + strconv.Itoa(i)
					got := new(wrapperspb.StringValue)
					if stream.SendMsg(wrapperspb.String(want)) != nil || stream.RecvMsg(got) != nil || got.Value != "echo "+want {
						failed.Add(1)
						return
					}
				}
				_ = stream.CloseSend()
				if err := stream.RecvMsg(new(wrapperspb.StringValue)); !errors.Is(err, io.EOF) {
					failed.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		if n := failed.Load(); n != 0 {
			t.Fatalf("%d of 400 streams failed", n)
		}
	})

	t.Run("a stalled reader holds a bounded amount", func(t *testing.T) {
		// A fixed 64 KiB window on the client: grpc-go then sends no
		// BDP-driven window growth, and stops reading at the app level.
		slow := confClient(t, m.upstreamAddr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		before := app.floodSent.Load()
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		stream, err := slow.NewStream(sctx, &confService.Streams[1], "/trellis.test.Conformance/Flood")
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(wrapperspb.Int32(0)); err != nil {
			t.Fatal(err)
		}
		_ = stream.CloseSend()
		time.Sleep(1500 * time.Millisecond)
		held := app.floodSent.Load() - before
		// Windows on the way: the client's 64 KiB, each proxy's stream
		// window (512 KiB) and the app's own transport buffer, plus the
		// sockets. Without end-to-end flow control the app would send
		// without end.
		if held > 4<<20 {
			t.Fatalf("the app sent %d bytes to a reader that reads nothing: flow control does not reach the app", held)
		}
		// Others are unharmed meanwhile.
		if _, err := echo(ctx, cc, []byte("still there")); err != nil {
			t.Fatalf("another call while a reader stalls: %v", err)
		}
		for i := range 100 {
			msg := new(wrapperspb.BytesValue)
			if err := stream.RecvMsg(msg); err != nil || len(msg.Value) != 64<<10 {
				t.Fatalf("message %d after the stall: %d bytes, %v", i, len(msg.Value), err)
			}
		}
		t.Logf("held %d KiB for a stalled reader", held>>10)
	})

	t.Run("gRPC status counted", func(t *testing.T) {
		if v := metric(t, m.serverMetrics, "trellis_grpc_responses_total", map[string]string{"grpc_status": "0", "direction": "inbound"}); v < 2000 {
			t.Errorf("inbound grpc_status=0: %v, want >= 2000", v)
		}
		if v := metric(t, m.clientMetrics, "trellis_grpc_responses_total", map[string]string{"grpc_status": "3", "direction": "outbound"}); v < 1 {
			t.Errorf("outbound grpc_status=3 (InvalidArgument): %v, want >= 1", v)
		}
	})
}

// TestGRPCDrainUnderLoad drains one of two server proxies while calls run:
// its callers get a GOAWAY, finish what is in flight there, and move to
// the other endpoint; no call fails.
func TestGRPCDrainUnderLoad(t *testing.T) {
	appAddr, _ := startConfApp(t)
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: appAddr, drainTimeout: 10 * time.Second})
	second := dataplane.NewInbound(dataplane.DataPlaneConfig{
		Identity: m.pki.identity(catalogID), Snapshot: m.snap.get,
		Service: "catalog", Namespace: "shop", Protocol: meshconfig.ProtocolGRPC, AppAddr: appAddr,
		Logger: m.logs.Logger.With("proxy", "server2"), DrainTimeout: 10 * time.Second,
	})
	l2 := listen(t)
	serve(t, "inbound 2", func() error { return second.Serve(l2) })
	t.Cleanup(func() { shutdown(t, second.Shutdown) })
	snap := *m.snap.get()
	svc := *m.svc
	svc.Endpoints = append(append(svc.Endpoints[:0:0], svc.Endpoints...), svc.Endpoints[0])
	svc.Endpoints[1].Addr = l2.Addr().String()
	snap.Services = map[string]*meshconfig.Service{meshconfig.ServiceKey("catalog", "shop"): &svc}
	m.snap.set(&snap)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	slow := metadata.AppendToOutgoingContext(ctx, "x-sleep-ms", "20")
	var calls, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		cc := confClient(t, m.upstreamAddr)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := echo(slow, cc, []byte("drain")); err != nil {
						if failed.Add(1) < 5 {
							t.Errorf("conn %d: %v", g, err)
						}
					}
					calls.Add(1)
				}
			}()
		}
	}
	testutil.Eventually(t, "calls on both endpoints", func() bool { return calls.Load() > 400 })
	shutdown(t, m.in.Shutdown)
	atDrain := calls.Load()
	testutil.Eventually(t, "calls after the drain", func() bool { return calls.Load() > atDrain+400 })
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed across the drain", n, calls.Load())
	}
	t.Logf("%d calls, %d after the drain", calls.Load(), calls.Load()-atDrain)
}

// BenchmarkGRPCDirect and BenchmarkGRPCThroughProxies are a unary gRPC
// call (64 B each way) straight to the app and through the pair on the
// HTTP/2 relay; their difference is the relay's cost.
func BenchmarkGRPCDirect(b *testing.B) {
	appAddr, _ := startConfApp(b)
	benchGRPC(b, appAddr)
}

func BenchmarkGRPCThroughProxies(b *testing.B) {
	appAddr, _ := startConfApp(b)
	m := newMesh(b, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: appAddr})
	benchGRPC(b, m.upstreamAddr)
}

// BenchmarkGRPCStreamDirect and BenchmarkGRPCStreamThroughProxies are
// one message (64 B, and its echo) each way on a long-lived bidirectional
// stream (the Counter service's Echo): DATA
// frames only, the relay's per-message cost on a streaming call.
func BenchmarkGRPCStreamDirect(b *testing.B) {
	appAddr, _ := startConfApp(b)
	benchGRPCStream(b, appAddr)
}

func BenchmarkGRPCStreamThroughProxies(b *testing.B) {
	appAddr, _ := startConfApp(b)
	m := newMesh(b, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: appAddr})
	benchGRPCStream(b, m.upstreamAddr)
}

func benchGRPCStream(b *testing.B, addr string) {
	cc := confClient(b, addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := cc.NewStream(ctx, &counterService.Streams[1], "/trellis.test.Counter/Echo")
	if err != nil {
		b.Fatal(err)
	}
	msg := wrapperspb.String(strings.Repeat("x", 64))
	in := new(wrapperspb.StringValue)
	exchange := func() {
		if err := st.SendMsg(msg); err != nil {
			b.Fatal(err)
		}
		if err := st.RecvMsg(in); err != nil || len(in.Value) != len("echo ")+64 {
			b.Fatalf("echo on the stream: %d bytes, %v", len(in.Value), err)
		}
	}
	exchange()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		exchange()
	}
	b.StopTimer()
	if err := st.CloseSend(); err != nil {
		b.Fatal(err)
	}
	if err := st.RecvMsg(in); !errors.Is(err, io.EOF) {
		b.Fatalf("end of the stream: %v, want EOF", err)
	}
}

func benchGRPC(b *testing.B, addr string) {
	cc := confClient(b, addr)
	ctx := context.Background()
	msg := bytes.Repeat([]byte{'x'}, 64)
	if _, err := echo(ctx, cc, msg); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := echo(ctx, cc, msg); err != nil {
			b.Fatal(err)
		}
	}
}
