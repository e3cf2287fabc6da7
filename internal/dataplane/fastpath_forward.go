package dataplane

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/dataplane/upstream"
	"github.com/trellismesh/trellis/internal/h1"
)

// fwdStage is where a forwarded exchange stopped.
type fwdStage uint8

const (
	fwdDone fwdStage = iota
	// fwdNoResponse: the request could not be sent or no response head
	// came back; nothing was written downstream.
	fwdNoResponse
	// fwdUpstreamBroke: the response started downstream, then the
	// upstream's body broke off.
	fwdUpstreamBroke
	// fwdDownstreamGone: writing downstream failed.
	fwdDownstreamGone
	// fwdRetry: the response head met a retry condition (tries.retryStatus
	// decided, budget taken); nothing was written downstream.
	fwdRetry
)

// fwdResult is how one exchange went.
type fwdResult struct {
	stage fwdStage
	code  int
	err   error
	// nothingRead: the upstream closed before any response byte, which on
	// a reused connection means it had gone idle-closed: safe to replay a
	// replayable request.
	nothingRead bool
	upReusable  bool
	downKeep    bool
}

// forwardH1 sends req (its head parsed, its body still in fc.br) with the
// extra fields over uc and copies the response to fc. resp is scratch
// space for the response head. tr, nil on the inbound side, is the
// request's TrafficPolicy state: its try's deadline bounds the reads, a
// response it would retry is not copied (fwdRetry), and a replayable
// inline body stays in fc.br for the next try (the caller discards it).
func forwardH1(fc *fastConn, req *h1.Head, uc *upstream.Conn, extra []h1.Field, resp *h1.Head, tr *tries) fwdResult {
	// One deadline per exchange: it rolls on in watchedConn while the
	// exchange waits; the pool clears it when the connection comes back.
	if tr != nil {
		uc.WatchUntil(fc, tr.tryUntil)
	} else {
		uc.Watch(fc)
	}
	kind := req.RequestBody()
	h1.WriteRequestHead(uc.BW, req, extra)
	var bodyDone chan error
	switch {
	case kind == h1.BodyNone:
	case kind == h1.BodyLength && req.ContentLength <= inlineBody && int64(fc.br.Buffered()) >= req.ContentLength:
		n := int(req.ContentLength)
		b, _ := fc.br.Peek(n)
		_, _ = uc.BW.Write(b)
		if tr == nil || !tr.replayable {
			_, _ = fc.br.Discard(n)
		}
	default:
		// Stream the body while the response is read: an app may answer
		// (or stream back) before it has read everything.
		if err := uc.BW.Flush(); err != nil {
			return fwdResult{stage: fwdNoResponse, err: err, nothingRead: true}
		}
		bodyDone = make(chan error, 1)
		fc.streaming.Store(true)
		fc.bodyOpen.Store(true)
		go func() {
			err := h1.CopyBody(uc.BW, fc.br, kind, req.ContentLength, false)
			fc.bodyOpen.Store(false)
			bodyDone <- err
			var re *h1.ReadError
			if errors.As(err, &re) {
				// The app cannot answer a request whose body broke off on
				// the caller's side: stop waiting for it. (A write error
				// is the app's doing; its answer may still come.)
				closeQuietly(uc.C)
			}
		}()
	}
	if bodyDone == nil {
		if err := uc.BW.Flush(); err != nil {
			return fwdResult{stage: fwdNoResponse, err: err, nothingRead: true}
		}
	}
	res := readAndCopyResponse(fc, req, uc, resp, tr)
	if bodyDone != nil {
		select {
		case err := <-bodyDone:
			if err != nil {
				res.upReusable, res.downKeep = false, false
				if res.stage == fwdNoResponse && errors.Is(err, os.ErrDeadlineExceeded) {
					res.err = errBodyIdle
				}
			}
		default:
			// The response ended before the request body: neither
			// connection can carry another exchange.
			closeQuietly(uc.C)
			_ = fc.bw.Flush()
			lingerClose(fc, bodyDone)
			res.upReusable, res.downKeep = false, false
		}
		fc.streaming.Store(false)
	}
	return res
}

// lingerTimeout is how long a caller whose body is still arriving after
// its response may go on sending before its connection closes (net/http's
// rstAvoidanceDelay).
const lingerTimeout = 500 * time.Millisecond

// lingerClose closes the connection of a caller still sending a request
// body its response no longer needs. Closing a socket with unread bytes
// resets it, and a reset can destroy the response on its way (the peer's
// stack drops what it has not yet handed to the caller). So the response
// is followed by a half-close, the body's goroutine (which fails on the
// closed app connection) is waited for, and what the caller still sends
// is read and dropped for up to lingerTimeout before the close.
func lingerClose(fc *fastConn, bodyDone <-chan error) {
	relay.CloseWrite(fc.c)
	deadline := time.Now().Add(lingerTimeout)
	t := time.NewTimer(lingerTimeout)
	defer t.Stop()
	select {
	case <-bodyDone:
		_ = fc.c.SetReadDeadline(deadline)
		_, _ = io.CopyN(io.Discard, fc.c, lingerMax)
		closeQuietly(fc.c)
	case <-t.C:
		closeQuietly(fc.c)
		<-bodyDone
	}
}

// lingerMax bounds what lingerClose reads and drops.
const lingerMax = 16 << 20

// errBodyIdle: the caller's request body made no progress for the body
// idle timeout; the caller gets 408.
var errBodyIdle = errors.New("request body made no progress within the body idle timeout")

// max1xx bounds the informational responses before the final one, as
// net/http does.
const max1xx = 5

// connectionClose is the field a response carries when the proxy closes
// the caller's connection after it.
var connectionClose = []h1.Field{{Name: "Connection", Value: "close"}}

func readAndCopyResponse(fc *fastConn, req *h1.Head, uc *upstream.Conn, resp *h1.Head, tr *tries) fwdResult {
	for n := 0; ; n++ {
		if _, err := uc.BR.Peek(1); err != nil {
			if errors.Is(err, relay.ErrClientGone) {
				return fwdResult{stage: fwdDownstreamGone, code: statusClientClosed, err: err}
			}
			return fwdResult{stage: fwdNoResponse, err: err, nothingRead: closedBeforeResponse(err)}
		}
		if err := parseResponseHead(uc.BR, resp); err != nil {
			if errors.Is(err, relay.ErrClientGone) {
				return fwdResult{stage: fwdDownstreamGone, code: statusClientClosed, err: err}
			}
			return fwdResult{stage: fwdNoResponse, err: err}
		}
		switch {
		case resp.Status == 101:
			return fwdResult{stage: fwdNoResponse, err: errors.New("upstream switched protocols without an Upgrade request")}
		case resp.Status >= 200:
		case n == max1xx:
			return fwdResult{stage: fwdNoResponse, err: errors.New("too many 1xx responses")}
		default:
			// 1xx answers (103 Early Hints, a stray 100 Continue)
			// precede the real one.
			continue
		}
		break
	}
	kind := resp.ResponseBody(req.Method)
	if tr != nil && tr.left > 0 && !fc.bodyOpen.Load() && tr.retryStatus(resp.Status) {
		return fwdResult{stage: fwdRetry, code: resp.Status, upReusable: skipSmallBody(uc, resp, kind)}
	}
	var extra []h1.Field
	if req.Close || fc.closing() || (resp.Close && fc.bodyOpen.Load()) {
		// An upstream that closes before the end of the request body
		// will not read the rest of it: neither can this connection
		// carry another request, and a caller that kept it (a peer
		// proxy's pool) would meet it closed and answer 502. (A full
		// duplex answer without close keeps both.)
		extra = connectionClose
	}
	h1.WriteResponseHead(fc.bw, resp, kind, extra)
	// The end of the response stays buffered: the caller records the
	// request first, then fastServer.serve flushes (so metrics never lag
	// behind what the caller saw).
	err := h1.CopyBodyBuffered(fc.bw, uc.BR, kind, resp.ContentLength, true)
	res := fwdResult{code: resp.Status}
	var we *h1.WriteError
	switch {
	case err == nil:
		res.upReusable = !resp.Close && kind != h1.BodyUntilClose
		res.downKeep = extra == nil
	case errors.As(err, &we), errors.Is(err, relay.ErrClientGone):
		res.stage, res.err = fwdDownstreamGone, err
	default:
		res.stage, res.err = fwdUpstreamBroke, err
	}
	return res
}

// skipSmallBody reads and drops the small body of a response that is not
// passed on, so its connection can carry another exchange; false when it
// cannot (the connection is closed instead).
func skipSmallBody(uc *upstream.Conn, resp *h1.Head, kind h1.BodyKind) bool {
	switch {
	case resp.Close:
		return false
	case kind == h1.BodyNone:
		return true
	case kind == h1.BodyLength && resp.ContentLength <= 4<<10:
		_, err := uc.BR.Discard(int(resp.ContentLength))
		return err == nil
	}
	return false
}

// parseResponseHead parses a response head; one too large for the fast
// path's buffer, or with bare-LF line ends, is read by net/http (up to its
// limits) instead.
func parseResponseHead(br *bufio.Reader, resp *h1.Head) error {
	err := h1.ParseResponse(br, resp)
	if !errors.Is(err, h1.ErrTooLarge) && !errors.Is(err, h1.ErrBareLF) {
		return err
	}
	r, err := http.ReadResponse(br, nil) // reads the head only
	if err != nil {
		return err
	}
	return fromHTTPResponse(r, resp)
}

// fromHTTPResponse fills h from a response head net/http parsed.
func fromHTTPResponse(r *http.Response, h *h1.Head) error {
	*h = h1.Head{Fields: h.Fields[:0], Status: r.StatusCode, Minor: r.ProtoMinor, ContentLength: -1, Close: r.Close}
	h.Reason = strings.TrimPrefix(r.Status, strconv.Itoa(r.StatusCode))
	h.Reason = strings.TrimPrefix(h.Reason, " ")
	switch {
	case len(r.TransferEncoding) == 1 && r.TransferEncoding[0] == "chunked":
		h.Chunked = true
	case len(r.TransferEncoding) > 0:
		return h1.ErrMalformed
	case r.Header.Get("Content-Length") != "":
		h.ContentLength = r.ContentLength
	}
	conn := r.Header["Connection"]
	for name, values := range r.Header {
		drop := relay.IsHopHeader(name) || name == "Content-Length" || admission.HasToken(conn, name)
		for _, v := range values {
			f := h1.Field{Name: name, Value: v, Drop: drop}
			if !h1.ValidField(f) {
				return h1.ErrMalformed
			}
			h.Fields = append(h.Fields, f)
		}
	}
	return nil
}

// closedBeforeResponse: the connection ended cleanly or was reset before
// any byte of a response.
func closedBeforeResponse(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// replayableH1: no body, and a method that may be sent twice, as
// net/http's Transport decides.
func replayableH1(req *h1.Head) bool {
	if req.RequestBody() != h1.BodyNone {
		return false
	}
	switch req.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return req.Get("Idempotency-Key") != "" || req.Get("X-Idempotency-Key") != ""
}
