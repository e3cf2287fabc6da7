package dataplane

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// forwardTries is forwardHTTP for a service with a TrafficPolicy: each
// pass of its loop is one try, bounded by the policy's deadlines; a
// small request body is buffered so that it can be sent again. e is the
// first pick.
func (o *Outbound) forwardTries(w http.ResponseWriter, r *http.Request, rt *route, e *PeerEndpoint) (code int, abort bool) {
	var replay []byte
	var body *trackedBody
	kept := relay.Bodyless(r)
	if !kept && r.ContentLength >= 0 && r.ContentLength <= maxReplayBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength+1))
		if err != nil || int64(len(b)) != r.ContentLength {
			relay.PlainError(w, http.StatusBadRequest, "trellis: reading the request body: the caller broke it off\n")
			return http.StatusBadRequest, false
		}
		replay, kept = b, true
	} else if !kept {
		body = &trackedBody{ReadCloser: r.Body}
		r.Body = body
	}
	var tr tries
	tr.start(rt, r.Method, kept, time.Now())
	e.inflight.Add(1)
	defer func() { e.inflight.Add(-1) }()
	moveOn := func(err error) {
		e2 := rt.bal.Pick(e)
		if e2 == nil {
			return
		}
		if err != nil {
			o.logFailure(rt, e, err)
		}
		e.inflight.Add(-1)
		e = e2
		e.inflight.Add(1)
	}
	for {
		now := time.Now()
		if tr.overdue(now) {
			return o.timedOut(w, &tr, false), false
		}
		ctx, cancel := r.Context(), context.CancelFunc(func() {})
		if until := tr.next(now); !until.IsZero() {
			ctx, cancel = context.WithDeadline(ctx, until)
		}
		out := relay.NewOutRequest(r.WithContext(ctx), "https", e.addr)
		if replay != nil {
			out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(replay)), int64(len(replay))
		}
		resp, err := e.h2.RoundTrip(out)
		rt.observe(e, statusOf(resp), err, now)
		if err != nil {
			cancel()
			if r.Context().Err() != nil {
				return statusClientClosed, false
			}
			if errors.Is(err, context.DeadlineExceeded) {
				perTry := tr.perTryExpired(time.Now())
				if perTry && tr.retry(timeoutCondition) {
					rt.dest.Timeout(metrics.TimeoutPerTry)
					moveOn(nil)
					continue
				}
				return o.timedOut(w, &tr, perTry), false
			}
			var de *dialError
			if dial := errors.As(err, &de) || strings.Contains(err.Error(), connNotEstablished); dial && tr.retryUnsent() || !dial && tr.retry(meshconfig.RetryReset) {
				moveOn(err)
				continue
			}
			return o.upstreamFailed(w, r, rt, e, err), false
		}
		if tr.left > 0 && tr.retryStatus(resp.StatusCode) {
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
			cancel()
			moveOn(nil)
			continue
		}
		code, abort = o.copyResponse(w, r, rt, resp, body)
		cancel()
		return code, abort
	}
}
