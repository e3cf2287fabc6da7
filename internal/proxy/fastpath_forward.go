package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

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
// space for the response head.
func forwardH1(fc *fastConn, req *h1.Head, uc *upConn, extra []h1.Field, resp *h1.Head) fwdResult {
	kind := req.RequestBody()
	h1.WriteRequestHead(uc.bw, req, extra)
	var bodyDone chan error
	switch {
	case kind == h1.BodyNone:
	case kind == h1.BodyLength && req.ContentLength <= inlineBody && int64(fc.br.Buffered()) >= req.ContentLength:
		n := int(req.ContentLength)
		b, _ := fc.br.Peek(n)
		_, _ = uc.bw.Write(b)
		_, _ = fc.br.Discard(n)
	default:
		// Stream the body while the response is read: an app may answer
		// (or stream back) before it has read everything.
		if err := uc.bw.Flush(); err != nil {
			return fwdResult{stage: fwdNoResponse, err: err, nothingRead: true}
		}
		bodyDone = make(chan error, 1)
		go func() { bodyDone <- h1.CopyBody(uc.bw, fc.br, kind, req.ContentLength, false) }()
	}
	if bodyDone == nil {
		if err := uc.bw.Flush(); err != nil {
			return fwdResult{stage: fwdNoResponse, err: err, nothingRead: true}
		}
	}
	res := readAndCopyResponse(fc, req, uc, resp)
	if bodyDone != nil {
		select {
		case err := <-bodyDone:
			if err != nil {
				res.upReusable, res.downKeep = false, false
			}
		default:
			// The response ended before the request body: neither
			// connection can carry another exchange.
			closeQuietly(uc.c)
			closeQuietly(fc.c)
			<-bodyDone
			res.upReusable, res.downKeep = false, false
		}
	}
	return res
}

// watchInterval: while a response is awaited, this often the caller's
// connection is checked; a caller that went away (or a shutdown that
// closed it) closes the upstream request, as net/http's canceled request
// context does.
const watchInterval = 250 * time.Millisecond

// awaitResponse waits for the first byte of a response.
func awaitResponse(fc *fastConn, uc *upConn) (gone bool, err error) {
	if uc.br.Buffered() > 0 {
		return false, nil
	}
	_, isTLS := fc.c.(*tls.Conn)
	for {
		_ = uc.c.SetReadDeadline(time.Now().Add(watchInterval))
		_, err = uc.br.Peek(1)
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			_ = uc.c.SetReadDeadline(time.Time{})
			return false, err
		}
		if peerGone(fc.c, isTLS) {
			return true, nil
		}
	}
}

func readAndCopyResponse(fc *fastConn, req *h1.Head, uc *upConn, resp *h1.Head) fwdResult {
	for {
		gone, err := awaitResponse(fc, uc)
		if gone {
			return fwdResult{stage: fwdDownstreamGone, code: statusClientClosed, err: errClientGone}
		}
		if err != nil {
			return fwdResult{stage: fwdNoResponse, err: err, nothingRead: closedBeforeResponse(err)}
		}
		if err := h1.ParseResponse(uc.br, resp); err != nil {
			return fwdResult{stage: fwdNoResponse, err: err}
		}
		if resp.Status == 101 {
			return fwdResult{stage: fwdNoResponse, err: errors.New("upstream switched protocols without an Upgrade request")}
		}
		// 1xx answers (103 Early Hints, a stray 100 Continue) precede the
		// real one.
		if resp.Status >= 200 {
			break
		}
	}
	kind := resp.ResponseBody(req.Method)
	h1.WriteResponseHead(fc.bw, resp, kind)
	err := h1.CopyBody(fc.bw, uc.br, kind, resp.ContentLength, true)
	res := fwdResult{code: resp.Status}
	var we *h1.WriteError
	switch {
	case err == nil:
		res.upReusable = !resp.Close && kind != h1.BodyUntilClose
		res.downKeep = true
	case errors.As(err, &we):
		res.stage, res.err = fwdDownstreamGone, err
	default:
		res.stage, res.err = fwdUpstreamBroke, err
	}
	return res
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
