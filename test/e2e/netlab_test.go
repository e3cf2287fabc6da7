package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// labPrefix starts the name of every network namespace and /etc/netns
// directory a lab creates; `make e2e-clean` removes leftovers by it.
const labPrefix = "trl-"

// netLab is a private network of "pods": one network namespace per pod,
// each with a veth pair to a bridge that lives in a namespace of its own
// (so the host's network is never touched), addresses from the
// benchmarking range 198.18.0.0/15 (RFC 2544). Everything is torn down
// when the test ends, failed or not.
type netLab struct {
	t      *testing.T
	id     string // short random id, part of every name
	netns  string // the bridge's namespace
	subnet int    // third octet of 198.18.<subnet>.0/24
	next   int
	pods   []*pod
	done   bool
}

// pod is one network namespace on the lab's bridge.
type pod struct {
	lab  *netLab
	Name string
	NS   string
	IP   string
}

// needLab skips (or, under make test, fails) unless the test can create
// namespaces and the tools are there.
func needLab(t *testing.T, tools ...string) {
	t.Helper()
	skipIfShort(t)
	missing := []string{}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("network namespace tests need %s (make deps installs the Debian packages; run make test as root)", strings.Join(missing, ", "))
	if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// newNetLab creates the bridge namespace.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	lab := &netLab{t: t, id: hex.EncodeToString(b), subnet: 1 + int(b[0])%250, next: 2}
	lab.netns = labPrefix + lab.id + "-net"
	t.Cleanup(lab.teardown)
	lab.run("ip", "netns", "add", lab.netns)
	lab.inNS(lab.netns, "ip", "link", "set", "lo", "up")
	lab.inNS(lab.netns, "ip", "link", "add", "br0", "type", "bridge")
	lab.inNS(lab.netns, "ip", "link", "set", "br0", "up")
	return lab
}

// addPod creates a namespace joined to the bridge, with the next address,
// a default route over the bridge and a resolv.conf of its own (ip netns
// exec mounts /etc/netns/NS/resolv.conf).
func (l *netLab) addPod(name string) *pod {
	l.t.Helper()
	p := &pod{lab: l, Name: name, NS: labPrefix + l.id + "-" + name, IP: fmt.Sprintf("198.18.%d.%d", l.subnet, l.next)}
	l.next++
	l.pods = append(l.pods, p)
	host := fmt.Sprintf("v%s%d", l.id, l.next) // <= 15 characters
	l.run("ip", "netns", "add", p.NS)
	l.run("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", p.NS)
	l.run("ip", "link", "set", host, "netns", l.netns)
	l.inNS(l.netns, "ip", "link", "set", host, "master", "br0")
	l.inNS(l.netns, "ip", "link", "set", host, "up")
	l.inNS(p.NS, "ip", "link", "set", "lo", "up")
	l.inNS(p.NS, "ip", "addr", "add", p.IP+"/24", "dev", "eth0")
	l.inNS(p.NS, "ip", "link", "set", "eth0", "up")
	l.inNS(p.NS, "ip", "route", "add", "default", "dev", "eth0")
	dir := filepath.Join("/etc/netns", p.NS)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		l.t.Fatal(err)
	}
	// Any address: the pod's DNS queries are captured by its proxy.
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 198.18.255.253\n"), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return p
}

// Cmd is a command run inside the pod's namespace.
func (p *pod) Cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.NS, name}, args...)...)
}

// Start starts a long-running process in the pod with env added; it is
// killed when the test ends, and its output shown if the test failed.
func (p *pod) Start(t *testing.T, env []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := p.Cmd(context.Background(), name, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("[%s] %s %s:\n%s", p.Name, name, strings.Join(args, " "), out.String())
		}
	})
	return cmd
}

// Run runs a command in the pod and returns its combined output.
func (p *pod) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := p.Cmd(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func (l *netLab) run(name string, args ...string) {
	l.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func (l *netLab) inNS(ns, name string, args ...string) {
	l.t.Helper()
	l.run("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// teardown deletes every namespace (their veths go with them) and
// resolv.conf directory; errors are reported, not fatal, so the rest is
// still removed.
func (l *netLab) teardown() {
	if l.done {
		return
	}
	l.done = true
	for _, p := range l.pods {
		if out, err := exec.Command("ip", "netns", "del", p.NS).CombinedOutput(); err != nil {
			l.t.Logf("teardown %s: %v %s", p.NS, err, out)
		}
		os.RemoveAll(filepath.Join("/etc/netns", p.NS))
	}
	if out, err := exec.Command("ip", "netns", "del", l.netns).CombinedOutput(); err != nil {
		l.t.Logf("teardown %s: %v %s", l.netns, err, out)
	}
}

// TestNetLab checks the harness itself: two pods reach each other over
// the bridge, the host's namespace does not see them, and teardown
// leaves nothing behind.
func TestNetLab(t *testing.T) {
	needLab(t)
	lab := newNetLab(t)
	a, b := lab.addPod("a"), lab.addPod("b")
	b.Start(t, []string{"TESTAPP_NAME=b"}, testappBin, "serve", b.IP+":8080")
	var out string
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		if out, err = a.Run(testappBin, "get", "http://"+b.IP+":8080/hello"); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || !strings.HasPrefix(out, "b caller=none path=/hello") {
		t.Fatalf("a -> b over the bridge: %v\n%s", err, out)
	}
	hostAddrs, err := exec.Command("ip", "-o", "addr").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(hostAddrs), "198.18.") {
		t.Errorf("the host namespace has a lab address:\n%s", hostAddrs)
	}
	lab.teardown()
	list, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(list), labPrefix+lab.id) {
		t.Errorf("namespaces left after teardown:\n%s", list)
	}
}
