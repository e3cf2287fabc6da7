package proxy

import (
	"context"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

func TestControlDialTarget(t *testing.T) {
	for _, tt := range []struct {
		addrs []string
		want  string
	}{
		{[]string{"127.0.0.1:15012"}, "127.0.0.1:15012"},
		{[]string{"trellis-control.trellis-system.svc:15012"}, "trellis-control.trellis-system.svc:15012"},
		{[]string{"10.0.0.1:15012", "cp-b.example:15012"}, "trellis-control:///10.0.0.1:15012,cp-b.example:15012"},
	} {
		if got := controlDialTarget(tt.addrs); got != tt.want {
			t.Errorf("controlDialTarget(%q) = %q, want %q", tt.addrs, got, tt.want)
		}
	}
	// An IPv6 address (with a zone) survives gRPC's parsing of the target.
	addrs := []string{"[fe80::1%eth0]:15012", "[::1]:15013"}
	u, err := url.Parse(controlDialTarget(addrs))
	if err != nil {
		t.Fatal(err)
	}
	if got := (resolver.Target{URL: *u}).Endpoint(); got != strings.Join(addrs, ",") {
		t.Errorf("endpoint of %s: %q, want %q", u, got, strings.Join(addrs, ","))
	}
}

// The resolver publishes every address in flag order once all have
// answered, a name's addresses together, each named by its --control
// value; a name that does not resolve is left out, and when none
// resolves the channel is told why.
func TestControlResolver(t *testing.T) {
	dnsAddr := startDNS(t, map[string][]string{"control.test.": {"127.0.0.2", "127.0.0.3"}})
	type addr struct{ addr, serverName string }
	for _, tt := range []struct {
		name    string
		control []string
		want    [][]addr // groups in order; any order within a group (one name's addresses)
		wantErr []string
	}{
		{
			name:    "addresses and a name",
			control: []string{"127.0.0.1:1", "control.test:2", "[::1]:3"},
			want: [][]addr{
				{{"127.0.0.1:1", "127.0.0.1:1"}},
				{{"127.0.0.2:2", "control.test:2"}, {"127.0.0.3:2", "control.test:2"}},
				{{"[::1]:3", "[::1]:3"}},
			},
		},
		{
			name:    "a name that does not resolve",
			control: []string{"missing.test:1", "127.0.0.1:2"},
			want:    [][]addr{{{"127.0.0.1:2", "127.0.0.1:2"}}},
		},
		{
			name:    "nothing resolves",
			control: []string{"missing.test:1", "gone.test:2"},
			wantErr: []string{"no control plane address resolved", "missing.test:1", "gone.test:2"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cc := &recordingCC{states: make(chan resolver.State, 10), errs: make(chan error, 10)}
			u, err := url.Parse(controlDialTarget(tt.control))
			if err != nil {
				t.Fatal(err)
			}
			r, err := controlResolverBuilder{dnsServer: dnsAddr}.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if tt.wantErr != nil {
				select {
				case err := <-cc.errs:
					for _, w := range tt.wantErr {
						if !strings.Contains(err.Error(), w) {
							t.Errorf("error %q does not name %q", err, w)
						}
					}
				case s := <-cc.states:
					t.Fatalf("state %+v, want an error", s)
				case <-time.After(10 * time.Second):
					t.Fatal("no error within 10s")
				}
				return
			}
			var s resolver.State
			select {
			case s = <-cc.states:
			case err := <-cc.errs:
				t.Fatalf("error %v, want a state", err)
			case <-time.After(10 * time.Second):
				t.Fatal("no state within 10s")
			}
			var got []addr
			for _, ep := range s.Endpoints {
				for _, a := range ep.Addresses {
					got = append(got, addr{a.Addr, a.ServerName})
				}
			}
			// Groups in order; within one (a name's addresses) any order.
			byAddr := func(a, b addr) int { return strings.Compare(a.addr, b.addr) }
			rest := got
			for _, g := range tt.want {
				if len(rest) < len(g) {
					t.Fatalf("first state published: %v, want %v", got, tt.want)
				}
				part, wantPart := slices.Clone(rest[:len(g)]), slices.Clone(g)
				slices.SortFunc(part, byAddr)
				slices.SortFunc(wantPart, byAddr)
				if !slices.Equal(part, wantPart) {
					t.Errorf("first state published: %v, want %v", got, tt.want)
				}
				rest = rest[len(g):]
			}
			if len(rest) > 0 {
				t.Errorf("first state published: %v, want %v", got, tt.want)
			}
			if len(s.Addresses) != len(got) {
				t.Errorf("state has %d addresses and %d endpoint addresses, want them equal", len(s.Addresses), len(got))
			}
		})
	}
}

// One name with two addresses: the channel uses one, and when that server
// goes the next call is served by the other, with no call in between
// waiting for a retry.
func TestControlResolverNameFailover(t *testing.T) {
	// Two servers on one port, on two loopback addresses.
	var lis [2]net.Listener
	for {
		l0, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(l0.Addr().String())
		l1, err := net.Listen("tcp", net.JoinHostPort("127.0.0.3", port))
		if err == nil {
			lis = [2]net.Listener{l0, l1}
			break
		}
		l0.Close()
	}
	var servers [2]*grpc.Server
	for i, l := range lis {
		servers[i] = grpc.NewServer()
		healthpb.RegisterHealthServer(servers[i], health.NewServer())
		go servers[i].Serve(l)
		t.Cleanup(servers[i].Stop)
	}
	_, port, _ := net.SplitHostPort(lis[0].Addr().String())
	dnsAddr := startDNS(t, map[string][]string{"control.test.": {"127.0.0.2", "127.0.0.3"}})
	// Two --control values, the first dead, so that the resolver is the
	// control scheme's; the name's two addresses are gRPC's DNS resolver's.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead.Close()
	conn, err := grpc.NewClient(controlDialTarget([]string{dead.Addr().String(), "control.test:" + port}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(controlResolverBuilder{dnsServer: dnsAddr}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	check := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var p peer.Peer
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
		if err != nil {
			return "", err
		}
		return p.Addr.String(), nil
	}
	first, err := check()
	if err != nil {
		t.Fatalf("first call: %v", err)
	}
	i := slices.IndexFunc(lis[:], func(l net.Listener) bool { return l.Addr().String() == first })
	if i < 0 {
		t.Fatalf("first call served by %s, not by either server", first)
	}
	servers[i].Stop()
	other := lis[1-i].Addr().String()
	// The connection's end may race the next call: that one may fail
	// (the config stream then retries after its backoff); the one after
	// must go to the other address.
	for attempt := 0; ; attempt++ {
		got, err := check()
		if err == nil {
			if got != other {
				t.Fatalf("after %s stopped, served by %s, want %s", first, got, other)
			}
			break
		}
		if attempt > 0 {
			t.Fatalf("call %d after %s stopped: %v", attempt+1, first, err)
		}
		t.Logf("the call racing the server's stop failed: %v", err)
	}
}

// recordingCC is a resolver.ClientConn that passes on what it is told.
type recordingCC struct {
	states chan resolver.State
	errs   chan error
}

func (c *recordingCC) UpdateState(s resolver.State) error { c.states <- s; return nil }
func (c *recordingCC) ReportError(err error)              { c.errs <- err }
func (c *recordingCC) NewAddress(a []resolver.Address)    { c.states <- resolver.State{Addresses: a} }
func (c *recordingCC) ParseServiceConfig(string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{}
}

// startDNS serves A records for names (fully qualified) on a loopback
// UDP port and answers every other name NXDOMAIN; it returns its address.
func startDNS(t *testing.T, names map[string][]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		q := r.Question[0]
		ips, ok := names[q.Name]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			for _, ip := range ips {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)})
			}
		}
		_ = w.WriteMsg(m)
	})
	s := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	s.NotifyStartedFunc = func() { close(started) }
	go func() { _ = s.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = s.Shutdown() })
	return pc.LocalAddr().String()
}
