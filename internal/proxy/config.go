package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/limits"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/meshdns"
	"github.com/trellismesh/trellis/internal/names"
	"github.com/trellismesh/trellis/internal/policy"
)

// Defaults for Config's zero values.
const (
	DefaultControlAddr   = "127.0.0.1:15012"
	DefaultInboundAddr   = "0.0.0.0:15006"
	DefaultHTTPProxyAddr = "127.0.0.1:15001"
	DefaultAdminAddr     = "127.0.0.1:15000"
	DefaultDrainTimeout  = 10 * time.Second
	DefaultStatsInterval = 10 * time.Second
	// MinStatsInterval bounds --stats-interval from below: each report
	// costs the collector a merge per proxy.
	MinStatsInterval = time.Second
)

// Upstream is an explicit outbound listener: a plain local address that
// forwards to one mesh service.
type Upstream struct {
	Service   string
	Namespace string
	Listen    string
}

// ParseUpstream parses the --upstream flag form SERVICE.NAMESPACE=HOST:PORT.
func ParseUpstream(s string) (Upstream, error) {
	svc, addr, ok := strings.Cut(s, "=")
	name, ns, ok2 := strings.Cut(svc, ".")
	if !ok || !ok2 || !names.IsDNSLabel(name) || !names.IsDNSLabel(ns) {
		return Upstream{}, fmt.Errorf("--upstream %q: want SERVICE.NAMESPACE=HOST:PORT, e.g. catalog.shop=127.0.0.1:9001", s)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return Upstream{}, fmt.Errorf("--upstream %q: listen address %q: want HOST:PORT", s, addr)
	}
	return Upstream{Service: name, Namespace: ns, Listen: addr}, nil
}

// Config configures a Proxy. Zero values mean the documented defaults.
type Config struct {
	// ControlAddrs are the control plane's gRPC addresses, HOST:PORT each
	// (--control, repeatable or comma-separated), in order of preference:
	// control planes sharing one CA and state. Certificates, the config
	// stream and telemetry sent to the control plane use the first that
	// answers and fail over to the next (see controladdrs.go). Empty
	// means ControlAddr.
	ControlAddrs []string
	// ControlAddr is the one control plane address, used when
	// ControlAddrs is empty; default 127.0.0.1:15012.
	ControlAddr string
	CAFile      string // --ca-file: the control plane's ca.crt
	// JWKSCAFile (--jwks-ca-file) adds roots, PEM, for fetching the JWKS
	// of JWTAuthentications' issuers (a private identity provider); the
	// system roots are always trusted.
	JWKSCAFile string
	Token      string // contents of --token-file
	// TokenFile is --token-file's path: with a Kubernetes ServiceAccount
	// token, every renewal reads it again (the kubelet rotates it).
	TokenFile string
	// TrustDomain (--trust-domain) is the mesh's, needed with a
	// ServiceAccount token, which names no trust domain; a join token's
	// subject carries its own. Default trellis.local.
	TrustDomain    string
	Service        string // --service (required)
	Namespace      string // --namespace, default "default"
	ServiceAccount string // --service-account, default the service
	AppAddr        string // --app-addr
	Protocol       string // --protocol http|http2|grpc|tcp, default http
	InboundAddr    string // --inbound-addr, default 0.0.0.0:15006
	AdvertiseAddr  string // --advertise-addr, default the inbound address when not unspecified
	Upstreams      []Upstream
	HTTPProxyAddr  string // --http-proxy-addr, default 127.0.0.1:15001; "off" disables
	AdminAddr      string // --admin-addr, default 127.0.0.1:15000
	// HealthAddr (--health-addr), when set, serves /ready and /live only:
	// what a kubelet's probes need on the pod's address, without the
	// admin endpoint's /config and /metrics.
	HealthAddr   string
	Labels       map[string]string
	DrainTimeout time.Duration
	// CollectorAddr receives telemetry (--collector): audit and access
	// events, traffic stats. Empty means the mesh's collector_address
	// from the config stream, or else the control plane, which embeds the
	// collector by default; telemetry waits in memory until the first
	// config says which.
	CollectorAddr string
	// AccessLogSampleRate is the fraction of inbound HTTP requests
	// reported as access events (--access-log-sample-rate): 0 (off, the
	// default) to 1 (every request).
	AccessLogSampleRate float64
	// StatsInterval is how often traffic stats go to the collector
	// (--stats-interval); zero means 10s, and at least 1s.
	StatsInterval time.Duration
	// SpoolDir keeps audit events the collector has not acknowledged on
	// disk (--spool-dir), so none is lost across proxy restarts; empty
	// means memory only.
	SpoolDir string
	// Transparent captures the workload's traffic with iptables rules
	// (--transparent): the proxy serves OutboundCaptureAddr and marks
	// every socket it opens with netcap.ProxyMark so the rules let its own
	// traffic through.
	Transparent bool
	// OutboundCaptureAddr receives the workload's redirected outbound
	// connections in transparent mode (--outbound-capture-addr), default
	// 0.0.0.0:15001. The HTTP proxy's default address shares its port, so
	// in transparent mode the HTTP proxy is off unless
	// --http-proxy-addr names another address.
	OutboundCaptureAddr string
	// ProtocolDetectTimeout bounds the wait for a captured connection's
	// first bytes (--protocol-detect-timeout), default 100ms; after it the
	// connection is an opaque tunnel.
	ProtocolDetectTimeout time.Duration
	// DNSAddr is where the mesh DNS server listens, UDP and TCP
	// (--dns-addr, e.g. 127.0.0.1:15053); empty means off. It answers
	// SERVICE.NAMESPACE.mesh and SERVICE.mesh (this namespace) with the
	// services' virtual IPs and forwards other names.
	DNSAddr string
	// DNSUpstreams are the resolvers names outside .mesh are forwarded
	// to, IP or IP:PORT (port 53 when absent); empty means the
	// nameservers of /etc/resolv.conf.
	DNSUpstreams []string
	// Limits bounds slow and large inbound requests and what one caller
	// may hold (--body-idle-timeout, --app-max-requests, ...).
	Limits limits.Limits

	// Authorizer decides inbound requests and connections; nil means a
	// PolicyAuthorizer for this workload, counting in the proxy's metrics
	// and sending audit events to its collector. A caller's Authorizer is
	// used as given: the proxy never modifies it.
	Authorizer admission.Authorizer
	// Gateway, when set, makes the proxy an ingress gateway (gateway.go).
	Gateway *GatewayConfig
	Logger  *slog.Logger
	// Clock times certificate renewal and reports; nil is the system
	// clock.
	Clock clock.Clock
}

func (c *Config) setDefaults() {
	if len(c.ControlAddrs) == 0 {
		if c.ControlAddr == "" {
			c.ControlAddr = DefaultControlAddr
		}
		c.ControlAddrs = []string{c.ControlAddr}
	} else {
		c.ControlAddrs = slices.Clone(c.ControlAddrs)
	}
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.ServiceAccount == "" {
		c.ServiceAccount = c.Service
	}
	if c.TrustDomain == "" {
		c.TrustDomain = identity.DefaultTrustDomain
	}
	if c.Protocol == "" {
		c.Protocol = meshconfig.ProtocolHTTP
	}
	c.setGatewayDefaults()
	if c.InboundAddr == "" {
		c.InboundAddr = DefaultInboundAddr
	}
	if c.HTTPProxyAddr == "" {
		c.HTTPProxyAddr = DefaultHTTPProxyAddr
	}
	c.setTransparentDefaults()
	if c.AdminAddr == "" {
		c.AdminAddr = DefaultAdminAddr
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = DefaultStatsInterval
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Clock = clock.Or(c.Clock)
}

// policyAuthorizer is the default Authorizer: the policy engine for this
// workload, counting in m and sending audit events to events.
func (c *Config) policyAuthorizer(m *metrics.Metrics, events func(*pb.Event)) *admission.PolicyAuthorizer {
	pa := &admission.PolicyAuthorizer{
		Workload: policy.Workload{Namespace: c.Namespace, Service: c.Service, Labels: c.Labels},
		Log:      c.Logger,
		Metrics:  m,
		Events:   events,
	}
	if _, port, err := net.SplitHostPort(c.AppAddr); err == nil {
		pa.Port, _ = strconv.Atoi(port)
	}
	return pa
}

func (c *Config) validate() error {
	if c.Service == "" {
		return errors.New("--service is required: the name of the service this proxy stands beside")
	}
	for _, f := range []struct{ flag, val string }{
		{"--service", c.Service}, {"--namespace", c.Namespace}, {"--service-account", c.ServiceAccount},
	} {
		if !names.IsDNSLabel(f.val) {
			return fmt.Errorf("%s %q %s", f.flag, f.val, names.DNSLabelRule)
		}
	}
	if c.CAFile == "" {
		return errors.New("--ca-file is required: the control plane's DATA_DIR/ca.crt, to verify the control plane")
	}
	if c.Token == "" {
		return errors.New("--token-file is required: a join token from `trellis token create --service " + c.Service + "`")
	}
	switch c.Protocol {
	case meshconfig.ProtocolHTTP, meshconfig.ProtocolHTTP2, meshconfig.ProtocolGRPC, meshconfig.ProtocolTCP:
	default:
		return fmt.Errorf("--protocol %q: use http, http2, grpc or tcp", c.Protocol)
	}
	if err := validateControlAddrs(c.ControlAddrs); err != nil {
		return err
	}
	for _, a := range []struct{ flag, addr string }{
		{"--inbound-addr", c.InboundAddr}, {"--admin-addr", c.AdminAddr},
	} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q: want HOST:PORT", a.flag, a.addr)
		}
	}
	if c.AppAddr != "" {
		if _, _, err := net.SplitHostPort(c.AppAddr); err != nil {
			return fmt.Errorf("--app-addr %q: want HOST:PORT", c.AppAddr)
		}
	}
	if c.HealthAddr != "" {
		if _, _, err := net.SplitHostPort(c.HealthAddr); err != nil {
			return fmt.Errorf("--health-addr %q: want HOST:PORT", c.HealthAddr)
		}
	}
	if c.HTTPProxyAddr != "off" {
		if _, _, err := net.SplitHostPort(c.HTTPProxyAddr); err != nil {
			return fmt.Errorf("--http-proxy-addr %q: want HOST:PORT, or off", c.HTTPProxyAddr)
		}
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdvertiseAddr); err != nil {
			return fmt.Errorf("--advertise-addr %q: want HOST:PORT", c.AdvertiseAddr)
		}
		if c.AppAddr == "" {
			return fmt.Errorf("--advertise-addr %q without --app-addr: a proxy without an app is client only and never an endpoint of its service; set --app-addr, or drop --advertise-addr", c.AdvertiseAddr)
		}
	}
	if c.CollectorAddr != "" {
		if _, _, err := net.SplitHostPort(c.CollectorAddr); err != nil {
			return fmt.Errorf("--collector %q: want HOST:PORT, or leave it unset to use the mesh's collector (the control plane by default)", c.CollectorAddr)
		}
	}
	// Written so that NaN fails too.
	if !(c.AccessLogSampleRate >= 0 && c.AccessLogSampleRate <= 1) {
		return fmt.Errorf("--access-log-sample-rate %v: want a fraction from 0 (off) to 1 (every request), e.g. 0.01", c.AccessLogSampleRate)
	}
	if c.DNSAddr != "" {
		if _, _, err := net.SplitHostPort(c.DNSAddr); err != nil {
			return fmt.Errorf("--dns-addr %q: want HOST:PORT, e.g. 127.0.0.1:15053", c.DNSAddr)
		}
	}
	for _, u := range c.DNSUpstreams {
		if err := meshdns.CheckUpstream(u); err != nil {
			return fmt.Errorf("DNS upstream %q: want IP or IP:PORT, e.g. 10.0.0.10 or 10.0.0.10:53", u)
		}
	}
	for _, l := range []struct {
		flag string
		v    int
	}{{"--app-max-requests", c.Limits.AppMaxRequests}, {"--app-max-pending", c.Limits.AppMaxPending}, {"--caller-max-requests", c.Limits.CallerMaxRequests}, {"--max-header-bytes", c.Limits.MaxHeaderBytes}, {"--max-header-fields", c.Limits.MaxHeaderFields}} {
		if l.v < 0 {
			return fmt.Errorf("%s %d: want a positive number (0 means the default)", l.flag, l.v)
		}
	}
	if c.Limits.BodyIdleTimeout < 0 {
		return fmt.Errorf("--body-idle-timeout %v: want a positive duration such as 30s", c.Limits.BodyIdleTimeout)
	}
	if c.StatsInterval < MinStatsInterval {
		return fmt.Errorf("--stats-interval %v: want at least %v", c.StatsInterval, MinStatsInterval)
	}
	if err := c.validateGateway(); err != nil {
		return err
	}
	return c.validateTransparent()
}

// advertise is the address other proxies dial: --advertise-addr, or the
// bound inbound address when it is not unspecified.
func advertise(flag string, bound net.Addr) string {
	if flag != "" {
		return flag
	}
	tcp, ok := bound.(*net.TCPAddr)
	if !ok || tcp.IP.IsUnspecified() {
		return ""
	}
	return tcp.String()
}

// validateControlAddrs checks --control: HOST:PORT values, none twice (a
// comma separates them on the command line, so none holds one).
func validateControlAddrs(addrs []string) error {
	for i, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil || strings.Contains(a, ",") {
			return fmt.Errorf("--control %q: want HOST:PORT (repeat --control, or separate addresses with commas, for several control planes)", a)
		}
		if slices.Contains(addrs[:i], a) {
			return fmt.Errorf("--control %q is listed twice", a)
		}
	}
	return nil
}
