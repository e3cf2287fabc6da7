package controlplane

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/trellismesh/trellis/internal/telemetry/anomaly"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminhttp"
	"github.com/trellismesh/trellis/internal/atomicfile"
	"github.com/trellismesh/trellis/internal/console"
	"github.com/trellismesh/trellis/internal/controlplane/admintokens"
	"github.com/trellismesh/trellis/internal/controlplane/registry"
	"github.com/trellismesh/trellis/internal/controlplane/resstore"
	"github.com/trellismesh/trellis/internal/controlplane/tokens"
	"github.com/trellismesh/trellis/internal/controlplane/vips"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/jointoken"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/store"
)

// streamDrainTimeout bounds how long Close waits for RPCs to finish after
// ending the config streams.
const streamDrainTimeout = 5 * time.Second

// Server is one control plane. Create it with New, then Start; Close stops
// it. Its methods are safe for concurrent use.
type Server struct {
	cfg        Config
	log        *slog.Logger
	store      store.Store
	outbox     *outbox // with replicas on etcd and an external collector
	ca         *meshca.CA
	rollout    *meshca.Rollout
	res        *resstore.Resources
	tokens     *tokens.Service
	adminToken adminhttp.Token
	metrics    *metrics
	serving    *meshca.ServingCert
	audit      *audit
	push       *pusher
	resCache   *resstore.Cache
	resRev     int64 // store revision resCache was loaded at
	stopPush   context.CancelFunc

	grpcSrv  *grpc.Server
	httpSrv  *http.Server
	grpcLis  net.Listener
	apiLis   net.Listener
	apiTLS   bool
	wg       sync.WaitGroup
	closeMu  sync.Mutex
	closed   bool
	serveErr chan error
	// anomalyCfg is the detectors' configuration last given to the
	// embedded collector (applyAnomalyConfig).
	anomalyMu  sync.Mutex
	anomalyCfg *anomaly.Config

	// adminTokens are the tokens with roles (trellis admin-token); the
	// bootstrap adminToken is root.
	adminTokens *admintokens.Service
	// console is the web console at /ui, built with the routes.
	console *console.Console
}

// New prepares a control plane on cfg.Store: data dir, trust domain, CA,
// token authority and admin token. It does not listen yet.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := PrepareDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	st := cfg.Store
	td, err := fixTrustDomain(ctx, st, cfg.DataDir, cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	caOpts := meshca.Options{Now: cfg.Clock.Now}
	var ca *meshca.CA
	if cfg.CACertFile != "" {
		ca, err = meshca.LoadExternal(cfg.CACertFile, cfg.CAKeyFile, td, caOpts)
		if err == nil {
			err = atomicfile.WriteFile(filepath.Join(cfg.DataDir, identity.RootCertFile), identity.EncodeCertsPEM(ca.Roots()...), 0o644)
		}
	} else {
		var created bool
		ca, created, err = meshca.LoadOrCreate(cfg.DataDir, td, caOpts)
		if created {
			cfg.Logger.Info("created mesh CA", "trust_domain", td.Name(), "root", filepath.Join(cfg.DataDir, identity.RootCertFile))
		}
	}
	if err != nil {
		return nil, err
	}
	auth, err := jointoken.LoadOrCreate(cfg.DataDir, td, jointoken.Options{Now: cfg.Clock.Now})
	if err != nil {
		return nil, err
	}
	at, err := adminhttp.LoadOrCreate(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	toks := tokens.New(tokens.Config{
		Authority: auth, Records: cfg.TokenRecords, Store: st, Now: cfg.Clock.Now, ServiceAccounts: cfg.WorkloadTokens != nil,
	})
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		store:      st,
		ca:         ca,
		res:        resstore.New(st, cfg.Clock.Now),
		tokens:     toks,
		adminToken: at,
		metrics:    newMetrics(),
		serveErr:   make(chan error, 2),
	}
	adminRecords := cfg.AdminTokenRecords
	if adminRecords == nil {
		adminRecords = admintokens.StoreRecords(st)
	}
	s.adminTokens = admintokens.New(adminRecords, cfg.Clock.Now)
	if err := s.res.EnsureDefaultMesh(ctx); err != nil {
		return nil, err
	}
	s.resCache = resstore.NewCache(cfg.Logger, cfg.Clock)
	if cfg.Resources != nil {
		objs, _ := cfg.Resources.Accepted()
		s.resCache.Replace(objs)
		s.res.UseExternal(s.resCache, cfg.Resources)
	} else if s.resRev, err = s.resCache.Load(ctx, st); err != nil {
		return nil, err
	}
	vipAlloc, err := vips.Load(ctx, st, cfg.VIPRange, cfg.Logger)
	if err != nil {
		return nil, err
	}
	s.push = newPusher(pushSettings{
		resources: s.resCache, roots: s.rootsDER, issuer: s.ca.IssuerID, vips: vipAlloc, workloads: cfg.Workloads, trustDomain: td,
		reportInterval: cfg.ReportInterval, debounce: cfg.PushDebounce,
		endpointGrace: cfg.EndpointGracePeriod, ackTimeout: cfg.AckTimeout, drift: cfg.DriftGrace,
		collectorAddr: cfg.CollectorAddr, clock: cfg.Clock, log: cfg.Logger, metrics: s.metrics,
	})
	load := registry.Load
	if cfg.ReplicaID != "" {
		load = func(ctx context.Context, st store.Store) (registry.Saved, error) {
			return registry.LoadShared(ctx, st, cfg.ReplicaID)
		}
		s.push.peers = &peers{st: st, self: cfg.ReplicaID, stale: cfg.EndpointGracePeriod, clock: cfg.Clock, log: cfg.Logger, kick: s.push.kick, shared: map[string]registry.Shared{}}
	}
	if ws, err := load(ctx, st); err != nil {
		cfg.Logger.Warn("saved proxy registry unreadable; relearning it from reconnecting proxies", "err", err)
	} else if n := s.push.reg.Restore(ws); n > 0 {
		cfg.Logger.Info("restored registered workloads (state RESTORED); they stay endpoints until their proxies reconnect, for at most the restore grace period",
			"workloads", n, "restore_grace_period", s.push.reg.RestoreGrace().String())
	}
	s.rollout = meshca.NewRollout(ca, s.proxyCerts, s.caChanged)
	s.metrics.intermediateExp.Set(float64(ca.IntermediateExpiry().Unix()))
	s.serving, err = meshca.NewServingCert(ca, cfg.Clock.Now, cfg.GRPCAddr, cfg.APIAddr)
	if err != nil {
		return nil, err
	}
	if s.audit, err = openAudit(cfg, identity.ControlPlaneID(td), s.rootPool, s.serving.Get); err != nil {
		return nil, err
	}
	if s.audit.pipe != nil {
		s.metrics.reg.MustRegister(s.audit.pipe)
	} else {
		s.metrics.reg.MustRegister(s.audit.events)
		if cfg.Elector != nil && cfg.ReplicaID != "" {
			s.outbox = newOutbox(st, cfg.ReplicaID, s.audit.events, cfg.Logger, cfg.Clock)
			s.audit.outbox = s.outbox
		}
	}
	return s, nil
}

// Start listens on the gRPC and admin addresses and serves in the
// background. It returns once both listeners are bound.
func (s *Server) Start() error {
	s.applyAnomalyConfig()
	grpcLis, err := net.Listen("tcp", s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr %s: %w", s.cfg.GRPCAddr, err)
	}
	apiLis, err := net.Listen("tcp", s.cfg.APIAddr)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("--api-addr %s: %w", s.cfg.APIAddr, err)
	}
	s.grpcLis, s.apiLis = grpcLis, apiLis

	s.grpcSrv = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.serving.TLSConfig(true))),
		// Ping idle connections so a proxy that vanished without closing
		// its connection (host gone, partition) ends its config stream and
		// its endpoint leaves the mesh after the grace period. Proxies may
		// ping as often as every 5s to detect a dead control plane.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	pb.RegisterIdentityServer(s.grpcSrv, &identityServer{ca: s.ca, tokens: s.tokens, res: s.res, log: s.log, metrics: s.metrics, ttlOverride: s.cfg.WorkloadTTL, audit: s.audit, reviewer: s.cfg.WorkloadTokens})
	pushCtx, stopPush := context.WithCancel(context.Background())
	s.stopPush = stopPush
	pb.RegisterConfigServer(s.grpcSrv, &configServer{td: s.ca.TrustDomain(), push: s.push, tokens: s.tokens, log: s.log, metrics: s.metrics, base: pushCtx})
	s.audit.register(s.grpcSrv)
	s.audit.start()
	if s.cfg.CAShare != nil {
		if err := s.followCAShare(pushCtx); err != nil {
			stopPush()
			grpcLis.Close()
			apiLis.Close()
			return fmt.Errorf("ca shared through %s: %w", s.cfg.CAShare.Where(), err)
		}
	}

	s.httpSrv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	// A non-loopback admin API is served with TLS: the bearer token must
	// never cross a network in the clear.
	if !isLoopbackAddr(s.cfg.APIAddr) {
		s.apiTLS = true
		s.httpSrv.TLSConfig = s.serving.TLSConfig(false)
	}

	s.wg.Add(5)
	go func() {
		defer s.wg.Done()
		s.push.run(pushCtx)
	}()
	if s.cfg.Workloads != nil {
		s.wg.Go(func() { s.push.followWorkloads(pushCtx) })
	}
	go func() {
		defer s.wg.Done()
		if s.cfg.ReplicaID != "" {
			s.wg.Go(func() { s.push.peers.follow(pushCtx) })
			if s.cfg.Elector != nil {
				s.wg.Go(func() { s.lead(pushCtx) })
			}
			s.push.reg.PersistShared(pushCtx, s.store, s.cfg.ReplicaID, registryHeartbeat, s.log)
			return
		}
		s.push.reg.Persist(pushCtx, s.store, s.log)
	}()
	go func() {
		defer s.wg.Done()
		if s.cfg.Resources != nil {
			s.resCache.Follow(pushCtx, s.cfg.Resources, s.resourcesChanged)
			return
		}
		s.resCache.Watch(pushCtx, s.store, s.resRev, s.resourcesChanged)
	}()
	go func() {
		defer s.wg.Done()
		if err := s.grpcSrv.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.serveErr <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		var err error
		if s.apiTLS {
			err = s.httpSrv.ServeTLS(apiLis, "", "")
		} else {
			err = s.httpSrv.Serve(apiLis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr <- fmt.Errorf("admin api: %w", err)
		}
	}()
	s.log.Info("control plane started", "grpc_addr", grpcLis.Addr().String(), "api_addr", apiLis.Addr().String(),
		"api_tls", s.apiTLS, "trust_domain", s.ca.TrustDomain().Name(), "data_dir", s.cfg.DataDir)
	return nil
}

// Err delivers the first fatal serving error, if any.
func (s *Server) Err() <-chan error { return s.serveErr }

// GRPCAddr is the bound gRPC address (useful with port 0).
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// APIAddr is the bound admin API address.
func (s *Server) APIAddr() string { return s.apiLis.Addr().String() }

// APIURL is the admin API's base URL.
func (s *Server) APIURL() string {
	if s.apiTLS {
		return "https://" + s.APIAddr()
	}
	return "http://" + s.APIAddr()
}

// TrustDomain is the mesh's trust domain.
func (s *Server) TrustDomain() string { return s.ca.TrustDomain().Name() }

// rootPool is the trust bundle as a pool.
func (s *Server) rootPool() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, r := range s.ca.Roots() {
		pool.AddCert(r)
	}
	return pool
}

// rootsDER is the trust bundle pushed to proxies.
func (s *Server) rootsDER() [][]byte {
	roots := s.ca.Roots()
	out := make([][]byte, len(roots))
	for i, r := range roots {
		out[i] = r.Raw
	}
	return out
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

// Close stops serving (gracefully, bounded by ctx). It leaves Config.Store
// open: it belongs to the caller.
func (s *Server) Close(ctx context.Context) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// Config streams never end on their own, and GracefulStop waits for
	// every open stream: end them first (proxies reconnect elsewhere or
	// later, and keep serving meanwhile).
	if s.stopPush != nil {
		s.stopPush()
		s.audit.shutdown()
	}
	if s.httpSrv != nil {
		_ = s.httpSrv.Shutdown(ctx)
	}
	if s.grpcSrv != nil {
		done := make(chan struct{})
		go func() { s.grpcSrv.GracefulStop(); close(done) }()
		// A stream handler stuck sending to a proxy that stopped reading
		// only returns when its connection closes, so do not wait long.
		drain := time.NewTimer(streamDrainTimeout)
		defer drain.Stop()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpcSrv.Stop()
		case <-drain.C:
			s.grpcSrv.Stop()
		}
	}
	s.wg.Wait()
	if err := s.audit.close(); err != nil {
		s.log.Error("close audit log", "err", err)
	}
	s.log.Info("control plane stopped")
	return nil
}
