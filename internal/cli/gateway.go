package cli

import (
	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/logging"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/servingcert"
)

// DefaultGatewayAdminAddr is `trellis gateway`'s admin endpoint, apart
// from a sidecar's on the same host.
const DefaultGatewayAdminAddr = "127.0.0.1:15100"

func newGatewayCmd() *cobra.Command {
	var cfg proxy.Config
	gw := &proxy.GatewayConfig{}
	var lf logFlags
	var tokenFile string
	var certs, keys, labels []string
	control := &addrList{addrs: []string{proxy.DefaultControlAddr}}
	cmd := &cobra.Command{
		Use:   "gateway --service NAME --token-file PATH --ca-file PATH --listen-https :8443 --tls-cert FILE --tls-key FILE ...",
		Short: "Run an ingress gateway: HTTPS and HTTP from outside the mesh, routed by GatewayRoutes to mesh services over mTLS",
		Long: `Run an ingress gateway with a mesh identity of its own. Clients outside the mesh
connect over TLS (certificates chosen by SNI, reloaded when the files change) or
plain HTTP; each request is routed by host and path prefix (GatewayRoute
resources), passes end-user JWT authentication, authorization and rate limits
selecting the gateway's service, and is forwarded over mTLS, so services see
the gateway's SPIFFE ID. See docs/gateway.md.`,
		Args: noArgs,
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
			if len(certs) != len(keys) {
				return userError("--tls-cert given %d times and --tls-key %d times: give them in pairs, one key per certificate, in the same order", len(certs), len(keys))
			}
			for i := range certs {
				gw.Certs = append(gw.Certs, servingcert.Pair{CertFile: certs[i], KeyFile: keys[i]})
			}
			if cfg.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			cfg.Gateway = gw
			cfg.HTTPProxyAddr = "off"
			return runProxy(cmd.Context(), cfg, nil)
		}),
	}
	f := cmd.Flags()
	f.Var(control, "control", "control plane gRPC address, HOST:PORT; repeat the flag or separate addresses with commas for several control planes")
	f.StringVar(&cfg.CAFile, "ca-file", "", "the mesh root (the control plane's DATA_DIR/ca.crt), to verify the control plane")
	f.StringVar(&tokenFile, "token-file", "", "file holding the join token (trellis token create --service NAME)")
	f.StringVar(&cfg.Service, "service", "", "the gateway's service name (required): policies name the gateway by it")
	f.StringVar(&cfg.Namespace, "namespace", "default", "namespace")
	f.StringVar(&cfg.ServiceAccount, "service-account", "", "service account (default: the service name)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "the mesh's trust domain, for a Kubernetes ServiceAccount token in --token-file")
	f.StringVar(&gw.ListenHTTPS, "listen-https", "", "HTTPS listener for clients, HOST:PORT (e.g. :8443); needs --tls-cert and --tls-key")
	f.StringVar(&gw.ListenHTTP, "listen-http", "", "plain-HTTP listener for clients, HOST:PORT (e.g. :8080)")
	f.StringArrayVar(&certs, "tls-cert", nil, "PEM certificate chain for --listen-https (repeatable: one per name set, chosen by SNI; the first is the default)")
	f.StringArrayVar(&keys, "tls-key", nil, "PEM private key of the --tls-cert in the same position (repeatable)")
	f.BoolVar(&gw.RedirectHTTP, "redirect-http", false, "answer every plain-HTTP request with a 308 redirect to https")
	f.DurationVar(&gw.CertReloadInterval, "cert-reload-interval", proxy.DefaultCertReloadInterval, "how often the certificate files are checked for changes")
	f.StringVar(&cfg.JWKSCAFile, "jwks-ca-file", "", "extra roots (PEM) for fetching the JWKS of JWTAuthentication issuers, besides the system's")
	f.StringVar(&cfg.AdminAddr, "admin-addr", DefaultGatewayAdminAddr, "admin endpoint: /ready /live /metrics /config")
	f.StringArrayVar(&labels, "label", nil, "KEY=VALUE workload label for policy selectors (repeatable; trellis.dev/role=gateway is always set)")
	f.StringVar(&cfg.CollectorAddr, "collector", "", "collector gRPC address for telemetry (default: the mesh's collector address, else --control)")
	f.DurationVar(&cfg.StatsInterval, "stats-interval", proxy.DefaultStatsInterval, "how often traffic stats go to the collector; at least 1s")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", proxy.DefaultDrainTimeout, "how long SIGTERM waits for in-flight requests")
	lf.register(cmd)
	return cmd
}
