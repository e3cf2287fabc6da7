// Package meshdns is a proxy's mesh DNS server: it answers
// SERVICE.NAMESPACE.mesh (and SERVICE.mesh in the proxy's namespace) from
// the proxy's snapshot with the services' virtual IPs, and forwards every
// other name to the workload's resolvers, so an unmodified application
// reaches mesh services by name in transparent mode. It reads the
// snapshot (internal/meshconfig) and must not depend on the proxy role,
// the data plane, the control plane or the CA.
package meshdns

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/netcap"
)

// Mesh DNS: the proxy answers names under .mesh from its snapshot with the
// services' virtual IPs, and forwards every other name to the resolvers
// the workload would have used, so an unmodified application can call
// http://catalog.shop.mesh:8080/ (transparent capture then routes the
// connection to the VIP).
const (
	meshZone = "mesh."
	// dnsTTL is short: a VIP never changes, but a service may appear
	// or go, and negative answers must not linger.
	dnsTTL = 5
	// dnsForwardTimeout bounds one upstream exchange; the next upstream
	// is tried after it.
	dnsForwardTimeout = 2 * time.Second
	resolvConfPath    = "/etc/resolv.conf"
)

// Results of trellis_dns_queries_total.
const (
	dnsResultMesh      = "mesh"
	dnsResultNXDomain  = "nxdomain"
	dnsResultForwarded = "forwarded"
	dnsResultError     = "error"
)

// Server serves mesh DNS over UDP and TCP on one port. Call Listen, then
// Serve; Shutdown (or Close, when Serve never ran) releases it.
type Server struct {
	snapshot  func() *meshconfig.Snapshot
	discover  func(string, netip.Addr) bool // nil: none
	namespace string
	upstreams []string // IP:PORT
	dialer    *net.Dialer
	log       *slog.Logger
	queries   *prometheus.CounterVec

	pc       net.PacketConn
	ln       net.Listener
	udp, tcp *dns.Server
	wg       sync.WaitGroup
}

// Options configure a Server.
type Options struct {
	// Namespace is the proxy's: SERVICE.mesh is looked up in it.
	Namespace string
	// Upstreams are the resolvers other names go to, IP or IP:PORT
	// (checked with CheckUpstream); empty means /etc/resolv.conf's.
	Upstreams []string
	// Mark sets netcap.ProxyMark on forwarded queries, so transparent
	// capture lets them out.
	Mark bool
	Log  *slog.Logger
	// Registerer takes the server's metrics.
	Registerer prometheus.Registerer
	// Discover, when set, asks the control plane for a service the
	// config does not list ("name.namespace") and waits, bounded; it
	// reports whether the newest config lists it.
	Discover func(key string, vip netip.Addr) bool
}

// New prepares a server answering from snapshot.
func New(opts Options, snapshot func() *meshconfig.Snapshot) *Server {
	cfg, log, reg := opts, opts.Log, opts.Registerer
	d := &Server{
		snapshot:  snapshot,
		discover:  cfg.Discover,
		namespace: strings.ToLower(cfg.Namespace),
		dialer:    &net.Dialer{Timeout: dnsForwardTimeout},
		log:       log.With("component", "dns"),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_dns_queries_total",
			Help: "DNS queries answered by the proxy's mesh DNS server: mesh (a .mesh name found), nxdomain (a .mesh name not found), forwarded (to an upstream resolver), error (no config yet, malformed, or no upstream answered).",
		}, []string{"result"}),
	}
	for _, r := range []string{dnsResultMesh, dnsResultNXDomain, dnsResultForwarded, dnsResultError} {
		d.queries.WithLabelValues(r)
	}
	reg.MustRegister(d.queries)
	if cfg.Mark {
		// Forwarded queries must leave uncaptured (see netcap.ProxyMark).
		d.dialer.Control = netcap.MarkControl(netcap.ProxyMark)
	}
	for _, u := range cfg.Upstreams {
		a, _ := upstreamAddr(u) // validated
		d.upstreams = append(d.upstreams, a)
	}
	if len(d.upstreams) == 0 {
		d.upstreams = resolvConfUpstreams(resolvConfPath, d.log)
	}
	return d
}

// resolvConfUpstreams reads the nameservers of a resolv.conf. Without any,
// mesh names still resolve; other names fail (logged once here).
func resolvConfUpstreams(path string, log *slog.Logger) []string {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		log.Warn("no upstream DNS resolvers: names outside .mesh will fail (SERVFAIL); fix "+path+" or set the proxy's DNS upstreams", "err", err)
		return nil
	}
	var out []string
	for _, s := range cc.Servers {
		a, err := upstreamAddr(net.JoinHostPort(s, cc.Port))
		if err != nil {
			log.Warn("ignoring a nameserver that is not an IP address", "file", path, "nameserver", s)
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		log.Warn("no upstream DNS resolvers: names outside .mesh will fail (SERVFAIL); add a nameserver to "+path+" or set the proxy's DNS upstreams", "file", path)
	}
	return out
}

// upstreamAddr normalizes IP or IP:PORT to IP:PORT (port 53 by default).
func upstreamAddr(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", err
	}
	return netip.AddrPortFrom(a, 53).String(), nil
}

// CheckUpstream checks an upstream resolver's address: IP or IP:PORT.
func CheckUpstream(s string) error {
	_, err := upstreamAddr(s)
	return err
}

// Listen binds UDP and TCP on the same port (a free one for port 0).
func (d *Server) Listen(addr string) error {
	var err error
	for range 10 {
		if d.pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		bound := d.pc.LocalAddr().String()
		if d.ln, err = net.Listen("tcp", bound); err == nil {
			break
		}
		d.pc.Close()
		d.pc = nil
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			return err
		}
		// Port 0: the free UDP port was taken for TCP; try another.
	}
	if err != nil {
		return err
	}
	// A forwarded query must not come back here.
	self := d.pc.LocalAddr().String()
	d.upstreams = slices.DeleteFunc(d.upstreams, func(u string) bool { return u == self })
	return nil
}

// Addr is the bound address, UDP and TCP.
func (d *Server) Addr() string { return d.pc.LocalAddr().String() }

// Serve starts answering on the bound sockets and returns once both
// servers run.
func (d *Server) Serve() {
	d.udp = &dns.Server{PacketConn: d.pc, Handler: d}
	d.tcp = &dns.Server{Listener: d.ln, Handler: d, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	for _, s := range []*dns.Server{d.udp, d.tcp} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		exited := make(chan struct{})
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer close(exited)
			if err := s.ActivateAndServe(); err != nil && !errors.Is(err, net.ErrClosed) {
				d.log.Error("mesh DNS server stopped", "err", err)
			}
		}()
		select {
		case <-started:
		case <-exited:
		}
	}
}

// Shutdown stops both servers, waiting for answers in progress (bounded by
// ctx).
func (d *Server) Shutdown(ctx context.Context) {
	for _, s := range []*dns.Server{d.udp, d.tcp} {
		if s != nil {
			_ = s.ShutdownContext(ctx)
		}
	}
	d.Close()
	d.wg.Wait()
}

// Close releases the sockets (also when serving never started).
func (d *Server) Close() {
	if d.pc != nil {
		d.pc.Close()
	}
	if d.ln != nil {
		d.ln.Close()
	}
}

// ServeDNS answers one query.
func (d *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	switch {
	case r.Opcode != dns.OpcodeQuery:
		d.reply(w, new(dns.Msg).SetRcode(r, dns.RcodeNotImplemented), dnsResultError)
		return
	case len(r.Question) != 1:
		d.reply(w, new(dns.Msg).SetRcode(r, dns.RcodeFormatError), dnsResultError)
		return
	}
	name := strings.ToLower(r.Question[0].Name)
	if name == meshZone || strings.HasSuffix(name, "."+meshZone) {
		m, result := d.answerMesh(r, name)
		d.reply(w, m, result)
		return
	}
	d.forward(w, r)
}

func (d *Server) reply(w dns.ResponseWriter, m *dns.Msg, result string) {
	d.queries.WithLabelValues(result).Inc()
	if err := w.WriteMsg(m); err != nil {
		d.log.Debug("write DNS answer", "err", err)
	}
}

// answerMesh answers a name under .mesh: SERVICE.NAMESPACE.mesh or
// SERVICE.mesh (this proxy's namespace).
func (d *Server) answerMesh(r *dns.Msg, name string) (*dns.Msg, string) {
	m := new(dns.Msg).SetReply(r)
	m.Authoritative, m.RecursionAvailable = true, true
	snap := d.snapshot()
	if snap == nil {
		// Not ready: the resolver may try again or elsewhere.
		m.Rcode = dns.RcodeServerFailure
		return m, dnsResultError
	}
	q := r.Question[0]
	labels := dns.SplitDomainName(name)
	var key string
	switch len(labels) {
	case 2:
		key = meshconfig.ServiceKey(labels[0], d.namespace)
	case 3:
		key = meshconfig.ServiceKey(labels[0], labels[1])
	}
	if _, ok := snap.Services[key]; !ok && key != "" && d.discover != nil && d.discover(key, netip.Addr{}) {
		snap = d.snapshot()
	}
	if _, ok := snap.Services[key]; !ok {
		m.Ns = []dns.RR{meshSOA()}
		// mesh. and NAMESPACE.mesh. exist (names below them do): no
		// data, not NXDOMAIN (RFC 8020).
		if len(labels) == 1 || (len(labels) == 2 && hasNamespace(snap, labels[0])) {
			return m, dnsResultMesh
		}
		m.Rcode = dns.RcodeNameError
		return m, dnsResultNXDomain
	}
	ip, ok := snap.VIPs[key]
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: dnsTTL}
	switch {
	case !ok || (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY):
	case ip.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
		hdr.Rrtype = dns.TypeA
		m.Answer = []dns.RR{&dns.A{Hdr: hdr, A: ip.AsSlice()}}
	case ip.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
		hdr.Rrtype = dns.TypeAAAA
		m.Answer = []dns.RR{&dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()}}
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{meshSOA()}
	}
	return m, dnsResultMesh
}

func hasNamespace(snap *meshconfig.Snapshot, ns string) bool {
	for _, s := range snap.Services {
		if s.Namespace == ns {
			return true
		}
	}
	return false
}

// meshSOA goes with negative answers so resolvers cache them for dnsTTL
// only (RFC 2308).
func meshSOA() dns.RR {
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: meshZone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: dnsTTL},
		Ns:  "ns." + meshZone, Mbox: "hostmaster." + meshZone,
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: dnsTTL,
	}
}

// forward relays r to the upstreams in order over the transport it came
// on (a truncated UDP answer stays truncated, so the client retries over
// TCP), and relays the first answer.
func (d *Server) forward(w dns.ResponseWriter, r *dns.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	c := &dns.Client{Net: network, Dialer: d.dialer}
	for _, up := range d.upstreams {
		ctx, cancel := context.WithTimeout(context.Background(), dnsForwardTimeout)
		resp, _, err := c.ExchangeContext(ctx, r, up)
		cancel()
		if err == nil {
			resp.Id = r.Id
			d.reply(w, resp, dnsResultForwarded)
			return
		}
		d.log.Debug("forward DNS query", "name", r.Question[0].Name, "upstream", up, "err", err)
	}
	d.reply(w, new(dns.Msg).SetRcode(r, dns.RcodeServerFailure), dnsResultError)
}
