package cli

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/dataplane/capture"
	"github.com/trellismesh/trellis/internal/dataplane/limits"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/iptables"
	"github.com/trellismesh/trellis/internal/logging"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/proxy"
)

func newProxyCmd() *cobra.Command {
	var cfg proxy.Config
	var lf logFlags
	var tokenFile string
	var skipIPTables, captureIPv6 bool
	var upstreams, labels []string
	control := &addrList{addrs: []string{proxy.DefaultControlAddr}}
	cmd := &cobra.Command{
		Use:   "proxy --service NAME --token-file PATH --ca-file PATH [--app-addr HOST:PORT] ...",
		Short: "Run the sidecar proxy beside one service instance",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			log, err := logging.New(cmd.ErrOrStderr(), lf.level, lf.format)
			if err != nil {
				return userError("%v", err)
			}
			cfg.Logger = log
			cfg.ControlAddrs = control.addrs
			if err := readTokenFile(&cfg, tokenFile); err != nil {
				return err
			}
			for _, u := range upstreams {
				up, err := proxy.ParseUpstream(u)
				if err != nil {
					return userError("%v", err)
				}
				cfg.Upstreams = append(cfg.Upstreams, up)
			}
			if cfg.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if cfg.Transparent && !cmd.Flags().Changed("dns-addr") {
				cfg.DNSAddr = proxy.DefaultTransparentDNSAddr
			}
			if captureIPv6 && !cmd.Flags().Changed("outbound-capture-addr") {
				// REDIRECT sends IPv6 to [::1]: listen dual-stack.
				cfg.OutboundCaptureAddr = ":15001"
			}
			var rules *iptables.Config
			if cfg.Transparent && !skipIPTables {
				r, err := captureRules(cfg, log)
				if err != nil {
					return err
				}
				r.IPv6 = captureIPv6
				rules = &r
			}
			return runProxy(cmd.Context(), cfg, rules)
		}),
	}
	f := cmd.Flags()
	f.Var(control, "control", "control plane gRPC address, HOST:PORT; for several control planes sharing one CA and state, repeat the flag or separate addresses with commas: the proxy uses the first that answers and fails over in order")
	f.StringVar(&cfg.CAFile, "ca-file", "", "the mesh root (the control plane's DATA_DIR/ca.crt), to verify the control plane")
	f.StringVar(&cfg.JWKSCAFile, "jwks-ca-file", "", "extra roots (PEM) for fetching the JWKS of JWTAuthentication issuers, besides the system's")
	f.StringVar(&tokenFile, "token-file", "", "file holding the join token (trellis token create)")
	f.StringVar(&cfg.Service, "service", "", "service name (required)")
	f.StringVar(&cfg.Namespace, "namespace", "default", "namespace")
	f.StringVar(&cfg.ServiceAccount, "service-account", "", "service account (default: the service name)")
	f.StringVar(&cfg.AppAddr, "app-addr", "", "where the local application listens (HOST:PORT)")
	f.StringVar(&cfg.Protocol, "protocol", meshconfig.ProtocolHTTP, "the application's protocol: http, http2, grpc or tcp")
	f.StringVar(&cfg.InboundAddr, "inbound-addr", proxy.DefaultInboundAddr, "mTLS listener other proxies dial")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "address other proxies dial (default: --inbound-addr when not unspecified)")
	f.StringArrayVar(&upstreams, "upstream", nil, "SERVICE.NAMESPACE=HOST:PORT: a local listener forwarding to that mesh service (repeatable)")
	f.StringVar(&cfg.HTTPProxyAddr, "http-proxy-addr", proxy.DefaultHTTPProxyAddr, "HTTP forward proxy for http://SERVICE.NAMESPACE/... (off to disable)")
	f.BoolVar(&cfg.Transparent, "transparent", false, "capture the workload's traffic with iptables rules in this network namespace: see docs/transparent.md")
	f.StringVar(&cfg.OutboundCaptureAddr, "outbound-capture-addr", proxy.DefaultOutboundCaptureAddr, "with --transparent: where the workload's redirected outbound connections arrive (the HTTP proxy is then off unless --http-proxy-addr names another port)")
	f.BoolVar(&captureIPv6, "ipv6", false, "with --transparent: also capture IPv6 (ip6tables, where the kernel allows; the capture listener then listens dual-stack on :15001)")
	f.BoolVar(&skipIPTables, "skip-iptables", false, "with --transparent: do not install the capture rules (an init step with more privileges ran `trellis iptables apply`)")
	f.DurationVar(&cfg.ProtocolDetectTimeout, "protocol-detect-timeout", capture.DefaultProtocolDetectTimeout, "with --transparent: how long a captured connection to an HTTP service may stay silent before it is tunneled as opaque TCP")
	f.StringVar(&cfg.AdminAddr, "admin-addr", proxy.DefaultAdminAddr, "admin endpoint: /ready /live /metrics /config")
	f.StringVar(&cfg.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "the mesh's trust domain, for a Kubernetes ServiceAccount token in --token-file (a join token names its own)")
	f.StringVar(&cfg.HealthAddr, "health-addr", "", "health endpoint serving only /ready and /live, for a kubelet's probes on the pod's address (e.g. 0.0.0.0:15021; default: off)")
	f.StringVar(&cfg.DNSAddr, "dns-addr", "", "mesh DNS server, UDP and TCP (e.g. 127.0.0.1:15053): answers SERVICE.NAMESPACE.mesh with virtual IPs, forwards other names to /etc/resolv.conf's nameservers (default: off)")
	f.StringArrayVar(&labels, "label", nil, "KEY=VALUE workload label for policy selectors (repeatable)")
	f.StringVar(&cfg.CollectorAddr, "collector", "", "collector gRPC address for telemetry: the control plane or a trellis collector (default: the mesh's collector address, else --control, which embeds the collector)")
	f.Float64Var(&cfg.AccessLogSampleRate, "access-log-sample-rate", 0, "fraction of inbound HTTP requests sent to the collector as access events, 0 (off) to 1 (every request)")
	f.DurationVar(&cfg.StatsInterval, "stats-interval", proxy.DefaultStatsInterval, "how often traffic stats (for the service graph) go to the collector; at least 1s")
	f.StringVar(&cfg.SpoolDir, "spool-dir", "", "directory keeping unacknowledged telemetry events across restarts (default: memory only)")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", proxy.DefaultDrainTimeout, "how long SIGTERM waits for in-flight requests")
	f.DurationVar(&cfg.Limits.BodyIdleTimeout, "body-idle-timeout", limits.DefaultBodyIdleTimeout, "an inbound request body that makes no progress for this long ends the exchange (408)")
	f.IntVar(&cfg.Limits.AppMaxRequests, "app-max-requests", limits.DefaultAppMaxRequests, "requests in flight to the app at most (each holds an app connection over HTTP/1.1)")
	f.IntVar(&cfg.Limits.AppMaxPending, "app-max-pending", limits.DefaultAppMaxPending, "requests waiting for --app-max-requests at most (up to 5s each); beyond, 503")
	f.IntVar(&cfg.Limits.CallerMaxRequests, "caller-max-requests", limits.DefaultCallerMaxRequests, "requests in flight to the app from one caller identity at most; beyond, 503")
	f.IntVar(&cfg.Limits.MaxHeaderBytes, "max-header-bytes", limits.DefaultMaxHeaderBytes, "request head size limit on the net/http path (431 beyond)")
	f.IntVar(&cfg.Limits.MaxHeaderFields, "max-header-fields", limits.DefaultMaxHeaderFields, "request header fields limit on the net/http path (431 beyond)")
	lf.register(cmd)
	return cmd
}

// readTokenFile sets cfg's token from --token-file's path ("" leaves it
// unset, for validation to name).
func readTokenFile(cfg *proxy.Config, path string) error {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return userError("--token-file: %v", err)
	}
	cfg.Token, cfg.TokenFile = strings.TrimSpace(string(data)), path
	return nil
}

// parseLabels reads --label KEY=VALUE values; none gives nil.
func parseLabels(labels []string) (map[string]string, error) {
	if len(labels) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, userError("--label %q: want KEY=VALUE", l)
		}
		out[k] = v
	}
	return out, nil
}

// addrList is --control's value: repeatable, each value one address or
// several separated by commas, in order; the first value given replaces
// the default. Addresses are checked by proxy.New.
type addrList struct {
	addrs []string
	set   bool
}

func (l *addrList) String() string { return strings.Join(l.addrs, ",") }

func (l *addrList) Set(v string) error {
	if !l.set {
		l.addrs, l.set = nil, true
	}
	for _, a := range strings.Split(v, ",") {
		l.addrs = append(l.addrs, strings.TrimSpace(a))
	}
	return nil
}

func (l *addrList) Type() string { return "strings" }

// captureRules are the iptables rules `trellis proxy --transparent`
// installs: outbound to the capture listener, inbound for the app's port
// to the inbound listener, DNS to the mesh DNS server.
func captureRules(cfg proxy.Config, log *slog.Logger) (iptables.Config, error) {
	port := func(flag, addr string) (uint16, error) {
		if addr == "" {
			return 0, nil
		}
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			return 0, userError("%s %q: want HOST:PORT: %v", flag, addr, err)
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return 0, userError("%s %q: with --transparent the port must be fixed (not 0)", flag, addr)
		}
		return uint16(n), nil
	}
	r := iptables.Config{Logger: log}
	var err error
	capture := cfg.OutboundCaptureAddr
	if capture == "" {
		capture = proxy.DefaultOutboundCaptureAddr
	}
	if r.OutboundPort, err = port("--outbound-capture-addr", capture); err != nil {
		return r, err
	}
	inbound := cfg.InboundAddr
	if inbound == "" {
		inbound = proxy.DefaultInboundAddr
	}
	if r.InboundPort, err = port("--inbound-addr", inbound); err != nil {
		return r, err
	}
	if r.DNSPort, err = port("--dns-addr", cfg.DNSAddr); err != nil {
		return r, err
	}
	if cfg.AppAddr != "" {
		app, err := port("--app-addr", cfg.AppAddr)
		if err != nil {
			return r, err
		}
		r.InboundPorts = []uint16{app}
	}
	return r, nil
}

// runProxy runs a proxy until ctx ends, then drains it. With rules, it
// installs the transparent-capture rules once the proxy is set up (New
// checks it may mark its sockets) and removes them on the way out.
func runProxy(ctx context.Context, cfg proxy.Config, rules *iptables.Config) error {
	p, err := proxy.New(cfg)
	if err != nil {
		return userError("proxy: %v", err)
	}
	if rules != nil {
		if err := iptables.Apply(ctx, *rules); err != nil {
			return userError("proxy --transparent: %v", err)
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := iptables.Remove(rctx, *rules); err != nil {
				cfg.Logger.Error("could not remove the capture rules; run `trellis iptables remove`", "err", err)
			}
		}()
	}
	if err := p.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return userError("proxy: %v", err)
	}
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout+5*time.Second)
	defer cancel()
	return p.Shutdown(shutdown)
}
