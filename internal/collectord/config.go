package collectord

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/trellismesh/trellis/internal/clock"
)

// Defaults for Config's zero values.
const (
	DefaultGRPCAddr    = "127.0.0.1:15016"
	DefaultAPIAddr     = "127.0.0.1:15017"
	DefaultControlAddr = "127.0.0.1:15012"
)

// Config configures a collector. Zero values mean the documented defaults.
type Config struct {
	// DataDir holds the event log (events/), collector state and sink
	// cursors (collector/) and admin.token. Required; created 0700.
	DataDir string
	// GRPCAddr is the mTLS listener for Telemetry streams.
	GRPCAddr string
	// APIAddr serves /healthz, /readyz, /metrics and, with the admin
	// token, GET /api/v1/graph. Loopback only: the bearer token must not
	// cross a network in the clear.
	APIAddr string
	// ControlAddr is the control plane's gRPC address (certificates).
	ControlAddr string
	// CAFile is the mesh root (the control plane's DATA_DIR/ca.crt).
	CAFile string
	// Token is a join token for trellis-system/collector.
	Token string
	// AuditSinks are --audit-sink URLs.
	AuditSinks []string
	Logger     *slog.Logger
	// Clock times certificate renewal and the trust bundle refresh; nil
	// is the system clock.
	Clock clock.Clock
}

func (c *Config) setDefaults() {
	if c.GRPCAddr == "" {
		c.GRPCAddr = DefaultGRPCAddr
	}
	if c.APIAddr == "" {
		c.APIAddr = DefaultAPIAddr
	}
	if c.ControlAddr == "" {
		c.ControlAddr = DefaultControlAddr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Clock = clock.Or(c.Clock)
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required: a directory for the event log, sink cursors and admin token")
	}
	if c.CAFile == "" {
		return errors.New("--ca-file is required: the mesh root, the control plane's DATA_DIR/ca.crt")
	}
	if c.Token == "" {
		return errors.New("--token-file is required: create a token with `trellis token create --service collector --namespace trellis-system`")
	}
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", c.GRPCAddr}, {"--api-addr", c.APIAddr}, {"--control", c.ControlAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q: want HOST:PORT: %w", a.flag, a.addr, err)
		}
	}
	host, _, _ := net.SplitHostPort(c.APIAddr)
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--api-addr %s: must be a loopback address (the admin token must not cross a network in the clear); put a TLS reverse proxy in front for remote access", c.APIAddr)
	}
	return nil
}
