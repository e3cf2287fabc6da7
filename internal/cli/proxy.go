package cli

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/logging"
	"github.com/trellismesh/trellis/internal/proxy"
)

func newProxyCmd() *cobra.Command {
	var cfg proxy.Config
	var lf logFlags
	var tokenFile string
	var upstreams, labels []string
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
			if tokenFile != "" {
				data, err := os.ReadFile(tokenFile)
				if err != nil {
					return userError("--token-file: %v", err)
				}
				cfg.Token = strings.TrimSpace(string(data))
			}
			for _, u := range upstreams {
				up, err := proxy.ParseUpstream(u)
				if err != nil {
					return userError("%v", err)
				}
				cfg.Upstreams = append(cfg.Upstreams, up)
			}
			if len(labels) > 0 {
				cfg.Labels = map[string]string{}
				for _, l := range labels {
					k, v, ok := strings.Cut(l, "=")
					if !ok || k == "" {
						return userError("--label %q: want KEY=VALUE", l)
					}
					cfg.Labels[k] = v
				}
			}
			return runProxy(cmd.Context(), cfg)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ControlAddr, "control", proxy.DefaultControlAddr, "control plane gRPC address")
	f.StringVar(&cfg.CAFile, "ca-file", "", "the mesh root (the control plane's DATA_DIR/ca.crt), to verify the control plane")
	f.StringVar(&tokenFile, "token-file", "", "file holding the join token (trellis token create)")
	f.StringVar(&cfg.Service, "service", "", "service name (required)")
	f.StringVar(&cfg.Namespace, "namespace", "default", "namespace")
	f.StringVar(&cfg.ServiceAccount, "service-account", "", "service account (default: the service name)")
	f.StringVar(&cfg.AppAddr, "app-addr", "", "where the local application listens (HOST:PORT)")
	f.StringVar(&cfg.Protocol, "protocol", proxy.ProtocolHTTP, "the application's protocol: http, http2, grpc or tcp")
	f.StringVar(&cfg.InboundAddr, "inbound-addr", proxy.DefaultInboundAddr, "mTLS listener other proxies dial")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "address other proxies dial (default: --inbound-addr when not unspecified)")
	f.StringArrayVar(&upstreams, "upstream", nil, "SERVICE.NAMESPACE=HOST:PORT: a local listener forwarding to that mesh service (repeatable)")
	f.StringVar(&cfg.HTTPProxyAddr, "http-proxy-addr", proxy.DefaultHTTPProxyAddr, "HTTP forward proxy for http://SERVICE.NAMESPACE/... (off to disable)")
	f.StringVar(&cfg.AdminAddr, "admin-addr", proxy.DefaultAdminAddr, "admin endpoint: /ready /live /metrics /config")
	f.StringArrayVar(&labels, "label", nil, "KEY=VALUE workload label for policy selectors (repeatable)")
	f.StringVar(&cfg.CollectorAddr, "collector", "", "collector gRPC address for telemetry: the control plane or a trellis collector (default: the mesh's collector address, else --control, which embeds the collector)")
	f.Float64Var(&cfg.AccessLogSampleRate, "access-log-sample-rate", 0, "fraction of inbound HTTP requests sent to the collector as access events, 0 (off) to 1 (every request)")
	f.DurationVar(&cfg.StatsInterval, "stats-interval", proxy.DefaultStatsInterval, "how often traffic stats (for the service graph) go to the collector; at least 1s")
	f.StringVar(&cfg.SpoolDir, "spool-dir", "", "directory keeping unacknowledged telemetry events across restarts (default: memory only)")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", proxy.DefaultDrainTimeout, "how long SIGTERM waits for in-flight requests")
	lf.register(cmd)
	return cmd
}

// runProxy runs a proxy until ctx ends, then drains it.
func runProxy(ctx context.Context, cfg proxy.Config) error {
	p, err := proxy.New(cfg)
	if err != nil {
		return userError("proxy: %v", err)
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
