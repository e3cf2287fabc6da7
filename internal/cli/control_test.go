package cli_test

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/store/bolt"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// TestControlStore: `trellis control` keeps its state in the bolt store
// DATA_DIR/state.db and closes it on exit.
func TestControlStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cp")
	// A port free a moment ago, so the test can wait for /readyz: the
	// admin token exists before the control plane is up, and stopping it
	// mid-start is an error exit.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		var out strings.Builder
		done <- cli.Main(ctx, []string{"control", "--data-dir", dir, "--api-addr", api, "--grpc-addr", "127.0.0.1:0", "--log-level", "error"}, strings.NewReader(""), &out, &out)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, err := http.Get("http://" + api + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case code := <-done:
			t.Fatalf("trellis control exited with %d before it was up", code)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("trellis control not ready after 10s")
		}
	}
	cancel()
	if code := <-done; code != cli.ExitOK {
		t.Fatalf("trellis control exited with %d, want %d", code, cli.ExitOK)
	}

	st, err := bolt.Open(filepath.Join(dir, controlplane.StoreFile), bolt.Options{})
	if err != nil {
		t.Fatalf("open the store after exit: %v (was it left open?)", err)
	}
	defer st.Close()
	kv, err := st.Get(t.Context(), "/meta/trust-domain")
	if err != nil || string(kv.Value) != controlplane.DefaultTrustDomain {
		t.Errorf("trust domain in %s = %q, %v; want %q", controlplane.StoreFile, kv.Value, err, controlplane.DefaultTrustDomain)
	}
}

// TestControlStoreInUse: a second control plane on a data dir whose store
// another one holds is refused, saying so.
func TestControlStoreInUse(t *testing.T) {
	clearEnv(t)
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	r := run(t, "", "control", "--data-dir", cp.DataDir, "--api-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0")
	if r.code != cli.ExitUser || !strings.Contains(r.stderr, "control: open store: ") || !strings.Contains(r.stderr, "another process") {
		t.Errorf("got %v\nwant exit %d and an open store error naming another process", r, cli.ExitUser)
	}
}
