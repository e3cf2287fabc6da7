//go:build linux

package iptables

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellismesh/trellis/internal/netcap"
	"github.com/trellismesh/trellis/internal/testutil"
)

// requireNetAdmin skips the test unless it runs as root with ip and the
// backend's iptables binaries, or fails it when TRELLIS_REQUIRE_ALL is set
// (make test).
func requireNetAdmin(t *testing.T, b Backend) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	suffix := ""
	if b != BackendAuto {
		suffix = "-" + string(b)
	}
	for _, tool := range []string{"ip", "iptables" + suffix, "iptables" + suffix + "-save", "iptables" + suffix + "-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("iptables tests need %s (make deps installs iptables; run make test as root)", strings.Join(missing, ", "))
	if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// netns is a named network namespace deleted when the test ends.
type netns struct {
	t    *testing.T
	name string
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	n := &netns{t: t, name: "trellis-ipt-" + hex.EncodeToString(b)}
	n.run("ip", "netns", "add", n.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	n.ip("link", "set", "lo", "up")
	return n
}

func (n *netns) run(name string, args ...string) string {
	n.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ip runs `ip -n NS args`.
func (n *netns) ip(args ...string) {
	n.t.Helper()
	n.run("ip", append([]string{"-n", n.name}, args...)...)
}

// save returns iptables-save -t nat inside the namespace.
func (n *netns) save(b Backend, f family) string {
	n.t.Helper()
	bin := "iptables"
	if f == ipv6 {
		bin = "ip6tables"
	}
	if b != BackendAuto {
		bin += "-" + string(b)
	}
	return n.run("ip", "netns", "exec", n.name, bin+"-save", "-t", "nat")
}

// do runs fn on an OS thread switched into the namespace, so that the
// sockets fn opens live there. The thread is never switched back: it dies
// with the goroutine.
func (n *netns) do(fn func()) {
	n.t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.name, err)
			return
		}
		fn()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		n.t.Fatal(err)
	}
}

// serve opens a TCP listener on addr in n; every connection it accepts is
// answered with one line: name, and with withDst the connection's
// original destination.
func (n *netns) serve(name, addr string, withDst bool) {
	n.t.Helper()
	var ln net.Listener
	var err error
	n.do(func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line := name
			if withDst {
				dst, err := netcap.OriginalDst(c)
				if err != nil {
					line += " " + err.Error()
				} else {
					line += " " + dst.String()
				}
			}
			fmt.Fprintln(c, line)
			c.Close()
		}
	}()
}

// serveUDP echoes datagrams on addr in n, prefixed with name.
func (n *netns) serveUDP(name, addr string) {
	n.t.Helper()
	var pc net.PacketConn
	var err error
	n.do(func() { pc, err = net.ListenPacket("udp", addr) })
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(name+" "+string(buf[:k])), from)
		}
	}()
}

// dial connects from n to addr (with the proxy's mark when marked) and
// returns the line the listener answered, or the error.
func (n *netns) dial(network, addr string, marked bool) string {
	n.t.Helper()
	var got string
	n.do(func() {
		d := net.Dialer{Timeout: 2 * time.Second}
		if marked {
			d.Control = netcap.MarkControl(netcap.ProxyMark)
		}
		c, err := d.Dial(network, addr)
		if err != nil {
			got = "dial: " + err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if strings.HasPrefix(network, "udp") {
			if _, err := c.Write([]byte("query")); err != nil {
				got = "write: " + err.Error()
				return
			}
			buf := make([]byte, 512)
			k, err := c.Read(buf)
			if err != nil {
				got = "read: " + err.Error()
				return
			}
			got = string(buf[:k])
			return
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			got = "read: " + err.Error()
			return
		}
		got = strings.TrimSpace(line)
	})
	return got
}

func countJumps(saved, chain, target string) int {
	k := 0
	for _, line := range strings.Split(saved, "\n") {
		if strings.HasPrefix(line, "-A "+chain+" ") && strings.HasSuffix(line, "-j "+target) {
			k++
		}
	}
	return k
}

// TestApplyInNetns installs the rules in fresh namespaces with each
// backend and checks, with real sockets, what is captured and what is not.
func TestApplyInNetns(t *testing.T) {
	for _, b := range []Backend{BackendLegacy, BackendNFT} {
		t.Run(string(b), func(t *testing.T) {
			requireNetAdmin(t, b)
			testApplyInNetns(t, b)
		})
	}
}

func testApplyInNetns(t *testing.T, b Backend) {
	ctx := context.Background()
	app, peer := newNetns(t), newNetns(t)
	// 198.18.0.1 and .3 are "remote" destinations that happen to be local
	// to app, so that a connection the rules let through reaches a real
	// listener instead of timing out.
	app.ip("addr", "add", "198.18.0.1/32", "dev", "lo")
	app.ip("addr", "add", "198.18.0.3/32", "dev", "lo")
	app.ip("link", "add", "veth-app", "type", "veth", "peer", "name", "veth-peer", "netns", peer.name)
	app.ip("addr", "add", "198.18.1.1/24", "dev", "veth-app")
	app.ip("link", "set", "veth-app", "up")
	peer.ip("addr", "add", "198.18.1.2/24", "dev", "veth-peer")
	peer.ip("link", "set", "veth-peer", "up")

	cfg := Config{
		DNSPort:              DefaultDNSPort,
		ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.0.3/32")},
		ExcludeOutboundPorts: []uint16{8443},
		ExcludeInboundPorts:  []uint16{2222},
		IPv6:                 true,
		Backend:              b,
		Netns:                app.name,
		Logger:               testutil.Logger(t),
	}
	v6 := ipv6Unsupported(ctx, cfg.withDefaults()) == ""
	if !v6 {
		t.Logf("no IPv6 nat here (%s): IPv6 cases skipped", ipv6Unsupported(ctx, cfg.withDefaults()))
	} else {
		app.ip("-6", "addr", "add", "2001:2::1/128", "dev", "lo", "nodad")
	}
	for range 2 {
		if err := Apply(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	saved := app.save(b, ipv4)
	if got := countJumps(saved, "OUTPUT", ChainOutput); got != 1 {
		t.Errorf("after two Apply: %d jumps OUTPUT -> %s, want 1:\n%s", got, ChainOutput, saved)
	}
	if got := countJumps(saved, "PREROUTING", ChainPrerouting); got != 1 {
		t.Errorf("after two Apply: %d jumps PREROUTING -> %s, want 1:\n%s", got, ChainPrerouting, saved)
	}

	app.serve("outbound", "127.0.0.1:15001", true)
	app.serve("inbound", "0.0.0.0:15006", true)
	app.serve("dns-tcp", "127.0.0.1:15053", false)
	app.serveUDP("dns-udp", "127.0.0.1:15053")
	app.serve("dest", "198.18.0.1:80", false)
	app.serve("excluded-cidr", "198.18.0.3:80", false)
	app.serve("excluded-port", "198.18.0.1:8443", false)
	app.serve("loopback-app", "127.0.0.1:8080", false)
	app.serve("app", "0.0.0.0:9090", false)
	app.serve("ssh", "0.0.0.0:2222", false)
	app.serve("admin", "0.0.0.0:15000", false)
	if v6 {
		app.serve("outbound6", "[::1]:15001", true)
		app.serve("dest6", "[2001:2::1]:80", false)
	}

	type tc struct {
		name    string
		from    *netns
		network string
		addr    string
		marked  bool
		want    string
	}
	tests := []tc{
		{"outbound captured", app, "tcp", "198.18.0.1:80", false, "outbound 198.18.0.1:80"},
		{"proxy mark not captured", app, "tcp", "198.18.0.1:80", true, "dest"},
		{"excluded cidr", app, "tcp", "198.18.0.3:80", false, "excluded-cidr"},
		{"excluded port", app, "tcp", "198.18.0.1:8443", false, "excluded-port"},
		{"loopback app", app, "tcp", "127.0.0.1:8080", false, "loopback-app"},
		{"dns udp", app, "udp", "198.18.0.1:53", false, "dns-udp query"},
		{"dns tcp", app, "tcp", "198.18.0.1:53", false, "dns-tcp"},
		{"inbound captured", peer, "tcp", "198.18.1.1:9090", false, "inbound 198.18.1.1:9090"},
		{"inbound excluded port", peer, "tcp", "198.18.1.1:2222", false, "ssh"},
		{"inbound reserved port", peer, "tcp", "198.18.1.1:15000", false, "admin"},
	}
	if v6 {
		tests = append(tests,
			tc{"ipv6 outbound captured", app, "tcp", "[2001:2::1]:80", false, "outbound6 [2001:2::1]:80"},
			tc{"ipv6 proxy mark not captured", app, "tcp", "[2001:2::1]:80", true, "dest6"},
		)
	}
	for _, tt := range tests {
		if got := tt.from.dial(tt.network, tt.addr, tt.marked); got != tt.want {
			t.Errorf("%s: dial %s %s (marked %v) reached %q, want %q", tt.name, tt.network, tt.addr, tt.marked, got, tt.want)
		}
	}

	for range 2 {
		if err := Remove(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []family{ipv4, ipv6} {
		if f == ipv6 && !v6 {
			continue
		}
		if saved := app.save(b, f); strings.Contains(saved, "TRELLIS") {
			t.Errorf("%s rules left after Remove:\n%s", f, saved)
		}
	}
	if got := app.dial("tcp", "198.18.0.1:80", false); got != "dest" {
		t.Errorf("after Remove: dial 198.18.0.1:80 reached %q, want dest", got)
	}
}

func TestRemoveNothingInstalled(t *testing.T) {
	requireNetAdmin(t, BackendAuto)
	ns := newNetns(t)
	if err := Remove(context.Background(), Config{Netns: ns.name, Logger: testutil.Logger(t)}); err != nil {
		t.Fatal(err)
	}
}

func TestApplyErrorNamesNetnsAndVariant(t *testing.T) {
	requireNetAdmin(t, BackendAuto)
	err := Apply(context.Background(), Config{Netns: "trellis-ipt-missing"})
	if err == nil {
		t.Fatal("Apply in a namespace that does not exist succeeded")
	}
	if !strings.Contains(err.Error(), "netns trellis-ipt-missing") || !strings.Contains(err.Error(), "iptables v") {
		t.Errorf("Apply error %q should name the namespace and the iptables variant", err)
	}
}
