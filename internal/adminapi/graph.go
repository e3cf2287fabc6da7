package adminapi

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Graph is the service graph (GET /api/v1/graph): services as nodes, caller
// -> callee pairs as edges, with traffic figures over the last Window. It is
// computed by the collector from the proxies' inbound counters, so a
// caller without a sidecar shows up as source "unknown".
type Graph struct {
	// Window is the span the figures cover, as a Go duration ("1m0s").
	Window string `json:"window"`
	// GeneratedAt is when the collector computed the graph.
	GeneratedAt time.Time `json:"generatedAt"`
	// Proxies is how many proxy instances reported within the window.
	Proxies int         `json:"proxies"`
	Nodes   []GraphNode `json:"nodes"`
	Edges   []GraphEdge `json:"edges"`
}

// ServiceRef names a service.
type ServiceRef struct {
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
}

// Traffic are the figures of a node (its inbound traffic from every
// caller) or an edge over the window. Rates are per second; SuccessRate
// is the share of requests neither answered 5xx nor denied by
// authorization, DenialRate the share denied (both null without
// requests); latencies are estimated from histogram buckets (null without
// requests); MTLSShare is the share of requests over mutual TLS; Denied
// counts requests refused by authorization.
type Traffic struct {
	Requests     uint64   `json:"requests"`
	RequestRate  float64  `json:"requestRate"`
	SuccessRate  *float64 `json:"successRate"`
	DenialRate   *float64 `json:"denialRate"`
	LatencyP50Ms *float64 `json:"latencyP50Ms"`
	LatencyP99Ms *float64 `json:"latencyP99Ms"`
	MTLSShare    *float64 `json:"mtlsShare"`
	Denied       uint64   `json:"denied"`
}

// GraphNode is one service. Proxies counts its instances that reported
// within the window (0 for a caller seen only as a source).
type GraphNode struct {
	ServiceRef
	Proxies int `json:"proxies"`
	Traffic
}

// GraphEdge is traffic from Source to Destination.
type GraphEdge struct {
	Source      ServiceRef `json:"source"`
	Destination ServiceRef `json:"destination"`
	Traffic
}

// Graph fetches the service graph over window (0: the server's default,
// one minute).
func (c *Client) Graph(ctx context.Context, window time.Duration) (Graph, error) {
	p := PathGraph
	if window > 0 {
		p += "?" + url.Values{"window": {window.String()}}.Encode()
	}
	var out Graph
	err := c.do(ctx, http.MethodGet, p, nil, &out)
	return out, err
}
