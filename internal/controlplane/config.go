package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Defaults for Config's zero values.
const (
	DefaultGRPCAddr    = "127.0.0.1:15012"
	DefaultAPIAddr     = "127.0.0.1:15014"
	DefaultTrustDomain = "trellis.local"
)

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// DataDir holds the store, CA keys, admin.token and ca.crt. Required;
	// created 0700.
	DataDir string
	// GRPCAddr is the TLS gRPC listener for proxies (default 127.0.0.1:15012;
	// port 0 picks a free port, see Server.GRPCAddr).
	GRPCAddr string
	// APIAddr is the HTTP admin API listener (default 127.0.0.1:15014). A
	// non-loopback address is served with TLS.
	APIAddr string
	// TrustDomain is fixed at first start. Empty means the stored one, or
	// trellis.local at first start.
	TrustDomain string
	// CACertFile and CAKeyFile load an intermediate issued by the user's PKI
	// instead of generating a CA; set both or neither.
	CACertFile string
	CAKeyFile  string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.GRPCAddr == "" {
		c.GRPCAddr = DefaultGRPCAddr
	}
	if c.APIAddr == "" {
		c.APIAddr = DefaultAPIAddr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required: a directory for the store, CA keys and admin token")
	}
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", c.GRPCAddr}, {"--api-addr", c.APIAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q: want HOST:PORT: %w", a.flag, a.addr, err)
		}
	}
	if (c.CACertFile == "") != (c.CAKeyFile == "") {
		return errors.New("--ca-cert and --ca-key go together: give both to use your own intermediate, or neither to let Trellis create a CA")
	}
	return nil
}

// isLoopbackAddr reports whether a listen address only accepts local
// connections.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
