package controlplane_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// get sends GET path with an Authorization header (none when empty) and
// returns the status and body.
func get(t *testing.T, url, authorization string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestAdminAPIBearerScheme: the scheme is matched case-insensitively
// (RFC 7235), the token exactly.
func TestAdminAPIBearerScheme(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	for _, tc := range []struct {
		authorization string
		want          int
	}{
		{"Bearer " + cp.Token, http.StatusOK},
		{"bearer " + cp.Token, http.StatusOK},
		{"BEARER " + cp.Token, http.StatusOK},
		{"bearer wrong", http.StatusUnauthorized},
		{"BEARER " + strings.ToUpper(cp.Token), http.StatusUnauthorized},
		{"Basic " + cp.Token, http.StatusUnauthorized},
	} {
		if got, body := get(t, cp.APIURL()+"/api/v1/resources/meshes", tc.authorization); got != tc.want {
			t.Errorf("Authorization %q: got %d, want %d; body %s", tc.authorization, got, tc.want, body)
		}
	}
}

// TestMetricsRequireToken: /metrics is open by default; with
// MetricsRequireToken (trellis control --metrics-require-token) it needs
// the admin token, under any case of the scheme. /healthz stays open.
func TestMetricsRequireToken(t *testing.T) {
	open := cptest.StartControlPlane(t, controlplane.Config{})
	closed := cptest.StartControlPlane(t, controlplane.Config{MetricsRequireToken: true})
	for _, tc := range []struct {
		name          string
		cp            *cptest.ControlPlane
		path          string
		authorization string
		want          int
	}{
		{"default, no token", open, "/metrics", "", http.StatusOK},
		{"default, wrong token", open, "/metrics", "Bearer wrong", http.StatusOK},
		{"required, no token", closed, "/metrics", "", http.StatusUnauthorized},
		{"required, wrong token", closed, "/metrics", "Bearer wrong", http.StatusUnauthorized},
		{"required, Bearer", closed, "/metrics", "Bearer " + closed.Token, http.StatusOK},
		{"required, bearer", closed, "/metrics", "bearer " + closed.Token, http.StatusOK},
		{"required, BEARER", closed, "/metrics", "BEARER " + closed.Token, http.StatusOK},
		{"required, BEARER wrong token", closed, "/metrics", "BEARER " + open.Token, http.StatusUnauthorized},
		{"required, healthz stays open", closed, "/healthz", "", http.StatusOK},
		{"required, readyz stays open", closed, "/readyz", "", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, body := get(t, tc.cp.APIURL()+tc.path, tc.authorization)
			if got != tc.want {
				t.Fatalf("GET %s: got %d, want %d; body %s", tc.path, got, tc.want, body)
			}
			switch {
			case got == http.StatusUnauthorized && !strings.Contains(body, "admin.token"):
				t.Errorf("401 body %s does not point at admin.token", body)
			case got == http.StatusOK && tc.path == "/metrics" && !strings.Contains(body, "trellis_ca_intermediate_expiry_timestamp_seconds"):
				t.Errorf("/metrics lacks trellis_ca_intermediate_expiry_timestamp_seconds")
			}
		})
	}
}
