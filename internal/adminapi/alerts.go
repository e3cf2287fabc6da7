package adminapi

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Alert is one anomaly alert (GET /api/v1/alerts; docs/learning.md): the
// first occurrence of an episode. Its JSON form is the output of trellis
// alerts -o json: detector, severity, principal, service, started and
// explanation are an interface scripts rely on.
type Alert struct {
	Detector    string    `json:"detector"`
	Severity    string    `json:"severity"`
	Principal   string    `json:"principal"`
	Service     string    `json:"service,omitempty"`
	Detail      string    `json:"detail,omitempty"`
	Started     time.Time `json:"started"`
	Explanation string    `json:"explanation"`
	Baseline    float64   `json:"baseline"`
	Observed    float64   `json:"observed"`
	Threshold   float64   `json:"threshold"`
}

// AlertList is the answer of GET /api/v1/alerts.
type AlertList struct {
	Alerts []Alert `json:"alerts"`
}

// Alerts fetches the alerts that started at or after since (zero: all
// the collector keeps), oldest first.
func (c *Client) Alerts(ctx context.Context, since time.Time) ([]Alert, error) {
	p := PathAlerts
	if !since.IsZero() {
		p += "?" + url.Values{"since": {since.UTC().Format(time.RFC3339Nano)}}.Encode()
	}
	var out AlertList
	err := c.do(ctx, http.MethodGet, p, nil, &out)
	return out.Alerts, err
}
