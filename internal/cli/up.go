package cli

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/demo"
	"github.com/trellismesh/trellis/internal/logging"
)

func newUpCmd() *cobra.Command {
	var opts demo.Options
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a demo mesh on this machine until Ctrl-C",
		Long: "up runs a whole demo mesh in one process: a control plane on a temporary data dir, three demo\n" +
			"services (frontend calling catalog and payments in namespace shop), a sidecar proxy beside each,\n" +
			"a canary catalog-v2 taking 10% of catalog's requests (a Route), retries of catalog's flaky 503s\n" +
			"within a budget (a TrafficPolicy),\n" +
			"the policies for exactly those calls, an ingress gateway for https://shop.example.com with a demo\n" +
			"identity provider and users' tokens, and a light traffic generator.",
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			log, err := logging.New(cmd.ErrOrStderr(), lf.level, lf.format)
			if err != nil {
				return userError("%v", err)
			}
			opts.Logger = log
			ctx := cmd.Context()
			m, err := demo.Start(ctx, opts)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return userError("up: %v", err)
			}
			printBanner(cmd, m)
			<-ctx.Done()
			fmt.Fprintln(cmd.OutOrStdout(), "\nstopping the demo mesh...")
			shutdown, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			return m.Stop(shutdown)
		}),
	}
	f := cmd.Flags()
	f.IntVar(&opts.BasePort, "base-port", demo.DefaultBasePort, "move every demo port: control plane base+12/base+14, workloads base+100 and up")
	f.StringVar(&opts.DataDir, "data-dir", "", "control plane data dir (default: a temporary dir removed on exit)")
	f.DurationVar(&opts.TrafficInterval, "traffic-interval", time.Second, "interval of the demo traffic generator (negative disables it)")
	cmd.Flags().StringVar(&lf.level, "log-level", "warn", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&lf.format, "log-format", "text", "log format: text or json")
	return cmd
}

func printBanner(cmd *cobra.Command, m *demo.Mesh) {
	out := cmd.OutOrStdout()
	token := filepath.Join(m.DataDir, controlplane.AdminTokenFile)
	fmt.Fprintf(out, "Trellis demo mesh is up (trust domain %s).\n\n", m.Control.TrustDomain())
	fmt.Fprintf(out, "  control plane   gRPC %s   admin API %s\n", m.Control.GRPCAddr(), m.Control.APIURL())
	fmt.Fprintf(out, "  data dir        %s\n", m.DataDir)
	fmt.Fprintf(out, "  web console     %s   log in with the viewer token below (or %s for root)\n", m.ConsoleURL, token)
	fmt.Fprintf(out, "  viewer token    %s\n", m.ViewerToken)
	names := make([]string, 0, len(m.Proxies))
	for n := range m.Proxies {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := m.Proxies[n]
		fmt.Fprintf(out, "  %-9s proxy   inbound %s   admin http://%s\n", n, p.InboundAddr(), p.AdminAddr())
	}
	fmt.Fprintf(out, "\nThe frontend (calls catalog and payments through its sidecar, mTLS on the wire):\n  curl %s\n\n", m.Frontend)
	if e := m.Edge; e != nil {
		_, port, _ := net.SplitHostPort(e.Addr)
		fmt.Fprintf(out, "The gateway (https://%s, certificate from a demo CA; frontend lets in only admins, by their JWT):\n", demo.DemoHost)
		fmt.Fprintf(out, "  curl --cacert %s --resolve %s:%s:127.0.0.1 \\\n    -H \"Authorization: Bearer $(cat %s)\" %s\n", e.CAFile, demo.DemoHost, port, e.AdminToken, e.URL)
		fmt.Fprintf(out, "  (with %s, a user without the admin claim: 403; without a token: 403)\n\n", e.UserToken)
	}
	fmt.Fprintf(out, "Look around, in another shell:\n")
	fmt.Fprintf(out, "  export TRELLIS_API=%s TRELLIS_TOKEN_FILE=%s\n", m.Control.APIURL(), token)
	fmt.Fprintf(out, "  bin/trellis get authz -n shop              # the policies that let exactly these calls through\n")
	fmt.Fprintf(out, "  bin/trellis get mesh\n")
	fmt.Fprintf(out, "  bin/trellis top --watch 2s                 # live traffic per edge: frontend->catalog-v2 is the 10%% canary\n")
	fmt.Fprintf(out, "  bin/trellis route check --from frontend.shop --to catalog.shop --path /items   # the split, and catalog's retries and budget\n")
	if p, ok := m.Proxies["frontend"]; ok {
		fmt.Fprintf(out, "  curl http://%s/config                 # what the frontend's proxy knows\n", p.AdminAddr())
		fmt.Fprintf(out, "  curl -s http://%s/metrics | grep trellis_requests_total\n", p.AdminAddr())
		fmt.Fprintf(out, "  curl -s http://%s/metrics | grep trellis_retries   # catalog's 503s, retried within the budget\n", p.AdminAddr())
		if a := p.HTTPProxyAddr(); a != "" {
			fmt.Fprintf(out, "  curl -x http://%s http://catalog.shop/items   # through the frontend's HTTP proxy port\n", a)
		}
	}
	fmt.Fprintf(out, "\nPress Ctrl-C to stop everything.\n")
}
