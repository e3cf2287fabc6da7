// Package relay moves HTTP messages and bytes between a caller and an
// upstream for the data path's net/http side and its tunnels: hop-by-hop
// header handling, the outgoing request, response and body copying,
// Upgrade forwarding (101 and the hijacked relay after it), and the
// two-way byte pipe with half-closes and pooled buffers.
//
// It must not depend on the data path's listeners and policy
// (internal/dataplane and its admission chain), the proxy role, the
// control plane, or the store (internal/deptest keeps this).
package relay

import (
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
)

// hopHeaders are connection-specific (RFC 9110 7.6.1) and never forwarded.
var hopHeaders = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// IsHopHeader reports whether k (canonical form) is a hop-by-hop header.
func IsHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// teTrailers is shared by every request that carries "TE: trailers" (gRPC
// needs it end to end); nothing downstream mutates header values.
var teTrailers = []string{"trailers"}

// removeHopHeaders strips hop-by-hop headers from h in place, including the
// ones the Connection header names, keeping "TE: trailers".
func removeHopHeaders(h http.Header) {
	// Before the Connection pass: a compliant client lists TE there too.
	te := false
	if v, ok := h["Te"]; ok {
		te = admission.HasToken(v, "trailers")
	}
	if c, ok := h["Connection"]; ok {
		removeConnectionTokens(h, c)
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	if te {
		h["Te"] = teTrailers
	}
}

// removeConnectionTokens deletes the headers a Connection header lists.
func removeConnectionTokens(h http.Header, conn []string) {
	for _, v := range conn {
		for tok := range strings.SplitSeq(v, ",") {
			tok = textproto.TrimString(tok)
			if tok == "" || strings.EqualFold(tok, "close") || strings.EqualFold(tok, "keep-alive") || strings.EqualFold(tok, "upgrade") {
				continue
			}
			h.Del(tok)
		}
	}
}

// outRequest is an outgoing request and its URL in one allocation.
type outRequest struct {
	req http.Request
	url url.URL
}

// NewOutRequest turns a server request into a client request for
// scheme://host, unchanged otherwise: method, path, query, Host, body and
// trailers pass through; hop-by-hop headers go. It shares (and edits) r's
// header map, which the handler owns.
func NewOutRequest(r *http.Request, scheme, host string) *http.Request {
	o := &outRequest{req: *r, url: *r.URL}
	o.url.Scheme = scheme
	o.url.Host = host
	o.req.URL = &o.url
	o.req.RequestURI = ""
	o.req.Close = false
	o.req.TransferEncoding = nil
	if o.req.ContentLength == 0 {
		// Known empty (an HTTP/2 request ends with its HEADERS but
		// still has a Body): say so, and the transport may send it
		// again after a GOAWAY.
		o.req.Body, o.req.GetBody = http.NoBody, noBody
	}
	if o.req.Header == nil {
		o.req.Header = make(http.Header)
	}
	removeHopHeaders(o.req.Header)
	// The authority travels in URL/Host; a second Host header field (which
	// HTTP/2 leaves in the header map) must not reach the app.
	delete(o.req.Header, "Host")
	return &o.req
}

func noBody() (io.ReadCloser, error) { return http.NoBody, nil }

// ErrClientGone: CopyResponse (and the fast path) could not write to the
// caller, who went away; the handler records it and writes nothing more.
var (
	ErrClientGone = errors.New("client went away")
)

// UpstreamBodyError: CopyResponse could not read the upstream's body;
// the response was cut short, so the caller's exchange must be aborted.
type UpstreamBodyError struct{ err error }

// Error implements error.
func (e *UpstreamBodyError) Error() string { return "read upstream response: " + e.err.Error() }

// Unwrap returns the read error.
func (e *UpstreamBodyError) Unwrap() error { return e.err }

// CopyResponse writes resp to w, the answer to the caller's request r:
// headers minus hop-by-hop, the body as it arrives (flushed after every
// read, like ReverseProxy's FlushInterval -1, except for the last piece of
// a body of known length, which the server flushes when the handler
// returns), then trailers.
func CopyResponse(w http.ResponseWriter, r *http.Request, resp *http.Response) error {
	h := w.Header()
	for k, vv := range resp.Header {
		if !IsHopHeader(k) {
			h[k] = vv
		}
	}
	if c, ok := resp.Header["Connection"]; ok {
		removeConnectionTokens(h, c)
	}
	// The proxy's own server would add a sniffed Content-Type and a Date
	// the upstream did not send; a nil value suppresses each.
	if _, ok := resp.Header["Content-Type"]; !ok {
		h["Content-Type"] = nil
	}
	if _, ok := resp.Header["Date"]; !ok {
		h["Date"] = nil
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		// A hop that buffered the whole body may have added a length;
		// HTTP/1.1 can only send trailers on a chunked body.
		delete(h, "Content-Length")
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = keys
	}
	w.WriteHeader(resp.StatusCode)
	err := copyBody(w, resp.Body, resp.ContentLength)
	var ue *UpstreamBodyError
	if errors.As(err, &ue) && resp.Request != nil && resp.Request.Context().Err() != nil {
		// The read failed because the caller's request was canceled:
		// the caller left, the upstream did not fail.
		err = ErrClientGone
	}
	if n := len(resp.Trailer); n > announced && r.ProtoMajor == 1 {
		// Trailers nobody announced travel only on a chunked HTTP/1.1
		// body: a body that arrived whole in one read was never flushed,
		// and the server would send it with a length and drop them.
		// (HTTP/2 sends them in any case, without the extra write.)
		if fl, ok := w.(http.Flusher); ok && err == nil {
			if _, sized := h["Content-Length"]; !sized {
				fl.Flush()
			}
		}
	}
	if n := len(resp.Trailer); n > 0 {
		// Trailers announced up front are set under their names; others
		// (gRPC sends grpc-status unannounced) need the TrailerPrefix form.
		if n == announced {
			for k, vv := range resp.Trailer {
				h[k] = vv
			}
		} else {
			for k, vv := range resp.Trailer {
				h[http.TrailerPrefix+k] = vv
			}
		}
	}
	return err
}

func copyBody(w http.ResponseWriter, body io.Reader, remaining int64) error {
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	fl, _ := w.(http.Flusher)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return ErrClientGone
			}
			if remaining > 0 {
				remaining -= int64(n)
			}
			if rerr == nil && remaining != 0 && fl != nil {
				fl.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return &UpstreamBodyError{rerr}
		}
	}
}

// Bodyless reports whether a server request carries no body (an HTTP/2
// server request always has a Body, empty when the stream ended).
func Bodyless(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
}

// EnableFullDuplex lets an HTTP/1 handler keep reading the request body
// after it starts the response, which streaming both ways (a 64 MiB echo,
// gRPC-like protocols) needs. HTTP/2 is always full duplex.
func EnableFullDuplex(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.Body != nil && r.Body != http.NoBody {
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
}

// PlainError writes a short text error the way http.Error does, without
// the extra headers.
func PlainError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h["Content-Type"] = textPlain
	h["X-Content-Type-Options"] = nosniff
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
}

var (
	textPlain = []string{"text/plain; charset=utf-8"}
	nosniff   = []string{"nosniff"}
)
