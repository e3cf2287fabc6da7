package demo

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// catalogApp lists items; it shows who called it, as the mesh told it,
// and which version answered. failEvery > 0 answers every failEvery-th
// request 503 (the demo's flaky catalog, whose TrafficPolicy retries hide
// it from the frontend).
func catalogApp(version string, failEvery int64) http.Handler {
	var n atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items", func(w http.ResponseWriter, r *http.Request) {
		if failEvery > 0 && n.Add(1)%failEvery == 0 {
			http.Error(w, "catalog: a flaky moment", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, map[string]any{
			"items":   []map[string]any{{"id": 1, "name": "trellis", "price": 1200}, {"id": 2, "name": "vine", "price": 300}},
			"caller":  callerOf(r),
			"version": version,
		})
	})
	return mux
}

// paymentsApp charges; it shows who called it.
func paymentsApp() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /charge", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		writeJSON(w, map[string]any{"charged": true, "request": string(body), "caller": callerOf(r)})
	})
	return mux
}

// frontendApp calls catalog and payments through its sidecar's explicit
// outbound listeners: plain HTTP to local ports, mTLS on the wire.
func frontendApp(catalogURL, paymentsURL string) http.Handler {
	client := &http.Client{Timeout: 5 * time.Second}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		out := map[string]any{}
		if resp, err := client.Get(catalogURL + "/items"); err != nil {
			out["catalog"] = "error: " + err.Error()
		} else {
			out["catalog"] = decodeOrStatus(resp)
		}
		if resp, err := client.Post(paymentsURL+"/charge", "application/json", strings.NewReader(`{"item":1}`)); err != nil {
			out["payments"] = "error: " + err.Error()
		} else {
			out["payments"] = decodeOrStatus(resp)
		}
		writeJSON(w, out)
	})
	return mux
}

func decodeOrStatus(resp *http.Response) any {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var v any
	if json.Unmarshal(body, &v) != nil {
		return string(body)
	}
	return v
}

// callerOf reads the caller identity from the header the sidecar sets
// (X-Forwarded-Client-Cert: By=...;URI=<caller>).
func callerOf(r *http.Request) string {
	for _, part := range strings.Split(r.Header.Get("X-Forwarded-Client-Cert"), ";") {
		if v, ok := strings.CutPrefix(part, "URI="); ok {
			return v
		}
	}
	return "unknown (no mesh identity)"
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
