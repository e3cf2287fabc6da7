package adminapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// PathAuditVerify checks the event log's hash chain on the server (GET).
const PathAuditVerify = "/api/v1/audit/verify"

// AuditVerifyResult is the answer of GET /api/v1/audit/verify: the server
// that runs the collector (the control plane, or `trellis collector`)
// checked its event log through the last record it had made durable.
// A damaged log is a 200 answer with Intact false and Tampered set.
type AuditVerifyResult struct {
	Intact bool `json:"intact"`
	// Records are the intact records: all of them when Intact, those
	// before the first bad one otherwise.
	Records uint64 `json:"records"`
	// Segments is the number of segment files.
	Segments int `json:"segments"`
	// LastHash is the hash of the last intact record, lowercase hex (64
	// zeros when there is none).
	LastHash string `json:"lastHash"`
	// Tampered names the first bad record; nil when Intact.
	Tampered *AuditTamper `json:"tampered,omitempty"`
}

// AuditTamper is the first record of a log that is not as written.
type AuditTamper struct {
	Index   uint64 `json:"index"`
	Segment string `json:"segment"`
	Offset  int64  `json:"offset"`
	Reason  string `json:"reason"`
}

// AuditVerify asks the server to check its event log. It reads the whole
// log, so it is not bound by the client's usual timeout; ctx bounds it.
func (c *Client) AuditVerify(ctx context.Context) (AuditVerifyResult, error) {
	slow := *c
	if c.HTTP != nil {
		h := *c.HTTP
		h.Timeout = 0
		slow.HTTP = &h
	}
	var out AuditVerifyResult
	err := slow.do(ctx, http.MethodGet, PathAuditVerify, nil, &out)
	return out, err
}

// PathAuditEvents reads the newest records of the event log (GET
// ?after=INDEX&limit=N).
const PathAuditEvents = "/api/v1/audit/events"

// MaxAuditEvents bounds the records one GET /api/v1/audit/events answers.
const MaxAuditEvents = 500

// AuditEvent is one record of the event log as GET /api/v1/audit/events
// answers it.
type AuditEvent struct {
	Index       uint64            `json:"index"`
	Time        time.Time         `json:"time"`
	Kind        string            `json:"kind"`
	Reporter    string            `json:"reporter,omitempty"`
	Source      string            `json:"source,omitempty"`      // service.namespace, or the SPIFFE ID
	Destination string            `json:"destination,omitempty"` // service.namespace
	Method      string            `json:"method,omitempty"`
	Path        string            `json:"path,omitempty"`
	Decision    string            `json:"decision,omitempty"`
	Policy      string            `json:"policy,omitempty"`
	Attributes  map[string]string `json:"attributes,omitempty"`
}

// AuditEventList answers GET /api/v1/audit/events: the newest records
// with Index > after, at most limit (default and most MaxAuditEvents),
// oldest first; Last is the log's last index.
type AuditEventList struct {
	Events []AuditEvent `json:"events"`
	Last   uint64       `json:"last"`
}

// AuditEvents reads the newest event-log records after index after
// (0: the newest limit records).
func (c *Client) AuditEvents(ctx context.Context, after uint64, limit int) (AuditEventList, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	p := PathAuditEvents
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out AuditEventList
	err := c.do(ctx, http.MethodGet, p, nil, &out)
	return out, err
}
