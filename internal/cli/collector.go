package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/collectord"
	"github.com/trellismesh/trellis/internal/logging"
)

func newCollectorCmd() *cobra.Command {
	var cfg collectord.Config
	var lf logFlags
	var tokenFile string
	cmd := &cobra.Command{
		Use:   "collector",
		Short: "Run a standalone telemetry collector (event log, audit sinks, service graph)",
		Long: `Run the telemetry collector on its own, instead of the one embedded in the
control plane. It joins the mesh with a join token for trellis-system/collector:

  trellis token create --service collector --namespace trellis-system > collector.token
  trellis collector --data-dir /var/lib/trellis-collector --ca-file CP_DATA_DIR/ca.crt \
      --token-file collector.token --audit-sink file:///var/log/trellis/audit.jsonl
  trellis control --data-dir CP_DATA_DIR --collector-addr 127.0.0.1:15016

Proxies learn the collector's address from the control plane.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if tokenFile != "" {
				data, err := os.ReadFile(tokenFile)
				if err != nil {
					return userError("--token-file: %v", err)
				}
				cfg.Token = strings.TrimSpace(string(data))
				if cfg.Token == "" {
					return userError("--token-file %s: empty; create a token with `trellis token create --service collector --namespace trellis-system`", tokenFile)
				}
			}
			return runCollector(cmd, cfg, lf)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the event log, sink cursors and admin.token (required; created 0700)")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", collectord.DefaultGRPCAddr, "mTLS listen address for telemetry streams from proxies and the control plane")
	f.StringVar(&cfg.APIAddr, "api-addr", collectord.DefaultAPIAddr, "loopback admin API: /healthz /readyz /metrics, and /api/v1/graph with the admin token")
	f.StringVar(&cfg.ControlAddr, "control", collectord.DefaultControlAddr, "control plane gRPC address (for the collector's certificate)")
	f.StringVar(&cfg.CAFile, "ca-file", "", "the mesh root (the control plane's DATA_DIR/ca.crt)")
	f.StringVar(&tokenFile, "token-file", "", "file holding a join token for trellis-system/collector")
	f.StringArrayVar(&cfg.AuditSinks, "audit-sink", nil, "deliver every audit event at least once to this sink (repeatable): syslog+tcp://HOST:PORT, syslog+tls://HOST:PORT?ca=CA.pem, file:///PATH.jsonl, http(s)://URL")
	lf.register(cmd)
	// The root's --token-file and --ca-file mean the admin API's; this
	// command's own flags of the same names shadow them.
	return cmd
}

func runCollector(cmd *cobra.Command, cfg collectord.Config, lf logFlags) error {
	log, err := logging.New(cmd.ErrOrStderr(), lf.level, lf.format)
	if err != nil {
		return userError("%v", err)
	}
	cfg.Logger = log
	ctx := cmd.Context()
	srv, err := collectord.New(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return userError("collector: %v", err)
	}
	srv.Start()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-srv.Err():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(shutdown); err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	if serveErr != nil {
		return fmt.Errorf("collector: %w", serveErr)
	}
	return nil
}
