package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/trellismesh/trellis/internal/kube/inject"
	"github.com/trellismesh/trellis/internal/kube/satoken"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// TestKubernetesReplicaFailover: two `trellis control --kubernetes`
// replicas on a real API server behind one address (a loopback forwarder
// playing the Service: the first replica while it answers, else the
// second). Two proxy processes join with real ServiceAccount tokens, and
// callers call catalog through frontend. The Lease holder, which also
// serves both proxies' streams, is killed with SIGKILL: the other replica
// takes the Lease, the proxies reconnect to it, it writes the status of a
// policy created afterwards and pushes that policy to the proxies. Not one
// call may fail. `trellis check --kubernetes` reports the Lease held by the
// survivor.
func TestKubernetesReplicaFailover(t *testing.T) {
	skipIfShort(t)
	m := startKubeMesh(t, false)
	c, ctx, first, second, svc, get, holder := m.c, m.ctx, m.first, m.second, m.svc, m.get, m.holder
	awaitSynced(t, first.env(), 2)
	if n := svc.conns("cp-a"); n < 2 {
		t.Fatalf("%d proxy connections reached cp-a through the Service, want both proxies' streams there", n)
	}
	// Callers for the rest of the test: 0 failures allowed.
	cl := startCallers(t, get)
	calls, failures, firstErr, stopCallers := &cl.calls, &cl.failures, &cl.firstErr, cl.stop
	time.Sleep(time.Second)

	// kill -9 the Lease holder.
	killed := time.Now()
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	before := calls.Load()
	awaitCond(t, 15*time.Second, "cp-b takes the Lease", func() bool { return holder() == "cp-b" })
	took := time.Since(killed)
	awaitSynced(t, second.env(), 2)
	reconnected := time.Since(killed)
	if n := svc.conns("cp-b"); n < 2 {
		t.Errorf("%d proxy connections reached cp-b, want both proxies reconnected there", n)
	}

	// The survivor runs the singletons (status) and pushes a change.
	policies := c.Trellis(t, "authorizationpolicies", "shop")
	deny := kubetest.Object(t, "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: shop}\n"+
		"spec: {selector: {service: catalog}, action: DENY, rules: [{to: [{paths: [/admin]}]}]}\n")
	if _, err := policies.Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	awaitCond(t, 15*time.Second, "the policy's Accepted status written by cp-b", func() bool {
		u, err := policies.Get(ctx, "no-admin", metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		return len(conds) == 1 && conds[0].(map[string]any)["status"] == "True"
	})
	awaitCond(t, 15*time.Second, "the DENY pushed by cp-b", func() bool {
		code, err := get("/admin")
		return err == nil && code == http.StatusForbidden
	})
	time.Sleep(time.Second)
	stopCallers()
	t.Logf("%d calls (%d after the kill -9), %d failed; cp-b held the Lease %.1fs and both proxies were SYNCED on it %.1fs after the kill",
		calls.Load(), calls.Load()-before, failures.Load(), took.Seconds(), reconnected.Seconds())
	if calls.Load()-before < 300 {
		t.Errorf("only %d calls after the kill: the callers stalled", calls.Load()-before)
	}
	if f := failures.Load(); f != 0 {
		t.Errorf("%d of %d calls failed (first: %v); none may fail when a replica dies", f, calls.Load(), firstErr.Load())
	}

	// trellis check --kubernetes: the Lease is held, by cp-b.
	r := runBinary(t, nil, "", "check", "--kubernetes", "--kubeconfig", c.Kubeconfig, "--kube-namespace", "trellis-system", "-o", "json")
	var rep struct {
		Findings []struct{ Level, Check, Message string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("check --kubernetes -o json: %v (%v)", err, r)
	}
	found := false
	for _, f := range rep.Findings {
		if f.Check == "lease" {
			found = true
			if f.Level != "OK" || !strings.Contains(f.Message, "held by cp-b") {
				t.Errorf("lease finding %+v, want OK held by cp-b", f)
			}
		}
	}
	if !found {
		t.Errorf("no lease finding in %s", r.stdout)
	}
}

// kubeMesh is two `trellis control --kubernetes` replicas on a real API
// server (cp-a holding the Lease, cp-b), a loopback forwarder playing
// their Service, and catalog and frontend proxy processes joined with real
// projected ServiceAccount tokens; get calls catalog through frontend.
type kubeMesh struct {
	c             *kubetest.Cluster
	ctx           context.Context
	first, second *controlProcess
	svc           *forwarder
	get           func(path string) (int, error)
	holder        func() string
}

// startKubeMesh starts it: both proxies dial the Service address, or with
// direct, catalog dials cp-a and frontend cp-b.
func startKubeMesh(t *testing.T, direct bool) *kubeMesh {
	t.Helper()
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	c.InstallCRDs(t)
	core := c.Client.CoreV1()
	c.Namespace(t, "trellis-system", nil)
	c.Namespace(t, "shop", nil)
	dir := t.TempDir()

	// The registry: catalog's Service, pod and EndpointSlice; frontend's
	// pod. No kubelet runs them: the pods' status names loopback, where
	// their proxies listen (slices refuse loopback: 198.18.x there).
	catalogInbound := freeAddr(t, "127.0.0.1")
	_, catalogPort, _ := net.SplitHostPort(catalogInbound)
	for _, sa := range []string{"catalog", "frontend"} {
		if _, err := core.ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := core.Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "catalog"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "catalog"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := map[string]*corev1.Pod{}
	for name, ann := range map[string]map[string]string{
		"catalog":  {inject.AnnotationStatus: "test", inject.AnnotationInboundPort: catalogPort},
		"frontend": {inject.AnnotationStatus: "test"},
	} {
		pod, err := core.Pods("shop").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{"app": name}, Annotations: ann},
			Spec:       corev1.PodSpec{ServiceAccountName: name, Containers: []corev1.Container{{Name: "app", Image: "x"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod.Status.PodIP, pod.Status.PodIPs = "127.0.0.1", []corev1.PodIP{{IP: "127.0.0.1"}}
		if pods[name], err = core.Pods("shop").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ready := true
	if _, err := c.Client.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "catalog-x", Labels: map[string]string{discoveryv1.LabelServiceName: "catalog"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses: []string{"198.18.7.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "catalog-1", UID: pods["catalog"].UID},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mesh := kubetest.Object(t, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	if _, err := c.Trellis(t, "meshes", "").Create(ctx, mesh, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Two replicas; the first holds the Lease before the second starts.
	replica := func(name string) *controlProcess {
		data := filepath.Join(dir, name)
		grpcAddr, apiAddr := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
		p := runControlProcess(t, data, grpcAddr, "http://"+apiAddr, []string{"control", "--kubernetes",
			"--kubeconfig", c.Kubeconfig, "--kube-namespace", "trellis-system", "--kube-identity", name, "--lease-duration", "3s",
			"--data-dir", data, "--grpc-addr", grpcAddr, "--api-addr", apiAddr, "--webhook-addr", "127.0.0.1:0", "--log-format", "json"})
		p.AwaitReady(t)
		return p
	}
	leases := c.Client.CoordinationV1().Leases("trellis-system")
	holder := func() string {
		l, err := leases.Get(ctx, "trellis-control", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	first := replica("cp-a")
	awaitCond(t, 15*time.Second, "cp-a holds the Lease", func() bool { return holder() == "cp-a" })
	second := replica("cp-b")
	svc := startForwarder(t, first.GRPCAddr, second.GRPCAddr)

	// The proxies, with real projected tokens (audience trellis, bound to
	// their pods), dial the Service address.
	tokenFile := func(name string) string {
		tok, err := c.Token(ctx, "shop", name, name+"-1", time.Hour, satoken.DefaultAudience)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".token")
		if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	appAddr := serveOK(t)
	viaService := &controlProcess{GRPCAddr: svc.addr, DataDir: first.DataDir}
	catalogCP, frontendCP := viaService, viaService
	if direct {
		catalogCP, frontendCP = first, second
	}
	startProxyProcess(t, catalogCP, "catalog", tokenFile("catalog"), "--app-addr", appAddr,
		"--inbound-addr", catalogInbound, "--http-proxy-addr", "off", "--label", "app=catalog")
	up := freeAddr(t, "127.0.0.1")
	startProxyProcess(t, frontendCP, "frontend", tokenFile("frontend"), "--inbound-addr", freeAddr(t, "127.0.0.1"),
		"--upstream", "catalog.shop="+up, "--http-proxy-addr", "off", "--label", "app=frontend")
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (int, error) {
		resp, err := hc.Get("http://" + up + path)
		if err != nil {
			return 0, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && string(b) != "ok" {
			return resp.StatusCode, errors.New("body " + string(b))
		}
		return resp.StatusCode, nil
	}
	awaitCond(t, 20*time.Second, "catalog answering through frontend", func() bool {
		code, err := get("/items")
		return err == nil && code == http.StatusOK
	})
	return &kubeMesh{c: c, ctx: ctx, first: first, second: second, svc: svc, get: get, holder: holder}
}

// callers calls m.get from two goroutines until stop, counting failures.
type callers struct {
	calls, failures atomic.Int64
	firstErr        atomic.Value
	stop            func()
}

func startCallers(t *testing.T, get func(string) (int, error)) *callers {
	cl := &callers{}
	calls, failures, firstErr := &cl.calls, &cl.failures, &cl.firstErr
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, err := get("/items")
				calls.Add(1)
				if err == nil && code != http.StatusOK {
					err = errors.New(http.StatusText(code))
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error()+" at "+time.Now().Format("15:04:05.000"))
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	cl.stop = sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(cl.stop)
	return cl

}

// forwarder plays a Kubernetes Service in front of the control-plane
// replicas: each connection goes to the first backend that accepts it.
type forwarder struct {
	addr     string
	backends []string
	mu       sync.Mutex
	count    map[string]int // connections per backend name
	names    []string
}

func startForwarder(t *testing.T, backends ...string) *forwarder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{addr: l.Addr().String(), backends: backends, count: map[string]int{}, names: []string{"cp-a", "cp-b"}}
	var open sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close(); open.Wait() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			open.Go(func() { f.serve(c, done) })
		}
	}()
	return f
}

func (f *forwarder) serve(c net.Conn, done <-chan struct{}) {
	defer c.Close()
	var b net.Conn
	for i, addr := range f.backends {
		var err error
		if b, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			f.mu.Lock()
			f.count[f.names[i]]++
			f.mu.Unlock()
			break
		}
	}
	if b == nil {
		return
	}
	defer b.Close()
	go func() { <-done; c.Close(); b.Close() }()
	go func() { io.Copy(b, c); b.Close() }()
	io.Copy(c, b)
}

// conns is how many connections went to the named backend.
func (f *forwarder) conns(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count[name]
}

func awaitCond(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
