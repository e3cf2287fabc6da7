// Package cptest starts real control planes on loopback ports for tests
// (kept apart from testutil so that packages the control plane imports can
// still use testutil's fixtures in their tests). Only tests import it.
package cptest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/testutil"
)

// ControlPlane is a real control plane on loopback ports for a test.
type ControlPlane struct {
	*controlplane.Server
	DataDir string
	Token   string
}

// StartControlPlane starts a control plane with its data in dataDir (a new
// temp dir when empty) on free loopback ports, and stops it when the test
// ends. cfg's DataDir, addresses and Logger are filled in when empty.
func StartControlPlane(t testing.TB, cfg controlplane.Config) *ControlPlane {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(t.TempDir(), "control")
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	if cfg.APIAddr == "" {
		cfg.APIAddr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t)
	}
	srv, err := controlplane.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	if err := srv.Start(); err != nil {
		_ = srv.Close(context.Background())
		t.Fatalf("start control plane: %v", err)
	}
	cp := &ControlPlane{Server: srv, DataDir: cfg.DataDir}
	t.Cleanup(func() { cp.Stop(t) })
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatalf("read admin token: %v", err)
	}
	cp.Token = strings.TrimSpace(string(tok))
	return cp
}

// Stop stops the control plane; calling it twice is fine.
func (cp *ControlPlane) Stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cp.Close(ctx); err != nil {
		t.Errorf("stop control plane: %v", err)
	}
}

// Client returns an admin API client holding the admin token.
func (cp *ControlPlane) Client(t testing.TB) *adminapi.Client {
	t.Helper()
	caFile := ""
	if strings.HasPrefix(cp.APIURL(), "https://") {
		caFile = filepath.Join(cp.DataDir, "ca.crt")
	}
	c, err := adminapi.NewClient(cp.APIURL(), cp.Token, caFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
