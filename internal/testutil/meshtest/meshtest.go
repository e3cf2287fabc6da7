// Package meshtest runs a mesh in-process for tests: real control planes
// (from testutil/cptest) and real proxies against them, every listener on
// a free loopback port, everything stopped when the test ends. Its helpers
// read as verbs: StartControlPlane, StartProxy, MustApply; poll with
// testutil.Eventually.
//
// Only tests import it. It is the one package that may import every role
// (control plane and proxy), since joining them is its job; so no role's
// internal tests can use it (package controlplane importing meshtest would
// be a cycle) — those use testutil and cptest.
//
// It must not be imported by non-test code.
package meshtest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// Namespace is the namespace StartProxy puts a proxy in when its config
// names none.
const Namespace = "shop"

// ControlPlane is a real control plane on loopback ports (cptest's).
type ControlPlane = cptest.ControlPlane

// StartControlPlane starts a control plane for the test with cfg (see
// cptest.StartControlPlane for the defaults) and stops it when the test
// ends.
func StartControlPlane(t testing.TB, cfg controlplane.Config) *ControlPlane {
	t.Helper()
	return cptest.StartControlPlane(t, cfg)
}

// MustApply applies the YAML documents docs through cp's admin API, as
// `trellis apply` does, and fails the test unless that works.
func MustApply(t testing.TB, cp *ControlPlane, docs string) {
	t.Helper()
	objs, err := resource.Decode([]byte(docs), "test.yaml")
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if _, err := cp.Client(t).Apply(context.Background(), objs, false); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// An Option changes how StartProxy starts a proxy.
type Option func(*options)

type options struct {
	readyWithin time.Duration
	beforeStart func(*proxy.Proxy)
}

// ReadyWithin sets how long StartProxy waits for the proxy to be ready
// (default 10s).
func ReadyWithin(d time.Duration) Option { return func(o *options) { o.readyWithin = d } }

// BeforeStart calls f with the proxy after New and before Start, for what
// must be set in between (a fake original-destination lookup).
func BeforeStart(f func(*proxy.Proxy)) Option { return func(o *options) { o.beforeStart = f } }

// StartProxy starts a real proxy against cp with cfg, waits until it is
// ready (it holds a certificate and its first config), and shuts it down
// when the test ends. The service, namespace, app address, upstreams,
// protocol and everything else come from cfg; its zero fields get test
// defaults:
//
//   - Namespace: Namespace ("shop");
//   - Token: a new join token from cp for Service, Namespace and
//     ServiceAccount;
//   - ControlAddr and CAFile: cp's;
//   - InboundAddr, AdminAddr, and HTTPProxyAddr (except in transparent
//     mode, where the proxy's default is off), or OutboundCaptureAddr in
//     transparent mode: a free loopback port ("off" keeps the HTTP proxy
//     off);
//   - DrainTimeout: 2s;
//   - Logger: one writing to t, each line tagged proxy=SERVICE.
func StartProxy(t testing.TB, cp *ControlPlane, cfg proxy.Config, opts ...Option) *proxy.Proxy {
	t.Helper()
	o := options{readyWithin: 10 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.Namespace == "" {
		cfg.Namespace = Namespace
	}
	if cfg.Token == "" {
		tok, err := cp.Client(t).CreateToken(context.Background(), adminapi.CreateTokenRequest{
			Service: cfg.Service, Namespace: cfg.Namespace, ServiceAccount: cfg.ServiceAccount,
		})
		if err != nil {
			t.Fatalf("start proxy %s.%s: %v", cfg.Service, cfg.Namespace, err)
		}
		cfg.Token = tok.Token
	}
	if cfg.ControlAddr == "" {
		cfg.ControlAddr = cp.GRPCAddr()
	}
	if cfg.CAFile == "" {
		cfg.CAFile = filepath.Join(cp.DataDir, identity.RootCertFile)
	}
	setLoopback := func(addr *string) {
		if *addr == "" {
			*addr = "127.0.0.1:0"
		}
	}
	setLoopback(&cfg.InboundAddr)
	setLoopback(&cfg.AdminAddr)
	if cfg.Transparent {
		setLoopback(&cfg.OutboundCaptureAddr)
	} else {
		setLoopback(&cfg.HTTPProxyAddr)
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t).With("proxy", cfg.Service)
	}
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("start proxy %s.%s: %v", cfg.Service, cfg.Namespace, err)
	}
	if o.beforeStart != nil {
		o.beforeStart(p)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("start proxy %s.%s: %v", cfg.Service, cfg.Namespace, err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	select {
	case <-p.Ready():
	case <-time.After(o.readyWithin):
		t.Fatalf("proxy %s.%s not ready after %s", cfg.Service, cfg.Namespace, o.readyWithin)
	}
	return p
}
