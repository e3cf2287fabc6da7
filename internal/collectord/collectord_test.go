package collectord_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/collectord"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

func token(t *testing.T, cp *cptest.ControlPlane, service, ns string) string {
	t.Helper()
	resp, err := cp.Client(t).CreateToken(context.Background(), adminapi.CreateTokenRequest{Service: service, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Token
}

// TestRefusesBadConfig: what the collector refuses, each error naming the
// flag to fix.
func TestRefusesBadConfig(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	ca := filepath.Join(cp.DataDir, identity.RootCertFile)
	good := token(t, cp, "collector", "trellis-system")
	for _, tc := range []struct {
		name string
		cfg  collectord.Config
		want string
	}{
		{"no data dir", collectord.Config{CAFile: ca, Token: good}, "--data-dir"},
		{"no ca", collectord.Config{DataDir: t.TempDir(), Token: good}, "--ca-file"},
		{"no token", collectord.Config{DataDir: t.TempDir(), CAFile: ca}, "--token-file"},
		{"workload token", collectord.Config{DataDir: t.TempDir(), CAFile: ca, Token: token(t, cp, "web", "shop")}, "ns/trellis-system/sa/collector"},
		{"not a token", collectord.Config{DataDir: t.TempDir(), CAFile: ca, Token: "abc"}, "not a Trellis join token"},
		{"remote api", collectord.Config{DataDir: t.TempDir(), CAFile: ca, Token: good, APIAddr: "0.0.0.0:0"}, "--api-addr"},
		{"bad sink", collectord.Config{DataDir: t.TempDir(), CAFile: ca, Token: good, ControlAddr: cp.GRPCAddr(),
			GRPCAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", AuditSinks: []string{"ftp://x"}}, "ftp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = testutil.Logger(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := collectord.New(ctx, tc.cfg)
			if err == nil {
				s.Close(context.Background())
				t.Fatalf("New succeeded, want an error naming %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
		})
	}
}

// TestServesGraphWithToken: the admin API needs the collector's own admin
// token for the graph, and serves health and metrics without it.
func TestServesGraphWithToken(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	dir := t.TempDir()
	s, err := collectord.New(context.Background(), collectord.Config{
		DataDir: dir, GRPCAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", ControlAddr: cp.GRPCAddr(),
		CAFile: filepath.Join(cp.DataDir, identity.RootCertFile), Token: token(t, cp, "collector", "trellis-system"),
		Logger: testutil.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Close(context.Background()) })
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/api/v1/graph": 401, "/nope": 401} {
		resp, err := http.Get(s.APIURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s without token: %d, want %d", path, resp.StatusCode, want)
		}
	}
	tok := readToken(t, filepath.Join(dir, "admin.token"))
	c, err := adminapi.NewClient(s.APIURL(), tok, "")
	if err != nil {
		t.Fatal(err)
	}
	g, err := c.Graph(context.Background(), 30*time.Second)
	if err != nil {
		t.Fatalf("graph with the collector's token: %v", err)
	}
	if g.Window != "30s" {
		t.Errorf("graph window %q, want 30s", g.Window)
	}
}

func readToken(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}
