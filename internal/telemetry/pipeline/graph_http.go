package pipeline

import (
	"fmt"
	"net/http"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminhttp"
)

// Bounds of GET /api/v1/graph?window=.
const (
	minGraphWindow = time.Second
	maxGraphWindow = 10 * time.Minute
)

// GraphHandler serves GET /api/v1/graph?window=DURATION (default 1m): the
// service graph over the window, as adminapi.Graph JSON.
func (p *Pipeline) GraphHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		window := time.Minute
		if v := r.URL.Query().Get("window"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < minGraphWindow || d > maxGraphWindow {
				adminhttp.WriteError(w, http.StatusBadRequest, fmt.Errorf("window %q: want a duration between %s and %s, e.g. 1m", v, minGraphWindow, maxGraphWindow))
				return
			}
			window = d
		}
		adminhttp.WriteJSON(w, http.StatusOK, p.Collector.Graph().Snapshot(window))
	})
}

// ShapesHandler serves GET /api/v1/shapes?namespace=NS: the request shapes
// learned per edge, as adminapi.ShapeList JSON.
func (p *Pipeline) ShapesHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns := r.URL.Query().Get("namespace")
		adminhttp.WriteJSON(w, http.StatusOK, adminapi.ShapeList{Edges: p.Collector.Shapes().Edges(ns)})
	})
}

// AlertsHandler serves GET /api/v1/alerts?since=RFC3339: the anomaly
// alerts that started then or later, oldest first, as adminapi.AlertList.
func (p *Pipeline) AlertsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var since time.Time
		if v := r.URL.Query().Get("since"); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				adminhttp.WriteError(w, http.StatusBadRequest, fmt.Errorf("since %q: want an RFC 3339 time, e.g. 2026-12-01T10:00:00Z", v))
				return
			}
			since = t
		}
		out := adminapi.AlertList{Alerts: []adminapi.Alert{}}
		for _, a := range p.Collector.Anomalies().Alerts(since) {
			out.Alerts = append(out.Alerts, adminapi.Alert{Detector: a.Detector, Severity: a.Severity, Principal: a.Principal, Service: a.Service,
				Detail: a.Detail, Started: a.Started, Explanation: a.Explanation, Baseline: a.Baseline, Observed: a.Observed, Threshold: a.Threshold})
		}
		adminhttp.WriteJSON(w, http.StatusOK, out)
	})
}
