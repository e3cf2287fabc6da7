package proxy_test

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// fakeResolver is an upstream DNS server on loopback, UDP and TCP on one
// port, answering example.org. A 192.0.2.1 and NXDOMAIN otherwise.
func fakeResolver(t *testing.T) string {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	for {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		if q := r.Question[0]; q.Name == "example.org." && q.Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)}}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// query asks addr one question over network (udp or tcp).
func query(t *testing.T, network, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, qtype), addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return resp
}

// desiredVIPs reads the virtual IPs the control plane put into a proxy's
// desired snapshot.
func desiredVIPs(t *testing.T, cp *meshtest.ControlPlane, service string) map[string]string {
	t.Helper()
	c := cp.Client(t)
	ps, err := c.ListProxies(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Service != service {
			continue
		}
		st, err := c.GetProxy(context.Background(), p.Instance)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Services []struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
				VirtualIP string `json:"virtualIp"`
			} `json:"services"`
		}
		if err := json.Unmarshal(st.DesiredConfig, &cfg); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, s := range cfg.Services {
			out[s.Name+"."+s.Namespace] = s.VirtualIP
		}
		return out
	}
	t.Fatalf("no proxy for %s in the control plane", service)
	return nil
}

// TestMeshDNS: a proxy with --dns-addr answers SERVICE.NAMESPACE.mesh and
// SERVICE.mesh with the VIP the control plane assigned, NXDOMAIN for
// unknown .mesh names, and forwards other names to its upstream, over UDP
// and TCP.
func TestMeshDNS(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	upstream := fakeResolver(t)
	catalog := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", DNSAddr: "127.0.0.1:0", DNSUpstreams: []string{upstream}})
	addr := catalog.DNSAddr()
	if addr == "" {
		t.Fatal("DNSAddr is empty with --dns-addr set")
	}
	// Snapshots are scoped: no policy admits catalog to itself, so its
	// name is discovered by the first query (and counted with the rest).
	query(t, "udp", addr, "catalog.shop.mesh.", dns.TypeA)
	vip := desiredVIPs(t, cp, "catalog")["catalog.shop"]
	want, err := netip.ParseAddr(vip)
	if err != nil || !controlplane.DefaultVIPRange.Contains(want) {
		t.Fatalf("catalog's VIP %q, want one in %s", vip, controlplane.DefaultVIPRange)
	}

	type result struct {
		rcode  int
		answer string // the A or AAAA answer, "" for none
	}
	for _, tc := range []struct {
		network, name string
		qtype         uint16
		want          result
	}{
		{"udp", "catalog.shop.mesh.", dns.TypeA, result{dns.RcodeSuccess, vip}},
		{"tcp", "catalog.shop.mesh.", dns.TypeA, result{dns.RcodeSuccess, vip}},
		{"udp", "Catalog.SHOP.mesh.", dns.TypeA, result{dns.RcodeSuccess, vip}},
		{"udp", "catalog.mesh.", dns.TypeA, result{dns.RcodeSuccess, vip}},
		{"udp", "catalog.shop.mesh.", dns.TypeAAAA, result{dns.RcodeSuccess, ""}},
		{"udp", "unknown.shop.mesh.", dns.TypeA, result{dns.RcodeNameError, ""}},
		{"udp", "unknown.mesh.", dns.TypeA, result{dns.RcodeNameError, ""}},
		{"udp", "a.catalog.shop.mesh.", dns.TypeA, result{dns.RcodeNameError, ""}},
		{"udp", "shop.mesh.", dns.TypeA, result{dns.RcodeSuccess, ""}},
		{"udp", "example.org.", dns.TypeA, result{dns.RcodeSuccess, "192.0.2.1"}},
		{"tcp", "example.org.", dns.TypeA, result{dns.RcodeSuccess, "192.0.2.1"}},
		{"udp", "missing.example.org.", dns.TypeA, result{dns.RcodeNameError, ""}},
	} {
		resp := query(t, tc.network, addr, tc.name, tc.qtype)
		got := result{rcode: resp.Rcode}
		for _, rr := range resp.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				got.answer = rr.A.String()
			case *dns.AAAA:
				got.answer = rr.AAAA.String()
			}
			if strings.HasSuffix(tc.name, ".mesh.") && (rr.Header().Ttl != 5 || rr.Header().Name != tc.name) {
				t.Errorf("%s: answer %s, want TTL 5 for the name as asked", tc.name, rr)
			}
		}
		if got != tc.want {
			t.Errorf("%s %s %s: got %s %q, want %s %q", tc.network, tc.name, dns.TypeToString[tc.qtype],
				dns.RcodeToString[got.rcode], got.answer, dns.RcodeToString[tc.want.rcode], tc.want.answer)
		}
	}
	for result, want := range map[string]float64{"mesh": 7, "nxdomain": 3, "forwarded": 3, "error": 0} {
		if got := scrape(t, catalog, `trellis_dns_queries_total{result="`+result+`"}`); got != want {
			t.Errorf("trellis_dns_queries_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

// A proxy without --dns-addr serves no DNS; a bad address is refused
// naming the flag.
func TestMeshDNSConfig(t *testing.T) {
	_, err := proxy.New(proxy.Config{Service: "catalog", CAFile: "x", Token: "x", DNSAddr: "15053"})
	if err == nil || !strings.Contains(err.Error(), "--dns-addr") {
		t.Errorf("DNSAddr 15053: %v, want an error naming --dns-addr", err)
	}
	_, err = proxy.New(proxy.Config{Service: "catalog", CAFile: "x", Token: "x", DNSUpstreams: []string{"resolver.example"}})
	if err == nil || !strings.Contains(err.Error(), "resolver.example") {
		t.Errorf("DNSUpstreams resolver.example: %v, want an error naming it", err)
	}
}

// When no upstream answers, a forwarded name fails with SERVFAIL and
// counts as an error; mesh names still resolve.
func TestMeshDNSUpstreamDown(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	ledger := meshtest.StartProxy(t, cp, proxy.Config{Service: "ledger", DNSAddr: "127.0.0.1:0", DNSUpstreams: []string{dead}})
	if resp := query(t, "udp", ledger.DNSAddr(), "example.org.", dns.TypeA); resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("example.org with the upstream down: %s, want SERVFAIL", dns.RcodeToString[resp.Rcode])
	}
	if resp := query(t, "udp", ledger.DNSAddr(), "ledger.mesh.", dns.TypeA); resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
		t.Errorf("ledger.mesh with the upstream down: %s %v, want its VIP", dns.RcodeToString[resp.Rcode], resp.Answer)
	}
	if got := scrape(t, ledger, `trellis_dns_queries_total{result="error"}`); got != 1 {
		t.Errorf(`trellis_dns_queries_total{result="error"} = %v, want 1`, got)
	}
}
