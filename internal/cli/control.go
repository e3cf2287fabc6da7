package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/logging"
	"github.com/trellismesh/trellis/internal/store"
)

// logFlags are --log-level and --log-format, on every long-running role.
type logFlags struct{ level, format string }

func (l *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func newControlCmd() *cobra.Command {
	var cfg controlplane.Config
	var lf logFlags
	var kf kubeFlags
	var sf storeFlags
	var shf sharedFlags
	cmd := &cobra.Command{
		Use:   "control",
		Short: "Run the control plane (store, CA, join tokens, admin API)",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("trust-domain") {
				cfg.TrustDomain = ""
			}
			return runControl(cmd, cfg, lf, kf, sf, shf)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the store, CA keys, admin.token and ca.crt (required; created 0700)")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", controlplane.DefaultGRPCAddr, "gRPC listen address for proxies (TLS)")
	f.StringVar(&cfg.APIAddr, "api-addr", controlplane.DefaultAPIAddr, "admin API listen address (TLS unless loopback)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", controlplane.DefaultTrustDomain, "SPIFFE trust domain, fixed at first start")
	f.StringVar(&cfg.CACertFile, "ca-cert", "", "PEM file: an intermediate from your own PKI followed by its chain up to the root")
	f.StringVar(&cfg.CAKeyFile, "ca-key", "", "PEM file (mode 0600): the key of --ca-cert's intermediate")
	f.StringArrayVar(&cfg.AuditSinks, "audit-sink", nil, "deliver every audit event at least once to this sink (repeatable): syslog+tcp://HOST:PORT, syslog+tls://HOST:PORT?ca=CA.pem, file:///PATH.jsonl, http(s)://URL")
	f.StringVar(&cfg.CollectorAddr, "collector-addr", "", "HOST:PORT of an external `trellis collector`: proxies and the control plane send telemetry there instead of to the embedded collector")
	f.DurationVar(&cfg.EndpointGracePeriod, "endpoint-grace-period", controlplane.DefaultEndpointGracePeriod, "how long a workload whose config stream dropped stays an endpoint")
	f.DurationVar(&cfg.AckTimeout, "ack-timeout", controlplane.DefaultAckTimeout, "a proxy that has not acknowledged a snapshot this long after it was sent is STALE")
	f.DurationVar(&cfg.DriftGrace, "drift-grace", controlplane.DefaultDriftGrace, "a proxy running another config than it acknowledged this long is DRIFTED and is sent its config again")
	f.DurationVar(&cfg.ReportInterval, "report-interval", controlplane.DefaultReportInterval, "how often proxies report the config they run")
	f.BoolVar(&cfg.MetricsRequireToken, "metrics-require-token", false, "serve /metrics only with the admin token (Authorization: Bearer), like /api/; by default it needs none")
	f.TextVar(&cfg.VIPRange, "vip-range", controlplane.DefaultVIPRange, "prefix services' stable virtual IPs (mesh DNS names) are assigned from; kept forever, so leave room to grow")
	sf.register(cmd)
	shf.register(cmd)
	lf.register(cmd)
	kf.register(cmd)
	return cmd
}

// runControl runs a control plane until the command's context ends.
func runControl(cmd *cobra.Command, cfg controlplane.Config, lf logFlags, kf kubeFlags, sf storeFlags, shf sharedFlags) error {
	log, err := logging.New(cmd.ErrOrStderr(), lf.level, lf.format)
	if err != nil {
		return userError("%v", err)
	}
	cfg.Logger = log
	ctx := cmd.Context()
	st, err := openStore(ctx, cfg.DataDir, sf)
	if errors.Is(err, store.ErrUnavailable) {
		return fmt.Errorf("control: %w", err)
	} else if err != nil {
		return userError("control: %v", err)
	}
	cfg.Store = st
	shared := strings.HasPrefix(sf.store, etcdScheme)
	if shared {
		if err := shareCA(ctx, &cfg, st, shf, log); err != nil {
			_ = st.Close()
			if errors.Is(err, store.ErrUnavailable) {
				return fmt.Errorf("control: %w", err)
			}
			return userError("control: %v", err)
		}
	} else if shf.kekFile != "" || shf.replica != "" {
		_ = st.Close()
		return userError("control: --ca-kek-file and --replica-id are for replicas sharing a store (--store %sHOST:PORT,...)", etcdScheme)
	}
	startKube, err := kubeMode(ctx, &cfg, kf, log)
	if err != nil {
		_ = st.Close()
		return userError("control: %v", err)
	}
	srv, err := controlplane.New(ctx, cfg)
	if err != nil {
		_ = st.Close()
		return userError("control: %v", err)
	}
	if err := srv.Start(); err != nil {
		_ = srv.Close(context.Background())
		_ = st.Close()
		return userError("control: %v", err)
	}
	stopKube, err := startKube()
	if err != nil {
		_ = srv.Close(context.Background())
		_ = st.Close()
		return userError("control: %v", err)
	}
	defer stopKube()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-srv.Err():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	if err := srv.Close(shutdown); err != nil {
		errs = append(errs, fmt.Errorf("control: %w", err))
	}
	if err := st.Close(); err != nil {
		errs = append(errs, fmt.Errorf("control: close store: %w", err))
	}
	if serveErr != nil {
		errs = append(errs, fmt.Errorf("control: %w", serveErr))
	}
	return errors.Join(errs...)
}
