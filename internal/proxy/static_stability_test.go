package proxy_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// lockedBuffer collects log lines written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCertificateExpiryWithControlPlaneDown: with the control plane gone,
// a proxy keeps trying to renew and says so loudly (ERROR log lines, the
// failure counter, the expiry gauge); /ready stays up while the
// certificate is valid and goes down, naming the cause, once it expired.
func TestCertificateExpiryWithControlPlaneDown(t *testing.T) {
	const ttl = 6 * time.Second
	cp := meshtest.StartControlPlane(t, controlplane.Config{WorkloadTTL: ttl})
	var logs lockedBuffer
	p := meshtest.StartProxy(t, cp, proxy.Config{
		Service: "catalog", AppAddr: "127.0.0.1:9",
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	expiry := time.Unix(int64(metricValue(t, p, "trellis_certificate_expiry_timestamp_seconds")), 0)
	cp.Stop(t)

	ready := func() (int, string) {
		resp, err := http.Get("http://" + p.AdminAddr() + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body["reason"]
	}
	// Until the certificate expires: ready, while renewals fail loudly.
	for time.Until(expiry) > 500*time.Millisecond {
		if code, reason := ready(); code != http.StatusOK {
			t.Fatalf("/ready %d (%s) %s before the certificate expires; it must stay up", code, reason, time.Until(expiry).Round(time.Millisecond))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := metricValue(t, p, "trellis_certificate_request_failures_total"); n < 1 {
		t.Errorf("trellis_certificate_request_failures_total = %v with the control plane down, want >= 1", n)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"certificate renewal failed; retrying"`) {
		t.Errorf("no ERROR log of the failing renewal near expiry; logs:\n%s", logs.String())
	}
	// Once expired: not ready, and the reason says why.
	time.Sleep(time.Until(expiry) + 1100*time.Millisecond)
	code, reason := ready()
	if code != http.StatusServiceUnavailable || !strings.Contains(reason, "expired") {
		t.Errorf("/ready after expiry: %d %q, want 503 naming the expired certificate", code, reason)
	}
}
