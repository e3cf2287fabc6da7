package dataplane

import (
	"context"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// TrafficPolicy on the HTTP/2 relay's outbound side: the request's
// deadline (the policy's timeout or the caller's grpc-timeout, the
// earlier) ends the stream with DEADLINE_EXCEEDED (gRPC) or 504, and a
// held request (h2relay.Request.Hold) is retried on a response head that
// meets a retry condition, or (condition reset) when the upstream reset
// the stream or its connection broke before a response head. Per-try
// timeouts are not applied here.

// startTries sets up call's TrafficPolicy state for req.
func (h *outboundH2) startTries(call *outboundCall, req *h2relay.Request, now time.Time) {
	rt := call.rt
	call.grpc = strings.HasPrefix(req.Get("content-type"), "application/grpc")
	tr := &call.tr
	tr.start(rt, req.Method, true, now)
	if call.grpc && tr.rp != nil && !tr.rp.NonIdempotent {
		// A gRPC method's safety is unknown: only connect failures,
		// which send nothing, are retried.
		tr.replayable = false
	}
	if v := req.Get("grpc-timeout"); v != "" {
		if d, ok := grpcTimeout(v); ok {
			tr.shorten(now.Add(d))
		}
	}
	if !tr.deadline.IsZero() {
		req.Deadline, req.Expired = tr.deadline, h.expired(call)
	}
	req.Hold = tr.left > 0 && tr.replayable
}

// expired is the answer of a call whose deadline passed.
func (h *outboundH2) expired(call *outboundCall) *h2relay.Response {
	msg := strings.TrimSuffix(call.tr.timeoutMessage(false), "\n")
	by := hpack.HeaderField{Name: strings.ToLower(timeoutHeader), Value: call.tr.tp.Ref}
	if call.grpc {
		return &h2relay.Response{Status: http.StatusOK, ContentType: "application/grpc", Header: []hpack.HeaderField{
			{Name: "grpc-status", Value: "4"}, {Name: "grpc-message", Value: grpcMessage(msg)}, by,
		}}
	}
	return &h2relay.Response{Status: http.StatusGatewayTimeout, Header: []hpack.HeaderField{by}, Body: msg + "\n"}
}

// grpcMessage percent-encodes a grpc-message value (gRPC's HTTP/2
// protocol: printable ASCII but '%' as is).
func grpcMessage(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Retry is h2relay.Retrier: a held call whose first response head meets
// a retry condition goes again, to another endpoint when there is one.
func (h *outboundH2) Retry(tag any, status, grpcStatus int) *h2relay.Conn {
	call, _ := tag.(*outboundCall)
	if call == nil || call.e == nil || call.tr.left == 0 {
		return nil
	}
	tr := &call.tr
	retry := false
	if status == 0 {
		retry = tr.retry(meshconfig.RetryReset)
	} else if call.grpc && grpcStatus >= 0 {
		retry = tr.retryGRPC(grpcStatus)
	} else {
		retry = tr.retryStatus(status)
	}
	if !retry {
		return nil
	}
	rt, e := call.rt, call.e
	if e2 := rt.bal.Pick(e); e2 != nil {
		e = e2
	}
	up, err := e.h2p.Get(context.Background())
	if err != nil && e != call.e {
		h.o.logFailure(rt, e, err)
		e = call.e
		up, err = e.h2p.Get(context.Background())
	}
	if err != nil {
		return nil
	}
	call.e.inflight.Add(-1)
	e.inflight.Add(1)
	call.e = e
	return up
}
