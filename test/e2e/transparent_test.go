package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// meshLab is a netLab with a control plane in a pod of its own.
type meshLab struct {
	*netLab
	cp      *pod
	dir     string
	cpEnv   []string // TRELLIS_API/TOKEN_FILE for CLI commands run in the cp pod
	grpc    string   // cp IP:15012
	caFile  string
	dataDir string
}

// newMeshLab starts the control plane with controlArgs added.
func newMeshLab(t *testing.T, controlArgs ...string) *meshLab {
	t.Helper()
	lab := newNetLab(t)
	m := &meshLab{netLab: lab, dir: t.TempDir()}
	m.cp = lab.addPod("cp")
	m.dataDir = filepath.Join(m.dir, "control")
	m.grpc = m.cp.IP + ":15012"
	m.caFile = filepath.Join(m.dataDir, "ca.crt")
	m.cp.Start(t, nil, trellisBin, append([]string{"control", "--data-dir", m.dataDir, "--grpc-addr", m.grpc, "--api-addr", "127.0.0.1:15014", "--log-format", "json"}, controlArgs...)...)
	m.cpEnv = []string{"TRELLIS_API=http://127.0.0.1:15014", "TRELLIS_TOKEN_FILE=" + filepath.Join(m.dataDir, "admin.token")}
	m.eventually(t, "control plane ready", func() (bool, string) {
		out, err := m.cli("get", "mesh")
		return err == nil, out
	})
	return m
}

// cli runs a trellis CLI command in the control plane's pod.
func (m *meshLab) cli(args ...string) (string, error) {
	return m.cliIn("", args...)
}

func (m *meshLab) cliIn(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := m.cp.Cmd(ctx, trellisBin, args...)
	cmd.Env = append(cleanEnv(), m.cpEnv...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

// addMeshPod starts a pod whose app (testapp) listens on :8080 (HTTP)
// and :9000 (TCP echo), with `trellis proxy --transparent` beside it.
// protocol is the service's protocol; sidecar false leaves the proxy out.
func (m *meshLab) addMeshPod(t *testing.T, name, protocol string, sidecar bool) *pod {
	t.Helper()
	p := m.addPod(name)
	app := "0.0.0.0:8080"
	if protocol == "tcp" {
		app = "0.0.0.0:8081" // HTTP unused; the echo is the service
	}
	p.Start(t, []string{"TESTAPP_NAME=" + name}, testappBin, "serve", app, "0.0.0.0:9000")
	if !sidecar {
		return p
	}
	tok, err := m.cli("token", "create", "--service", name, "--namespace", "shop")
	if err != nil {
		t.Fatalf("token for %s: %v\n%s", name, err, tok)
	}
	tokFile := filepath.Join(m.dir, name+".token")
	if err := os.WriteFile(tokFile, []byte(strings.TrimSpace(tok)), 0o600); err != nil {
		t.Fatal(err)
	}
	appAddr := "127.0.0.1:8080"
	if protocol == "tcp" {
		appAddr = "127.0.0.1:9000"
	}
	p.Start(t, nil, trellisBin, "proxy", "--transparent", "--control", m.grpc, "--ca-file", m.caFile, "--token-file", tokFile,
		"--service", name, "--namespace", "shop", "--protocol", protocol, "--app-addr", appAddr,
		"--inbound-addr", "0.0.0.0:15006", "--advertise-addr", p.IP+":15006", "--admin-addr", "127.0.0.1:15000",
		"--http-proxy-addr", "off", "--log-format", "json")
	m.eventually(t, name+" proxy ready", func() (bool, string) {
		out, err := p.Run(testappBin, "get", "http://127.0.0.1:15000/ready")
		return err == nil, out
	})
	return p
}

// eventually polls cond for up to 20s.
func (m *meshLab) eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 20s; last: %s", what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTransparentMesh runs the scenarios of transparent mode on real
// network namespaces: an unmodified client calls mesh services by DNS
// name and virtual IP; the bridge carries only TLS between pods; a pod
// without a sidecar cannot reach a STRICT workload's port; external
// destinations pass through, then are blocked; the proxies' own
// control-plane connections are not captured (they work at all).
func TestTransparentMesh(t *testing.T) {
	needLab(t, "iptables", "tcpdump")
	m := newMeshLab(t)
	if out, err := m.cliIn("apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {mtls: {mode: STRICT}, authorization: {default: allow}}\n", "apply", "-f", "-"); err != nil {
		t.Fatalf("apply mesh: %v\n%s", err, out)
	}
	catalog := m.addMeshPod(t, "catalog", "http", true)
	m.addMeshPod(t, "ledger", "tcp", true)
	frontend := m.addMeshPod(t, "frontend", "http", true)
	outsider := m.addMeshPod(t, "outsider", "http", false)
	external := m.addMeshPod(t, "external", "http", false)

	// Capture on every port of the bridge while the calls below run (the
	// bridge device itself only sees traffic addressed to it).
	pcap := filepath.Join(m.dir, "bridge.pcap")
	ctx, stopDump := context.WithCancel(context.Background())
	dump := exec.CommandContext(ctx, "ip", "netns", "exec", m.netns, "tcpdump", "-i", "any", "--immediate-mode", "-U", "-n", "-s", "0", "-w", pcap)
	var dumpLog syncBuffer
	dump.Stderr = &dumpLog
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopDump(); _ = dump.Wait() })
	time.Sleep(500 * time.Millisecond) // tcpdump attaches

	// By DNS name, from an app that knows nothing of the mesh.
	const secret = "/plaintext-marker-7f3a9c"
	var out string
	m.eventually(t, "frontend -> catalog.shop.mesh:8080", func() (bool, string) {
		var err error
		out, err = frontend.Run(testappBin, "get", "http://catalog.shop.mesh:8080"+secret)
		return err == nil, out
	})
	if want := "catalog caller=spiffe://trellis.local/ns/shop/sa/frontend path=" + secret; !strings.HasPrefix(out, want) {
		t.Errorf("by name: %q, want %q (over mTLS, caller identified)", out, want)
	}
	// catalog.mesh in the client's own namespace, and by virtual IP.
	if out, err := frontend.Run(testappBin, "get", "http://catalog.mesh:8080/short"); err != nil || !strings.HasPrefix(out, "catalog caller=spiffe://") {
		t.Errorf("by short name: %v %q", err, out)
	}
	vip := lookupVIP(t, frontend, "catalog.shop.mesh")
	if !strings.HasPrefix(vip, "240.240.") {
		t.Errorf("catalog's virtual IP %q, want one in 240.240.0.0/16", vip)
	}
	if out, err := frontend.Run(testappBin, "get", "http://"+vip+":8080/by-vip"); err != nil || !strings.HasPrefix(out, "catalog caller=spiffe://trellis.local/ns/shop/sa/frontend path=/by-vip") {
		t.Errorf("by virtual IP: %v %q", err, out)
	}
	// A TCP service by name.
	if out, err := frontend.Run(testappBin, "echo", "ledger.shop.mesh:9000", "hello-ledger"); err != nil || out != "hello-ledger\n" {
		t.Errorf("tcp by name: %v %q", err, out)
	}

	// A pod without a sidecar cannot reach the STRICT workload's port.
	if out, err := outsider.Run(testappBin, "get", "http://"+catalog.IP+":8080/"); err == nil {
		t.Errorf("outsider reached catalog's app port in STRICT mode: %q", out)
	}

	// The proxies' own connections (control plane, peers, DNS upstream)
	// carry the mark and are never captured: so far nothing the frontend
	// proxy's capture listener saw went anywhere but to mesh services.
	metrics, err := frontend.Run(testappBin, "get", "http://127.0.0.1:15000/metrics")
	if err != nil {
		t.Fatalf("frontend metrics: %v", err)
	}
	if !strings.Contains(metrics, `trellis_outbound_captured_total{result="mesh"}`) {
		t.Errorf("frontend proxy counted no captured mesh connections:\n%s", metrics)
	}
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "trellis_outbound_captured_total{") && !strings.Contains(line, `result="mesh"`) && !strings.HasSuffix(line, " 0") {
			t.Errorf("the capture listener saw non-mesh traffic before any app sent some (a proxy connection looped?): %s", line)
		}
	}

	// External destinations: passthrough by default...
	if out, err := frontend.Run(testappBin, "get", "http://"+external.IP+":8080/out"); err != nil || !strings.HasPrefix(out, "external caller=none path=/out") {
		t.Errorf("passthrough to a non-mesh destination: %v %q", err, out)
	}
	// ...refused once the mesh says block.
	if out, err := m.cliIn("apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {mtls: {mode: STRICT}, authorization: {default: allow}, outbound: {mode: block}}\n", "apply", "-f", "-"); err != nil {
		t.Fatalf("apply block: %v\n%s", err, out)
	}
	m.eventually(t, "block external destinations", func() (bool, string) {
		out, err := frontend.Run(testappBin, "get", "http://"+external.IP+":8080/out")
		return err != nil, out
	})
	// The mesh still works with block.
	if out, err := frontend.Run(testappBin, "get", "http://catalog.shop.mesh:8080/after-block"); err != nil || !strings.HasPrefix(out, "catalog caller=") {
		t.Errorf("mesh call with outbound block: %v %q", err, out)
	}

	// Only TLS on the bridge: the marker never crossed it in the clear.
	time.Sleep(300 * time.Millisecond)
	_ = dump.Process.Signal(os.Interrupt) // tcpdump flushes and says what it captured
	_ = dump.Wait()
	stopDump()
	text, err := exec.Command("tcpdump", "-r", pcap, "-A", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("read capture: %v\n%s", err, text)
	}
	if !strings.Contains(string(text), catalog.IP+".15006") {
		t.Errorf("capture shows no traffic to catalog's inbound port; it recorded nothing useful:\n%.2000s\ntcpdump: %s", text, dumpLog.String())
	}
	for _, plain := range []string{secret, "caller=spiffe", "hello-ledger"} {
		if strings.Contains(string(text), plain) {
			t.Errorf("plaintext %q crossed the bridge between pods", plain)
		}
	}
}

// lookupVIP resolves name through the pod's proxy DNS (getent goes
// through the pod's resolv.conf, which the proxy captures).
func lookupVIP(t *testing.T, p *pod, name string) string {
	t.Helper()
	out, err := p.Run("getent", "ahostsv4", name)
	if err != nil {
		t.Fatalf("resolve %s in %s: %v\n%s", name, p.Name, err, out)
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		t.Fatalf("resolve %s: empty answer", name)
	}
	return f[0]
}
