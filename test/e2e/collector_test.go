package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// collectorProcess is a `trellis collector` subprocess.
type collectorProcess struct {
	DataDir, GRPCAddr, APIAddr string
	args                       []string
	cmd                        *exec.Cmd
	stderr                     syncBuffer
	exited                     chan struct{}
}

// startCollector starts `trellis collector` with args and waits for its
// /readyz. It is killed when the test ends.
func startCollector(t *testing.T, dataDir, grpcAddr, apiAddr string, args ...string) *collectorProcess {
	t.Helper()
	p := &collectorProcess{DataDir: dataDir, GRPCAddr: grpcAddr, APIAddr: apiAddr, exited: make(chan struct{})}
	p.args = append([]string{"collector", "--data-dir", dataDir, "--grpc-addr", grpcAddr, "--api-addr", apiAddr, "--log-format", "json"}, args...)
	p.cmd = exec.Command(trellisBin, p.args...)
	p.cmd.Env = cleanEnv()
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("trellis %s\nstderr:\n%s", strings.Join(p.args, " "), p.stderr.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + apiAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("collector exited with %d before it was ready:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector not ready after 15s:\n%s", p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sinkEvent is what the test reads back from the file sink.
type sinkEvent struct {
	Seq      uint64 `json:"seq"`
	Kind     string `json:"kind"`
	Reporter string `json:"reporter"`
	Instance string `json:"instance"`
	Path     string `json:"path"`
}

func readSink(t *testing.T, path string) []sinkEvent {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []sinkEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev sinkEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			// The deliverer may be mid-write of the last line.
			continue
		}
		out = append(out, ev)
	}
	return out
}

// TestExternalCollectorUnderRestarts runs the mesh with a standalone
// collector (control plane --collector-addr) and a file sink, keeps a
// request loop producing denials, kills -9 and restarts the collector,
// restarts the server proxy (SIGTERM, same spool), and then checks that
// every denial the client saw arrived in the sink, that each reporter's
// sequence numbers have no gap, that the control plane's own events came
// through the same collector, that the log verifies, and that `trellis
// top` against the collector shows the edge.
func TestExternalCollectorUnderRestarts(t *testing.T) {
	skipIfShort(t)
	dir := t.TempDir()
	colGRPC, colAPI := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
	cp := startControl(t, filepath.Join(dir, "control"), "", "--collector-addr", colGRPC)
	cp.AwaitReady(t)
	env := cp.env()
	tokenFile := func(service, ns string) string {
		tok := mustRun(t, runBinary, env, "", "token", "create", "--service", service, "--namespace", ns)
		path := filepath.Join(dir, service+".token")
		if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	sinkPath := filepath.Join(dir, "audit.jsonl")
	colDir := filepath.Join(dir, "collector")
	colArgs := []string{"--control", cp.GRPCAddr, "--ca-file", cp.caFile(), "--token-file", tokenFile("collector", "trellis-system"),
		"--audit-sink", "file://" + sinkPath}
	col := startCollector(t, colDir, colGRPC, colAPI, colArgs...)

	mustRun(t, runBinary, env, `apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog-reads, namespace: shop}
spec:
  selector: {service: catalog}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to: [{methods: [GET], paths: ["/ok"]}]
`, "apply", "-f", "-")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go app.Serve(l)
	t.Cleanup(func() { app.Close() })

	inbound := freeAddr(t, "127.0.0.1")
	spool := filepath.Join(dir, "catalog-spool")
	catalogTok := tokenFile("catalog", "shop")
	catalogArgs := []string{"--app-addr", l.Addr().String(), "--inbound-addr", inbound, "--http-proxy-addr", "off",
		"--spool-dir", spool, "--stats-interval", "1s"}
	catalog := startProxyProcess(t, cp, "catalog", catalogTok, catalogArgs...)
	upstream := freeAddr(t, "127.0.0.1")
	startProxyProcess(t, cp, "frontend", tokenFile("frontend", "shop"), "--inbound-addr", freeAddr(t, "127.0.0.1"),
		"--upstream", "catalog.shop="+upstream, "--http-proxy-addr", "off", "--stats-interval", "1s")

	hc := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) int {
		resp, err := hc.Get("http://" + upstream + path)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for get("/ok") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("no 200 through the mesh after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The request loop: every 403 is a denial the server proxy must report.
	var denied, other atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			path := "/secret"
			if i%4 == 0 {
				path = "/ok"
			}
			switch code := get(path); {
			case code == http.StatusForbidden && path == "/secret":
				denied.Add(1)
			case code == http.StatusOK && path == "/ok":
			default:
				other.Add(1) // 503 while the server proxy restarts
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	})

	time.Sleep(time.Second)
	// Collector killed without warning: proxies keep events and resend.
	if err := col.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-col.exited
	atKill := denied.Load()
	time.Sleep(1500 * time.Millisecond)
	if denied.Load() == atKill {
		t.Fatal("no denials while the collector was down: traffic must not depend on it")
	}
	col = startCollector(t, colDir, colGRPC, colAPI, colArgs...)
	time.Sleep(time.Second)

	// Server proxy restarted (graceful): unacknowledged events go to its
	// spool and the new process resends them under the same instance.
	if err := catalog.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-catalog.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("catalog proxy still running 15s after SIGTERM")
	}
	catalog = startProxyProcess(t, cp, "catalog", catalogTok, catalogArgs...)
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	want := denied.Load()
	t.Logf("client saw %d denials, %d other answers (during the proxy restart)", want, other.Load())
	if want < 50 {
		t.Fatalf("only %d denials: the loop did not run", want)
	}

	catalogID := "spiffe://trellis.local/ns/shop/sa/catalog"
	controlID := "spiffe://trellis.local/ns/trellis-system/sa/control"
	var got int64
	var events []sinkEvent
	deadline = time.Now().Add(30 * time.Second)
	for {
		events = readSink(t, sinkPath)
		seen := map[string]bool{}
		got = 0
		for _, ev := range events {
			key := fmt.Sprintf("%s/%s/%d", ev.Reporter, ev.Instance, ev.Seq)
			if ev.Reporter == catalogID && ev.Kind == "authz.deny" && !seen[key] {
				got++
			}
			seen[key] = true
		}
		if got >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got != want {
		t.Fatalf("sink has %d distinct denials from catalog, client saw %d", got, want)
	}

	// Sequence numbers per (reporter, instance): no gaps, so nothing was
	// lost; duplicates are what at-least-once allows, and are few.
	seqs := map[string]map[uint64]int{}
	instances := map[string]bool{}
	applied := false
	for _, ev := range events {
		if ev.Reporter == controlID && ev.Kind == "resource.applied" {
			applied = true
		}
		if ev.Reporter == catalogID {
			instances[ev.Instance] = true
		}
		k := ev.Reporter + " " + ev.Instance
		if seqs[k] == nil {
			seqs[k] = map[uint64]int{}
		}
		seqs[k][ev.Seq]++
	}
	if len(instances) != 1 {
		t.Errorf("catalog reported under %d instances, want 1 (the spool keeps its instance across restarts)", len(instances))
	}
	if !applied {
		t.Error("no resource.applied event from the control plane: its events must go to the external collector")
	}
	dups := 0
	for k, m := range seqs {
		var hi uint64
		for s, n := range m {
			hi = max(hi, s)
			dups += n - 1
		}
		for s := uint64(1); s <= hi; s++ {
			if m[s] == 0 {
				t.Errorf("%s: seq %d missing (have up to %d)", k, s, hi)
				break
			}
		}
	}
	t.Logf("%d events in the sink, %d duplicates", len(events), dups)
	if dups > len(events)/2 {
		t.Errorf("%d duplicates out of %d: more than at-least-once redelivery explains", dups, len(events))
	}

	// The service graph and mesh metrics come from the collector.
	colEnv := []string{"TRELLIS_API=http://" + colAPI, "TRELLIS_TOKEN_FILE=" + filepath.Join(colDir, "admin.token")}
	var g adminapi.Graph
	deadline = time.Now().Add(10 * time.Second)
	for {
		out := mustRun(t, runBinary, colEnv, "", "top", "-o", "json", "--window", "10m")
		if err := json.Unmarshal([]byte(out), &g); err != nil {
			t.Fatalf("top -o json: %v\n%s", err, out)
		}
		if edgeDenied(g, "frontend", "catalog") > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if edgeDenied(g, "frontend", "catalog") == 0 {
		t.Errorf("graph from the collector has no denials on frontend -> catalog: %+v", g)
	}
	table := mustRun(t, runBinary, colEnv, "", "top")
	if !strings.Contains(table, "frontend.shop") || !strings.Contains(table, "catalog.shop") {
		t.Errorf("trellis top table lacks the services:\n%s", table)
	}
	resp, err := http.Get("http://" + colAPI + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `trellis_mesh_requests_total{destination_namespace="shop",destination_service="catalog",source_namespace="shop",source_service="frontend"}`) {
		t.Errorf("collector /metrics lacks the mesh-wide request counter for frontend -> catalog")
	}
	// The control plane has no graph of its own and says where it is.
	r := runBinary(t, env, "", "top")
	if r.code != 1 || !strings.Contains(r.stderr, colGRPC) {
		t.Errorf("trellis top against a control plane with an external collector: %v; want exit 1 naming %s", r, colGRPC)
	}

	// Collector stopped cleanly; its log verifies.
	if err := col.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-col.exited
	if c := col.cmd.ProcessState.ExitCode(); c != 0 {
		t.Errorf("collector exit code %d after SIGTERM, want 0", c)
	}
	mustRun(t, runBinary, nil, "", "audit", "verify", "--data-dir", colDir)
	_ = catalog
}

func edgeDenied(g adminapi.Graph, src, dst string) uint64 {
	for _, e := range g.Edges {
		if e.Source.Service == src && e.Destination.Service == dst {
			return e.Denied
		}
	}
	return 0
}
