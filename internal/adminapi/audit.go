package adminapi

import (
	"context"
	"net/http"
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
