package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/bolt"
)

// DefaultBasePort puts the control plane on its usual ports (15012, 15014)
// and the demo workloads on base+100, base+200, base+300 and up.
const DefaultBasePort = 15000

// Options configures the demo. Zero values mean the documented defaults.
type Options struct {
	// BasePort moves every port: control plane base+12 (gRPC) and base+14
	// (admin API); frontend base+100.., catalog base+200.., payments base+300...
	BasePort int
	// DataDir is the control plane's data dir; empty means a new temporary
	// directory, removed on exit.
	DataDir string
	// TrafficInterval between generated requests; zero means 1s, negative
	// disables the generator.
	TrafficInterval time.Duration
	Logger          *slog.Logger
	// Out receives the banner.
	Out io.Writer
}

// Mesh is a running demo.
type Mesh struct {
	opts     Options
	DataDir  string
	Control  *controlplane.Server
	store    store.Store // the control plane's; closed by Stop after it
	Proxies  map[string]*proxy.Proxy
	Frontend string // URL of the frontend application
	// ConsoleURL is the web console; ViewerToken an admin token of role
	// viewer to log in to it with (the root token is DATA_DIR/admin.token).
	ConsoleURL  string
	ViewerToken string
	// Edge is the ingress gateway and what calling through it takes.
	Edge    *Edge
	servers []*http.Server
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	tmpDir  string

	mu       sync.Mutex
	ok, fail int
}

type workload struct {
	name      string
	offset    int
	upstreams []string // services the app calls, through local listeners
	handler   func(m *Mesh) http.Handler
}

func (m *Mesh) port(off int) string { return "127.0.0.1:" + strconv.Itoa(m.opts.BasePort+off) }

// Start brings the whole mesh up and returns once every proxy is ready.
func Start(ctx context.Context, opts Options) (_ *Mesh, err error) {
	if opts.BasePort == 0 {
		opts.BasePort = DefaultBasePort
	}
	if opts.BasePort < 1024 || opts.BasePort > 65000 {
		return nil, fmt.Errorf("--base-port %d: use 1024..65000", opts.BasePort)
	}
	if opts.TrafficInterval == 0 {
		opts.TrafficInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	m := &Mesh{opts: opts, Proxies: map[string]*proxy.Proxy{}, DataDir: opts.DataDir}
	defer func() {
		if err != nil {
			m.Stop(context.Background())
		}
	}()
	if m.DataDir == "" {
		if m.tmpDir, err = os.MkdirTemp("", "trellis-demo-"); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		m.DataDir = filepath.Join(m.tmpDir, "control")
	}
	if err := controlplane.PrepareDataDir(m.DataDir); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if m.store, err = bolt.Open(filepath.Join(m.DataDir, controlplane.StoreFile), bolt.Options{}); err != nil {
		return nil, fmt.Errorf("demo: open store: %w", err)
	}
	m.Control, err = controlplane.New(ctx, controlplane.Config{
		DataDir: m.DataDir, Store: m.store, GRPCAddr: m.port(12), APIAddr: m.port(14), Logger: opts.Logger.With("component", "control"),
	})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if err := m.Control.Start(); err != nil {
		return nil, fmt.Errorf("demo: %w (another `trellis up` running? move it with --base-port)", err)
	}
	client, err := m.adminClient()
	if err != nil {
		return nil, err
	}
	if err := applyPolicies(ctx, client); err != nil {
		return nil, err
	}
	// As trellis admin-token create --role viewer does.
	viewer, err := client.CreateAdminToken(ctx, adminapi.CreateAdminTokenRequest{Role: "viewer"})
	if err != nil {
		return nil, fmt.Errorf("demo: create a viewer admin token: %w", err)
	}
	m.ViewerToken = viewer.Token
	m.ConsoleURL = m.Control.APIURL() + "/ui/"

	workloads := []workload{
		{name: "catalog", offset: 200, handler: func(*Mesh) http.Handler { return catalogApp("v1", 10) }},
		{name: "catalog-v2", offset: 500, handler: func(*Mesh) http.Handler { return catalogApp("v2", 0) }},
		{name: "payments", offset: 300, handler: func(*Mesh) http.Handler { return paymentsApp() }},
		{name: "frontend", offset: 100, upstreams: []string{"catalog", "payments"}, handler: func(m *Mesh) http.Handler {
			return frontendApp("http://"+m.port(102), "http://"+m.port(103))
		}},
	}
	rctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	for _, w := range workloads {
		if err := m.startWorkload(ctx, client, w); err != nil {
			return nil, err
		}
	}
	if err := m.startEdge(ctx, client); err != nil {
		return nil, err
	}
	for name, p := range m.Proxies {
		select {
		case <-p.Ready():
		case <-time.After(15 * time.Second):
			return nil, fmt.Errorf("demo: proxy %s not ready after 15s", name)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	m.Frontend = "http://" + m.port(100) + "/"
	if opts.TrafficInterval > 0 {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.traffic(rctx) }()
	}
	return m, nil
}

func (m *Mesh) adminClient() (*adminapi.Client, error) {
	tok, err := os.ReadFile(filepath.Join(m.DataDir, controlplane.AdminTokenFile))
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	return adminapi.NewClient(m.Control.APIURL(), string(trimNL(tok)), "")
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// startWorkload starts the app and its sidecar.
func (m *Mesh) startWorkload(ctx context.Context, client *adminapi.Client, w workload) error {
	appAddr := m.port(w.offset)
	l, err := net.Listen("tcp", appAddr)
	if err != nil {
		return fmt.Errorf("demo: %s app %s: %w (move the demo with --base-port)", w.name, appAddr, err)
	}
	srv := &http.Server{Handler: w.handler(m), ReadHeaderTimeout: 5 * time.Second}
	m.servers = append(m.servers, srv)
	go srv.Serve(l)

	tok, err := client.CreateToken(ctx, adminapi.CreateTokenRequest{Service: w.name, Namespace: "shop"})
	if err != nil {
		return fmt.Errorf("demo: token for %s: %w", w.name, err)
	}
	cfg := proxy.Config{
		ControlAddr:   m.Control.GRPCAddr(),
		CAFile:        filepath.Join(m.DataDir, identity.RootCertFile),
		Token:         tok.Token,
		Service:       w.name,
		Namespace:     "shop",
		AppAddr:       appAddr,
		InboundAddr:   m.port(w.offset + 6),
		AdminAddr:     m.port(w.offset + 10),
		HTTPProxyAddr: "off",
		DrainTimeout:  3 * time.Second,
		// `trellis top` on the demo should come alive within seconds.
		StatsInterval: 2 * time.Second,
		Logger:        m.opts.Logger.With("component", "proxy", "service", w.name),
	}
	if len(w.upstreams) > 0 {
		cfg.HTTPProxyAddr = m.port(w.offset + 1)
	}
	for i, up := range w.upstreams {
		cfg.Upstreams = append(cfg.Upstreams, proxy.Upstream{Service: up, Namespace: "shop", Listen: m.port(w.offset + 2 + i)})
	}
	p, err := proxy.New(cfg)
	if err != nil {
		return fmt.Errorf("demo: proxy for %s: %w", w.name, err)
	}
	if err := p.Start(ctx); err != nil {
		return fmt.Errorf("demo: proxy for %s: %w", w.name, err)
	}
	m.Proxies[w.name] = p
	return nil
}

// traffic calls the frontend now and then, so metrics move.
func (m *Mesh) traffic(ctx context.Context) {
	client := &http.Client{Timeout: 5 * time.Second}
	t := time.NewTicker(m.opts.TrafficInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		resp, err := client.Get(m.Frontend)
		m.mu.Lock()
		if err == nil && resp.StatusCode == http.StatusOK {
			m.ok++
		} else {
			m.fail++
		}
		m.mu.Unlock()
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}

// Traffic returns the generator's counts of good and failed calls.
func (m *Mesh) Traffic() (ok, fail int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ok, m.fail
}

// Stop stops everything the demo started, proxies first (draining), and
// removes a temporary data dir.
func (m *Mesh) Stop(ctx context.Context) error {
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
	var errs []error
	for _, p := range m.Proxies {
		errs = append(errs, p.Shutdown(ctx))
	}
	for _, s := range m.servers {
		errs = append(errs, s.Shutdown(ctx))
	}
	if m.Control != nil {
		errs = append(errs, m.Control.Close(ctx))
	}
	if m.store != nil {
		errs = append(errs, m.store.Close())
	}
	if m.tmpDir != "" {
		errs = append(errs, os.RemoveAll(m.tmpDir))
	}
	return errors.Join(errs...)
}

// demoPolicies let exactly frontend -> catalog (GET), its canary
// catalog-v2 (GET) and payments (POST /charge) through; a Route sends 10%
// of catalog's requests to catalog-v2, and a TrafficPolicy retries
// catalog's flaky 503s within a budget.
const demoPolicies = `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads-catalog, namespace: shop}
spec:
  selector: {service: catalog}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to:   [{methods: [GET], paths: ["/items", "/items/*"]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads-catalog-v2, namespace: shop}
spec:
  selector: {service: catalog-v2}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to:   [{methods: [GET], paths: ["/items", "/items/*"]}]
---
apiVersion: trellis.dev/v1alpha1
kind: Route
metadata: {name: catalog-canary, namespace: shop}
spec:
  service: catalog
  rules:
  - matches: [{headers: {x-canary: "1"}}]
    backends: [{service: catalog-v2}]
  - backends: [{service: catalog, weight: 90}, {service: catalog-v2, weight: 10}]
---
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: catalog, namespace: shop}
spec:
  selector: {service: catalog}
  timeout: 2s
  retries: {attempts: 2, on: [5xx, reset, connect-failure], budget: {ratio: 0.2, minPerSecond: 10}}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-pays, namespace: shop}
spec:
  selector: {service: payments}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to:   [{methods: [POST], paths: ["/charge"]}]
`

func applyPolicies(ctx context.Context, c *adminapi.Client) error {
	objs, err := resource.Decode([]byte(demoPolicies), "demo-policies.yaml")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if _, err := c.Apply(ctx, objs, false); err != nil {
		return fmt.Errorf("demo: apply policies: %w", err)
	}
	return nil
}
