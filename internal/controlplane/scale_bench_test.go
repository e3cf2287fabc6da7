package controlplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminhttp"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/controlplane/sharedca"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/jointoken"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/store/etcd"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
	"github.com/trellismesh/trellis/internal/testutil/etcdtest"
)

// simProxy is one lightweight simulated proxy: a config stream that acks
// every snapshot at once and remembers when it acked which policy
// revision.
type simProxy struct {
	stream grpc.ClientStream
	// acked[marker] is when the proxy acked the first snapshot carrying
	// the marker (a path in the benchmark's policy).
	mu    sync.Mutex
	acked map[string]time.Time
	// addrs[a] is when the proxy acked the first snapshot listing
	// endpoint address a.
	addrs  map[string]time.Time
	first  chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

// received counts the bytes every simulated proxy received.
var received atomic.Int64

// BenchmarkConvergence connects many simulated proxies (config streams in
// this process, instancesPerService per service, the instances of one
// service sharing one certificate and one HTTP/2 connection, as replicas
// of one identity do) to one control plane, then applies one
// AuthorizationPolicy change per iteration and times it from the apply
// call until each affected proxy has acked the snapshot carrying it:
// p50/p99/max over proxies. Two shapes: a policy selecting one service
// (the common change) and a mesh-wide policy (namespace trellis-system, no
// selector: every proxy gets a new snapshot). heap-MB/proxy is the heap
// growth from connecting the proxies, divided by their number; it counts
// the simulated proxies' own memory too, so it bounds the control plane's
// share from above. TRELLIS_BENCH_PROXIES (default 1000) sets the scale;
// TRELLIS_BENCH_NO_ENDPOINTS=1 leaves endpoints out (see below).
//
// TRELLIS_BENCH_CALLS (default 5) is how many services each service may
// call: one ALLOW policy per service admits the next 5 services' identity,
// under the default deny, so snapshots are scoped to 5 services.
// TRELLIS_BENCH_CALLS=all is the full mesh instead (default allow, no
// policies: every proxy is sent every service). The churn_100_per_s shape
// replaces 100 proxies a second (a new instance at a new address, the old
// one disconnecting) and times each until every proxy that may call its
// service has acked a snapshot listing the new address. bytes/change is
// what the simulated proxies received per change. The simulated proxies
// accept deltas (endpoint changes as SnapshotDelta) unless
// TRELLIS_BENCH_NO_DELTAS=1.
//
// TRELLIS_BENCH_REPLICAS=3 runs three control planes in this process on a
// three-member etcd cluster (etcdtest: real etcd processes on loopback,
// TLS), sharing the CA and the registry as `trellis control --store
// etcd://` replicas do; each service's proxies connect to replica
// service%3, and changes are applied through the first.
func BenchmarkConvergence(b *testing.B) {
	n := 1000
	if v := os.Getenv("TRELLIS_BENCH_PROXIES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 10 {
			b.Fatalf("TRELLIS_BENCH_PROXIES=%q: want a number >= 10", v)
		}
	}
	// TRELLIS_BENCH_NO_ENDPOINTS=1: proxies advertise no inbound address,
	// so snapshots list services without endpoints (a few tens of kB at
	// 1,000 services instead of one endpoint per proxy): it isolates the
	// control plane's per-round cost from the size of full-mesh snapshots.
	noEndpoints := os.Getenv("TRELLIS_BENCH_NO_ENDPOINTS") == "1"
	calls := 5
	if v := os.Getenv("TRELLIS_BENCH_CALLS"); v == "all" {
		calls = 0
	} else if v != "" {
		var err error
		if calls, err = strconv.Atoi(v); err != nil || calls < 1 {
			b.Fatalf("TRELLIS_BENCH_CALLS=%q: want a number >= 1 or all", v)
		}
	}
	const instancesPerService = 10
	services := (n + instancesPerService - 1) / instancesPerService
	replicas := startReplicas(b)
	cp := replicas[0]
	client := cp.Client(b)
	ctx := context.Background()
	apply := func(objs ...resource.Object) {
		if _, err := client.Apply(ctx, objs, false); err != nil {
			b.Fatal(err)
		}
	}
	if calls == 0 {
		apply(decodeOne(b, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n"))
	} else {
		var pols []resource.Object
		for s := range services {
			var from []string
			for k := 1; k <= calls; k++ {
				from = append(from, fmt.Sprintf("svc-%04d", (s+k)%services))
			}
			pols = append(pols, decodeOne(b, fmt.Sprintf("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n"+
				"metadata: {name: allow-svc-%04d, namespace: default}\nspec: {selector: {service: svc-%04d}, rules: [{from: [{services: [%s]}]}]}\n",
				s, s, strings.Join(from, ", "))))
		}
		// In batches: etcd refuses transactions over 128 operations.
		for batch := range slices.Chunk(pols, 100) {
			apply(batch...)
		}
	}

	runtime.GC()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	proxies := make([]*simProxy, 0, n)
	conns := map[string]*grpc.ClientConn{}
	for s := range services {
		svc := fmt.Sprintf("svc-%04d", s)
		conn := dialAs(b, replicas[s%len(replicas)], certFor(b, cp, client, svc))
		conns[svc] = conn
		for i := range instancesPerService {
			if len(proxies) == n {
				break
			}
			addr := fmt.Sprintf("10.%d.%d.%d:15006", s/250, s%250, i)
			if noEndpoints {
				addr = ""
			}
			proxies = append(proxies, startSim(b, conn, svc, fmt.Sprintf("%s-%02d", svc, i), addr))
		}
	}
	for _, p := range proxies {
		<-p.first
	}
	b.Logf("%d proxies (%d services, each calling %d) on %d replicas connected and configured in %s, %d MB received", n, services, calls, len(replicas),
		time.Since(start).Round(time.Millisecond), received.Load()>>20)
	// Let the join-time push rounds settle before measuring memory.
	time.Sleep(time.Second)
	// Twice: sync.Pool keeps buffers (gRPC's encode buffers) through one GC.
	runtime.GC()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perProxy := float64(after.HeapAlloc-min(before.HeapAlloc, after.HeapAlloc)) / float64(n) / (1 << 20)
	if path := os.Getenv("TRELLIS_BENCH_HEAPPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}

	for _, shape := range []struct {
		name      string
		namespace string
		selector  string
		affected  func(i int) bool
	}{
		{"one_service", "default", "{service: svc-0007}", func(i int) bool { return i/instancesPerService == 7 }},
		{"mesh_wide", identity.ControlPlaneNamespace, "{}", func(int) bool { return true }},
	} {
		b.Run(fmt.Sprintf("proxies=%d/%s", n, shape.name), func(b *testing.B) {
			var p50s, p99s, maxes, bytesPer []float64
			iter := 0
			for b.Loop() {
				rx := received.Load()
				iter++
				marker := fmt.Sprintf("/%s/%d", shape.name, iter)
				pol := decodeOne(b, fmt.Sprintf("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n"+
					"metadata: {name: bench-%s, namespace: %s}\nspec: {selector: %s, action: DENY, rules: [{to: [{paths: [%q]}]}]}\n",
					strings.ReplaceAll(shape.name, "_", "-"), shape.namespace, shape.selector, marker))
				t0 := time.Now()
				apply(pol)
				var lat []float64
				deadline := time.Now().Add(2 * time.Minute)
				for i, p := range proxies {
					if !shape.affected(i) {
						continue
					}
					at, ok := p.await(marker, deadline)
					if !ok {
						b.Fatalf("proxy %d never acked the change %s", i, marker)
					}
					lat = append(lat, at.Sub(t0).Seconds()*1000)
				}
				slices.Sort(lat)
				p50s = append(p50s, lat[len(lat)/2])
				p99s = append(p99s, lat[min(len(lat)-1, len(lat)*99/100)])
				maxes = append(maxes, lat[len(lat)-1])
				bytesPer = append(bytesPer, float64(received.Load()-rx))
			}
			b.ReportMetric(median(p50s), "p50-ms")
			b.ReportMetric(median(p99s), "p99-ms")
			b.ReportMetric(median(maxes), "max-ms")
			b.ReportMetric(median(bytesPer), "bytes/change")
			b.ReportMetric(perProxy, "heap-MB/proxy")
		})
	}
	if calls > 0 && !noEndpoints {
		b.Run(fmt.Sprintf("proxies=%d/churn_100_per_s", n), func(b *testing.B) {
			benchChurn(b, proxies, services, calls, instancesPerService, func(svc string) *grpc.ClientConn { return conns[svc] })
		})
	}
}

// benchChurn replaces 100 proxies a second for 5 s per iteration: each
// replacement is a new instance of the same service at a new address (the
// old stream closes), timed until every proxy of the calls services that
// may call it has acked a snapshot listing the new address.
func benchChurn(b *testing.B, proxies []*simProxy, services, calls, perService int, conn func(svc string) *grpc.ClientConn) {
	const rate, seconds = 100, 5
	var p50s, p99s, maxes, bytesPer []float64
	gen := 0
	for b.Loop() {
		rx := received.Load()
		type change struct {
			at      time.Time
			addr    string
			callers []*simProxy
		}
		var changes []change
		tick := time.NewTicker(time.Second / rate)
		for i := range rate * seconds {
			<-tick.C
			gen++
			k := (gen * 7919) % len(proxies) // spread over services
			s := k / perService
			svc := fmt.Sprintf("svc-%04d", s)
			addr := fmt.Sprintf("10.%d.%d.%d:%d", s/250, s%250, k%perService, 16000+gen)
			old := proxies[k]
			var callers []*simProxy
			for c := 1; c <= calls; c++ {
				cs := (s + c) % services // the policy of s admits the next calls services
				callers = append(callers, proxies[cs*perService:min(len(proxies), (cs+1)*perService)]...)
			}
			changes = append(changes, change{at: time.Now(), addr: addr, callers: callers})
			proxies[k] = startSim(b, conn(svc), svc, fmt.Sprintf("%s-r%d", svc, gen), addr)
			old.cancel()
			_ = i
		}
		tick.Stop()
		var lat []float64
		deadline := time.Now().Add(2 * time.Minute)
		for _, c := range changes {
			for _, p := range c.callers {
				if p.ctx.Err() != nil {
					continue // replaced since: its successor's join is no push
				}
				at, ok := p.awaitAddr(c.addr, deadline)
				if !ok {
					b.Fatalf("a caller never acked a snapshot listing %s", c.addr)
				}
				lat = append(lat, at.Sub(c.at).Seconds()*1000)
			}
		}
		slices.Sort(lat)
		p50s = append(p50s, lat[len(lat)/2])
		p99s = append(p99s, lat[min(len(lat)-1, len(lat)*99/100)])
		maxes = append(maxes, lat[len(lat)-1])
		bytesPer = append(bytesPer, float64(received.Load()-rx)/float64(len(changes)))
	}
	b.ReportMetric(median(p50s), "p50-ms")
	b.ReportMetric(median(p99s), "p99-ms")
	b.ReportMetric(median(maxes), "max-ms")
	b.ReportMetric(median(bytesPer), "bytes/change")
}

// startReplicas starts the control planes of BenchmarkConvergence: one
// on bolt, or TRELLIS_BENCH_REPLICAS on a shared etcd cluster.
func startReplicas(b *testing.B) []*cptest.ControlPlane {
	quiet := slog.New(slog.DiscardHandler)
	n := 1
	if v := os.Getenv("TRELLIS_BENCH_REPLICAS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("TRELLIS_BENCH_REPLICAS=%q: want a number >= 1", v)
		}
	}
	if n == 1 {
		return []*cptest.ControlPlane{cptest.StartControlPlane(b, controlplane.Config{Logger: quiet})}
	}
	cluster := etcdtest.Start(b, 3)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	kek, err := sharedca.NewKEK(key)
	if err != nil {
		b.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(controlplane.DefaultTrustDomain)
	var out []*cptest.ControlPlane
	for i := range n {
		st, err := etcd.Open(context.Background(), etcd.Config{Endpoints: cluster.Endpoints(), TLS: cluster.ClientTLS()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		dir := b.TempDir()
		if _, err := sharedca.Ensure(context.Background(), st, kek, dir, func(dir string) error {
			if _, _, err := meshca.LoadOrCreate(dir, td, meshca.Options{}); err != nil {
				return err
			}
			if _, err := jointoken.LoadOrCreate(dir, td, jointoken.Options{}); err != nil {
				return err
			}
			_, err := adminhttp.LoadOrCreate(dir)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("cp-%d", i)
		out = append(out, cptest.StartControlPlane(b, controlplane.Config{Logger: quiet, DataDir: dir, Store: st, ReplicaID: name,
			CAShare: sharedca.New(st, kek, dir, name, quiet), Elector: st}))
	}
	return out
}

func decodeOne(b testing.TB, yaml string) resource.Object {
	b.Helper()
	objs, err := resource.Decode([]byte(yaml), "bench")
	if err != nil || len(objs) != 1 {
		b.Fatalf("decode %q: %v", yaml, err)
	}
	return objs[0]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// certFor obtains a workload certificate for svc through a join token and
// Identity.Certify, as a proxy does.
func certFor(b testing.TB, cp *cptest.ControlPlane, client *adminapi.Client, svc string) *tls.Certificate {
	b.Helper()
	tok, err := client.CreateToken(context.Background(), adminapi.CreateTokenRequest{Service: svc, Namespace: "default"})
	if err != nil {
		b.Fatal(err)
	}
	return certifyTB(b, cp, tok.Token, tok.Info.SPIFFEID)
}

// certifyTB signs a fresh key for want with the join token.
func certifyTB(b testing.TB, cp *cptest.ControlPlane, token, want string) *tls.Certificate {
	b.Helper()
	csr, key := testutil.NewCSR(b, want)
	conn := dialAs(b, cp, nil)
	resp, err := pb.NewIdentityClient(conn).Certify(context.Background(), &pb.CertifyRequest{Csr: csr, Token: token})
	if err != nil {
		b.Fatalf("certify %s: %v", want, err)
	}
	conn.Close()
	chain := append([][]byte{resp.GetLeaf()}, resp.GetIntermediates()...)
	leaf, err := x509.ParseCertificate(resp.GetLeaf())
	if err != nil {
		b.Fatal(err)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}

func dialAs(b testing.TB, cp *cptest.ControlPlane, cert *tls.Certificate) *grpc.ClientConn {
	b.Helper()
	cfg := testutil.ControlTLS(b, cp.DataDir, cert)
	conn, err := grpc.NewClient(cp.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

func startSim(b testing.TB, conn *grpc.ClientConn, svc, instance, addr string) *simProxy {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	// The simulated proxy decodes only what it needs (version, hash,
	// policies) so that the benchmark's CPU goes to the control plane:
	// real proxies decode their snapshots on their own machines.
	st, err := conn.NewStream(ctx, &pb.Config_ServiceDesc.Streams[0], pb.Config_Stream_FullMethodName, grpc.ForceCodec(simCodec{}))
	if err != nil {
		b.Fatal(err)
	}
	p := &simProxy{stream: st, acked: map[string]time.Time{}, addrs: map[string]time.Time{}, first: make(chan struct{}), ctx: ctx, cancel: cancel}
	hello := &pb.Hello{Service: svc, Namespace: "default", AdvertiseAddr: addr, Protocol: "http", Instance: instance,
		AcceptsDeltas: os.Getenv("TRELLIS_BENCH_NO_DELTAS") != "1"}
	if err := st.SendMsg(&pb.ProxyMessage{Message: &pb.ProxyMessage_Hello{Hello: hello}}); err != nil {
		b.Fatal(err)
	}
	go func() {
		var once sync.Once
		for {
			var snap lazySnapshot
			if err := st.RecvMsg(&snap); err != nil {
				return
			}
			if snap.version == "" {
				continue
			}
			markers := policyPaths(snap.policies)
			if err := st.SendMsg(&pb.ProxyMessage{Message: &pb.ProxyMessage_Ack{Ack: &pb.Ack{Version: snap.version, Hash: snap.hash}}}); err != nil {
				return
			}
			now := time.Now()
			p.mu.Lock()
			for _, mk := range markers {
				if _, ok := p.acked[mk]; !ok {
					p.acked[mk] = now
				}
			}
			for _, a := range snap.addrs {
				if _, ok := p.addrs[a]; !ok {
					p.addrs[a] = now
				}
			}
			p.mu.Unlock()
			once.Do(func() { close(p.first) })
		}
	}()
	return p
}

// await returns when the proxy acked the snapshot carrying marker.
func (p *simProxy) await(marker string, deadline time.Time) (time.Time, bool) {
	return p.awaitIn(p.acked, marker, deadline)
}

// awaitAddr returns when the proxy acked a snapshot listing addr.
func (p *simProxy) awaitAddr(addr string, deadline time.Time) (time.Time, bool) {
	return p.awaitIn(p.addrs, addr, deadline)
}

// awaitIn returns when key is in m (one of p's ack maps, under p.mu).
func (p *simProxy) awaitIn(m map[string]time.Time, key string, deadline time.Time) (time.Time, bool) {
	for {
		p.mu.Lock()
		at, ok := m[key]
		p.mu.Unlock()
		if ok {
			return at, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(time.Millisecond)
	}
}

// policyPaths finds the benchmark's markers (the paths of its rules) in a
// snapshot's policies without a full decode.
func policyPaths(policies [][]byte) []string {
	var out []string
	for _, raw := range policies {
		var pol struct {
			Spec struct {
				Rules []struct {
					To []struct {
						Paths []string `json:"paths"`
					} `json:"to"`
				} `json:"rules"`
			} `json:"spec"`
		}
		if json.Unmarshal(raw, &pol) != nil {
			continue
		}
		for _, r := range pol.Spec.Rules {
			for _, to := range r.To {
				out = append(out, to.Paths...)
			}
		}
	}
	return out
}

// lazySnapshot is what a simulated proxy reads of a ControlMessage.
type lazySnapshot struct {
	version, hash string
	policies      [][]byte
	addrs         []string // endpoint addresses
}

// simCodec marshals requests as protobuf and reads a ControlMessage's
// snapshot version, hash and policies with protowire, skipping the rest.
type simCodec struct{}

func (simCodec) Name() string { return "proto" }

func (simCodec) Marshal(v any) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }

func (simCodec) Unmarshal(data []byte, v any) error {
	received.Add(int64(len(data)))
	out := v.(*lazySnapshot)
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType { // ControlMessage.snapshot or .delta
			delta := num == 2
			snap, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return protowire.ParseError(n)
			}
			data = data[n:]
			for len(snap) > 0 {
				f, t, n := protowire.ConsumeTag(snap)
				if n < 0 {
					return protowire.ParseError(n)
				}
				snap = snap[n:]
				if t != protowire.BytesType {
					n = protowire.ConsumeFieldValue(f, t, snap)
					if n < 0 {
						return protowire.ParseError(n)
					}
					snap = snap[n:]
					continue
				}
				b, n := protowire.ConsumeBytes(snap)
				if n < 0 {
					return protowire.ParseError(n)
				}
				snap = snap[n:]
				switch {
				case f == 1:
					out.version = string(b)
				case f == 2:
					out.hash = string(b)
				case f == 5 && !delta, f == 4 && delta: // services
					out.addrs = appendAddrs(out.addrs, b)
				case f == 6 && !delta:
					out.policies = append(out.policies, bytes.Clone(b))
				}
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
	}
	return nil
}

// appendAddrs adds the endpoint addresses of one encoded Service.
func appendAddrs(out []string, svc []byte) []string {
	for len(svc) > 0 {
		f, t, n := protowire.ConsumeTag(svc)
		if n < 0 {
			return out
		}
		svc = svc[n:]
		if f != 4 || t != protowire.BytesType { // Service.endpoints
			if n = protowire.ConsumeFieldValue(f, t, svc); n < 0 {
				return out
			}
			svc = svc[n:]
			continue
		}
		ep, n := protowire.ConsumeBytes(svc)
		if n < 0 {
			return out
		}
		svc = svc[n:]
		for len(ep) > 0 {
			f, t, n := protowire.ConsumeTag(ep)
			if n < 0 {
				return out
			}
			ep = ep[n:]
			if f == 1 && t == protowire.BytesType { // Endpoint.address
				a, n := protowire.ConsumeBytes(ep)
				if n < 0 {
					return out
				}
				out = append(out, string(a))
				ep = ep[n:]
				continue
			}
			if n = protowire.ConsumeFieldValue(f, t, ep); n < 0 {
				return out
			}
			ep = ep[n:]
		}
	}
	return out
}
