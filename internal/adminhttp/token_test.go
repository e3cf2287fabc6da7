package adminhttp_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/adminhttp"
)

// TestRequireBearerScheme: the scheme is case-insensitive (RFC 7235), the
// token is not, and anything else is 401 with a hint.
func TestRequireBearerScheme(t *testing.T) {
	dir := t.TempDir()
	tok, err := adminhttp.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, adminhttp.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(string(data))
	srv := httptest.NewServer(tok.Require("control plane", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	defer srv.Close()

	for _, tc := range []struct {
		name, header string
		want         int
	}{
		{"Bearer", "Bearer " + secret, http.StatusNoContent},
		{"bearer", "bearer " + secret, http.StatusNoContent},
		{"BEARER", "BEARER " + secret, http.StatusNoContent},
		{"mixed case", "bEaReR " + secret, http.StatusNoContent},
		{"extra spaces", "Bearer   " + secret + " ", http.StatusNoContent},
		{"wrong token", "Bearer " + strings.Repeat("0", len(secret)), http.StatusUnauthorized},
		{"token in other case", "Bearer " + strings.ToUpper(secret), http.StatusUnauthorized},
		{"bearer, wrong token", "bearer nope", http.StatusUnauthorized},
		{"no token", "Bearer", http.StatusUnauthorized},
		{"other scheme", "Basic " + secret, http.StatusUnauthorized},
		{"scheme prefix only", "Bearerx " + secret, http.StatusUnauthorized},
		{"no header", "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/x", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.StatusCode; got != tc.want {
				t.Errorf("Authorization %q: got %d, want %d", tc.header, got, tc.want)
			}
			if tc.want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}
