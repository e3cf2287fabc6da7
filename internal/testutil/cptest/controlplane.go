// Package cptest starts real control planes on loopback ports for tests
// (kept apart from testutil so that packages the control plane imports can
// still use testutil's fixtures in their tests). Only tests import it.
//
// It must not be imported by non-test code.
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
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/bolt"
	"github.com/trellismesh/trellis/internal/testutil"
)

// ControlPlane is a real control plane on loopback ports for a test.
type ControlPlane struct {
	*controlplane.Server
	DataDir string
	Token   string
	// Store is the control plane's store. When StartControlPlane opened it
	// (cfg.Store was nil), Stop closes it after the server.
	Store     store.Store
	ownsStore bool
}

// StartControlPlane starts a control plane with its data in cfg.DataDir (a
// new temp dir when empty) on free loopback ports, and stops it when the
// test ends. cfg's DataDir, addresses and Logger are filled in when empty;
// a nil cfg.Store means the bolt store DataDir/state.db, as `trellis
// control` opens it.
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
	owns := cfg.Store == nil
	if owns {
		cfg.Store = OpenStore(t, cfg.DataDir)
	}
	srv, err := controlplane.New(context.Background(), cfg)
	if err == nil {
		if err = srv.Start(); err != nil {
			_ = srv.Close(context.Background())
		}
	}
	if err != nil {
		if owns {
			_ = cfg.Store.Close()
		}
		t.Fatalf("start control plane: %v", err)
	}
	cp := &ControlPlane{Server: srv, DataDir: cfg.DataDir, Store: cfg.Store, ownsStore: owns}
	t.Cleanup(func() { cp.Stop(t) })
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatalf("read admin token: %v", err)
	}
	cp.Token = strings.TrimSpace(string(tok))
	return cp
}

// OpenStore opens the bolt store a control plane with data dir dir uses
// (creating dir 0700). The caller closes it; the test fails if it cannot
// be opened.
func OpenStore(t testing.TB, dir string) store.Store {
	t.Helper()
	if err := controlplane.PrepareDataDir(dir); err != nil {
		t.Fatalf("open store: %v", err)
	}
	st, err := bolt.Open(filepath.Join(dir, controlplane.StoreFile), bolt.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return st
}

// Stop stops the control plane, then closes its store if
// StartControlPlane opened it; calling it twice is fine.
func (cp *ControlPlane) Stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cp.Close(ctx); err != nil {
		t.Errorf("stop control plane: %v", err)
	}
	if cp.ownsStore {
		if err := cp.Store.Close(); err != nil {
			t.Errorf("close control plane store: %v", err)
		}
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
