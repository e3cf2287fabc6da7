package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
)

func newUpCmd() *cobra.Command {
	var cfg controlplane.Config
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a local demo mesh (for now: the control plane alone)",
		Long: "up runs a local demo mesh on an embedded store until interrupted.\n" +
			"Until the sidecar proxy lands, it runs the control plane alone and prints how to drive it with the CLI.",
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return runControl(cmd, cfg, lf, func(srv *controlplane.Server) {
				dir, _ := filepath.Abs(cfg.DataDir)
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "Trellis demo: control plane running (the demo runs the control plane alone until the sidecar proxy lands).\n\n")
				fmt.Fprintf(out, "  trust domain  %s\n  admin API     %s\n  proxy gRPC    %s\n  mesh root     %s\n\n", srv.TrustDomain(), srv.APIURL(), srv.GRPCAddr(), filepath.Join(dir, identity.RootCertFile))
				fmt.Fprintf(out, "In another shell:\n  export TRELLIS_API=%s TRELLIS_TOKEN_FILE=%s\n", srv.APIURL(), filepath.Join(dir, controlplane.AdminTokenFile))
				fmt.Fprintf(out, "  bin/trellis get mesh\n  bin/trellis apply -f examples/\n  bin/trellis get authz -A\n  bin/trellis token create --service web --namespace shop\n\nPress Ctrl-C to stop.\n")
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", ".trellis/demo", "directory for the demo's state")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", controlplane.DefaultGRPCAddr, "gRPC listen address for proxies")
	f.StringVar(&cfg.APIAddr, "api-addr", controlplane.DefaultAPIAddr, "admin API listen address")
	lf.register(cmd)
	return cmd
}
