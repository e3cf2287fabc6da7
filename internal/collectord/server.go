package collectord

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminhttp"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/telemetry/pipeline"
	"github.com/trellismesh/trellis/internal/workloadcert"
)

// drainTimeout bounds how long Close waits for streams to end.
const drainTimeout = 5 * time.Second

// bundleRefresh is how often the collector renews its certificate to
// learn the current trust bundle: it has no config stream, and during a
// CA rotation proxies' new certificates chain to a root it must trust
// (the CA's cross-signature covers it until retire-old).
const bundleRefresh = time.Minute

// Server is a running standalone collector.
type Server struct {
	cfg   Config
	log   *slog.Logger
	id    spiffeid.ID
	certs *workloadcert.Manager
	pipe  *pipeline.Pipeline
	token adminhttp.Token
	reg   *prometheus.Registry

	grpcSrv         *grpc.Server
	httpSrv         *http.Server
	grpcLis, apiLis net.Listener
	cancel          context.CancelFunc
	wg              sync.WaitGroup
	serveErr        chan error
	closeOnce       sync.Once
	closeErr        error
}

// New checks cfg, obtains the collector's certificate from the control
// plane (retrying until ctx ends while it is unreachable), opens the
// event log and sinks, and binds both listeners. Call Close when done.
func New(ctx context.Context, cfg Config) (_ *Server, err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	id, err := collectorIDFromToken(cfg.Token)
	if err != nil {
		return nil, err
	}
	rootsPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	roots, err := identity.ParseCertsPEM(rootsPEM)
	if err != nil {
		return nil, fmt.Errorf("--ca-file %s: %w", cfg.CAFile, err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	tok, err := adminhttp.LoadOrCreate(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("spiffe_id", id.String()), id: id, token: tok, serveErr: make(chan error, 2)}
	s.certs = workloadcert.New(id, cfg.ControlAddr, pool, cfg.Token, s.log, cfg.Clock)
	if err := s.certs.Obtain(ctx); err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	s.pipe, err = pipeline.Open(pipeline.Options{DataDir: cfg.DataDir, Sinks: cfg.AuditSinks, Logger: cfg.Logger, Clock: cfg.Clock})
	if err != nil {
		return nil, err
	}
	s.pipe.Collector.SetLocalReporter(s.id.String())
	defer func() {
		if err != nil {
			s.pipe.Close()
		}
	}()
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(s.pipe, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if s.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("--grpc-addr %s: %w", cfg.GRPCAddr, err)
	}
	if s.apiLis, err = net.Listen("tcp", cfg.APIAddr); err != nil {
		s.grpcLis.Close()
		return nil, fmt.Errorf("--api-addr %s: %w", cfg.APIAddr, err)
	}
	return s, nil
}

// collectorIDFromToken reads the identity a join token names (the control
// plane verifies the token itself) and checks it is the collector's.
func collectorIDFromToken(token string) (spiffeid.ID, error) {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		return spiffeid.ID{}, fmt.Errorf("--token-file: not a Trellis join token (%v); create one with `trellis token create --service collector --namespace trellis-system`", err)
	}
	id, err := spiffeid.FromString(claims.Subject)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("--token-file: the token's subject %q is not a SPIFFE ID", claims.Subject)
	}
	if want := identity.CollectorID(id.TrustDomain()); id != want {
		return spiffeid.ID{}, fmt.Errorf("--token-file: the token is for %s, but a collector must be %s; create one with `trellis token create --service collector --namespace trellis-system`", id, want)
	}
	return id, nil
}

// Start serves in the background.
func (s *Server) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.grpcSrv = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.serverTLS())),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	s.pipe.Collector.Register(s.grpcSrv)
	s.pipe.Start()
	s.httpSrv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.wg.Add(4)
	go func() { defer s.wg.Done(); s.certs.Run(ctx) }()
	go func() {
		defer s.wg.Done()
		t := s.cfg.Clock.NewTicker(bundleRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C():
				s.certs.RenewNow()
			}
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.grpcSrv.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.serveErr <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(s.apiLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr <- fmt.Errorf("admin api: %w", err)
		}
	}()
	s.log.Info("collector started", "grpc_addr", s.GRPCAddr(), "api_addr", s.APIAddr(), "data_dir", s.cfg.DataDir, "sinks", len(s.cfg.AuditSinks))
}

// serverTLS serves with the current certificate and requires a client
// certificate that identity.VerifySVID accepts against the current mesh
// roots, in this trust domain (the collector binds each stream to its ID).
func (s *Server) serverTLS() *tls.Config {
	td := s.id.TrustDomain()
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			bundle := s.certs.Bundle()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				NextProtos:   []string{"h2"},
				Certificates: []tls.Certificate{*s.certs.Certificate()},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    bundle,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if _, err := identity.VerifySVID(cs.PeerCertificates, bundle, td, x509.ExtKeyUsageClientAuth); err != nil {
						return fmt.Errorf("client certificate: %w", err)
					}
					return nil
				},
			}, nil
		},
	}
}

func (s *Server) routes() http.Handler {
	api := http.NewServeMux()
	api.Handle("GET "+adminapi.PathGraph, s.pipe.GraphHandler())
	api.Handle("GET "+adminapi.PathShapes, s.pipe.ShapesHandler())
	api.Handle("GET "+adminapi.PathAlerts, s.pipe.AlertsHandler())
	api.Handle("GET "+adminapi.PathAuditVerify, s.pipe.AuditVerifyHandler())
	api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		adminhttp.WriteError(w, http.StatusNotFound, fmt.Errorf("no such endpoint on a collector: %s %s (it serves GET %s, GET %s, GET %s and GET %s)", r.Method, r.URL.Path, adminapi.PathGraph, adminapi.PathShapes, adminapi.PathAlerts, adminapi.PathAuditVerify))
	})
	authed := s.token.Require("collector", api)
	metrics := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case adminapi.PathHealthz, adminapi.PathReadyz:
			adminhttp.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		case adminapi.PathMetrics:
			metrics.ServeHTTP(w, r)
		default:
			authed.ServeHTTP(w, r)
		}
	})
}

// Err delivers the first fatal serving error, if any.
func (s *Server) Err() <-chan error { return s.serveErr }

// GRPCAddr is the bound Telemetry address.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// APIAddr is the bound admin API address.
func (s *Server) APIAddr() string { return s.apiLis.Addr().String() }

// APIURL is the admin API's base URL.
func (s *Server) APIURL() string { return "http://" + s.APIAddr() }

// Close ends the streams (proxies keep their events and reconnect), stops
// serving and closes the log. Calling it again returns the first result.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.pipe.Collector.Shutdown()
		if s.httpSrv != nil {
			_ = s.httpSrv.Shutdown(ctx)
		} else {
			s.apiLis.Close()
		}
		if s.grpcSrv != nil {
			done := make(chan struct{})
			go func() { s.grpcSrv.GracefulStop(); close(done) }()
			t := time.NewTimer(drainTimeout)
			select {
			case <-done:
			case <-ctx.Done():
				s.grpcSrv.Stop()
			case <-t.C:
				s.grpcSrv.Stop()
			}
			t.Stop()
		} else {
			s.grpcLis.Close()
		}
		if s.cancel != nil {
			s.cancel()
		}
		s.wg.Wait()
		s.closeErr = s.pipe.Close()
		s.log.Info("collector stopped")
	})
	return s.closeErr
}
