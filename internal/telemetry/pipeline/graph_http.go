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
