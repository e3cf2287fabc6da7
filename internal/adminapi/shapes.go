package adminapi

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// ShapeList is the request shapes the collector has learned per edge
// (GET /api/v1/shapes?namespace=NS; docs/learning.md).
type ShapeList struct {
	Edges []EdgeShapes `json:"edges"`
}

// EdgeShapes is one edge's shapes. Overflow counts requests whose shape
// did not fit in the bounded tables (a proxy's or the collector's).
type EdgeShapes struct {
	SourceService   string      `json:"sourceService"`
	SourceNamespace string      `json:"sourceNamespace"`
	Service         string      `json:"service"`
	Namespace       string      `json:"namespace"`
	Overflow        uint64      `json:"overflow"`
	Shapes          []PathShape `json:"shapes"`
}

// PathShape is one method and path template of an edge, with counts
// since the collector first saw it.
type PathShape struct {
	Method    string    `json:"method"`
	Template  string    `json:"pathTemplate"`
	Requests  uint64    `json:"requests"`
	Denied    uint64    `json:"denied"`
	Failures  uint64    `json:"failures"`
	FirstSeen time.Time `json:"firstSeen"`
	LastSeen  time.Time `json:"lastSeen"`
}

// Shapes fetches the learned shapes of edges touching namespace ("" for
// all).
func (c *Client) Shapes(ctx context.Context, namespace string) (ShapeList, error) {
	p := PathShapes
	if namespace != "" {
		p += "?" + url.Values{"namespace": {namespace}}.Encode()
	}
	var out ShapeList
	err := c.do(ctx, http.MethodGet, p, nil, &out)
	return out, err
}
