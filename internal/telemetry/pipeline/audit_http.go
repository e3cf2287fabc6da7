package pipeline

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminhttp"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
)

// AuditVerifyHandler serves GET /api/v1/audit/verify: the event log's hash
// chain checked through its last durable record (eventlog.Log.Verify), as
// adminapi.AuditVerifyResult. A damaged log is a 200 answer naming the
// first bad record. It reads the whole log, so one check runs at a time
// and the server's write timeout does not cut it short.
func (p *Pipeline) AuditVerifyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case p.verifying <- struct{}{}:
			defer func() { <-p.verifying }()
		case <-r.Context().Done():
			return
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		rep, err := p.Events.Verify()
		out := adminapi.AuditVerifyResult{Intact: err == nil, Records: rep.Records, Segments: rep.Segments, LastHash: rep.LastHashHex()}
		if te, ok := errors.AsType[*eventlog.TamperError](err); ok {
			out.Tampered = &adminapi.AuditTamper{Index: te.Index, Segment: te.Segment, Offset: te.Offset, Reason: te.Reason}
			p.log.Error("audit verify: the event log is not as written", "record", te.Index, "segment", te.Segment, "offset", te.Offset, "reason", te.Reason)
		} else if err != nil {
			p.log.Error("audit verify", "err", err)
			adminhttp.WriteError(w, http.StatusInternalServerError, fmt.Errorf("audit verify: %w; check that this server can read its DATA_DIR/%s", err, eventlog.DirName))
			return
		}
		adminhttp.WriteJSON(w, http.StatusOK, out)
	})
}
