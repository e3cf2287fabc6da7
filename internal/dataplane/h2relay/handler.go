package h2relay

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"
)

// Handler decides where each downstream stream goes. Its methods are
// called from the downstream connection's reader and should not block
// for long: every stream of that connection waits.
type Handler interface {
	// Route takes a new stream's request. It returns the upstream
	// connection to send it to, or the answer to give instead (exactly
	// one is non-nil); tag is handed back in Done. It may change req's
	// fields and pseudo-headers.
	Route(req *Request) (up *Conn, local *Response, tag any)
	// Done reports a finished stream (answered, reset or failed).
	Done(r *Result)
}

// ResponseRewriter is an optional interface of the tag Handler.Route
// returns with an upstream: the relay hands it each routed response's
// head (pseudo-headers included, names in lowercase, valid only during
// the call) before forwarding it, and forwards the fields it returns.
type ResponseRewriter interface {
	RewriteResponse(fields []hpack.HeaderField) []hpack.HeaderField
}

// Request is a stream's request head as the Handler sees it, valid only
// during Route (the connection reuses it and its Fields): the Handler
// copies what it needs later.
type Request struct {
	Method, Scheme, Authority, Path string
	// Fields are the regular header fields, names in lowercase.
	Fields []hpack.HeaderField
	// EndStream: the request has no body.
	EndStream bool
	// Conn is the downstream connection it arrived on.
	Conn *Conn
	// Deadline, when Route sets it, ends the stream then: the caller
	// gets Expired if its response has not begun (else the stream is
	// reset with CANCEL), and the upstream stream RST_STREAM(CANCEL).
	Deadline time.Time
	Expired  *Response
	// Hold, when Route sets it and the Handler is a Retrier, keeps the
	// request until its END_STREAM (up to MaxHold bytes of body; past
	// that it goes on without retries) before it goes upstream, so that
	// it can be sent again.
	Hold bool
	// Delay, when Route sets it, holds the request that long before it
	// goes upstream (a Route's fault delay). What the caller sends
	// meanwhile waits in the proxy, within the stream's window.
	Delay time.Duration
	// Copy, when Route sets it and its tag is a Copier, copies the
	// request's body as it passes (up to MaxHold bytes) and hands it to
	// Copied once the request has ended. A request without a body is not
	// copied: Route has all of it.
	Copy bool
}

// Copier is an optional interface of the tag Handler.Route returns with
// an upstream: it takes the copy of the request body (Request.Copy).
// Copied is called from the downstream connection's reader when the
// request ended: body is all of it, valid only during the call; ok is
// false, and body nil, when the request had more than MaxHold bytes or
// trailers.
type Copier interface {
	Copied(body []byte, ok bool)
}

// MaxHold is the most request body a held stream keeps (Request.Hold).
const MaxHold = 64 << 10

// Retrier is a Handler that may send a held request again. Retry is
// called from the upstream connection's reader when a final response
// head comes for a held stream whose request was complete, before any of
// it goes downstream; grpcStatus is the head's grpc-status (-1 without
// one: not trailers-only). Status 0 means no head came: the upstream
// reset the stream or its connection broke. It returns the connection
// for the next try, or nil to pass the response (or failure) on.
type Retrier interface {
	Retry(tag any, status, grpcStatus int) *Conn
}

// Get returns the first value of a field (name in any case).
func (r *Request) Get(name string) string {
	for i := range r.Fields {
		if strings.EqualFold(r.Fields[i].Name, name) {
			return r.Fields[i].Value
		}
	}
	return ""
}

// Values returns every value of a field (name in any case).
func (r *Request) Values(name string) []string {
	var out []string
	for i := range r.Fields {
		if strings.EqualFold(r.Fields[i].Name, name) {
			out = append(out, r.Fields[i].Value)
		}
	}
	return out
}

// Set replaces every value of a field (name in lowercase) with one.
func (r *Request) Set(name, value string) {
	r.Del(name)
	r.Fields = append(r.Fields, hpack.HeaderField{Name: name, Value: value})
}

// Del removes a field (name in lowercase).
func (r *Request) Del(name string) {
	kept := r.Fields[:0]
	for _, f := range r.Fields {
		if f.Name != name {
			kept = append(kept, f)
		}
	}
	r.Fields = kept
}

// Response is an answer the Handler gives instead of forwarding.
type Response struct {
	Status int
	// ContentType replaces text/plain; with an empty Body the answer is
	// one HEADERS frame (a gRPC trailers-only response).
	ContentType string
	// Header are extra fields, names in lowercase.
	Header []hpack.HeaderField
	Body   string
}

// Result is how a stream ended.
type Result struct {
	Tag          any
	Method, Path string
	Start        time.Time
	// Status is the response's :status, 0 when none came (the stream was
	// reset first); Head is when it came.
	Status int
	Head   time.Time
	// GRPCStatus is the grpc-status of the response, -1 without one.
	GRPCStatus int
	// Reset says the stream was reset (by either side or the proxy)
	// before its response ended; ResetByCaller when the caller did it.
	Reset, ResetByCaller bool
	// Local: the proxy answered itself (Handler.Route's Response).
	Local bool
	// BodyIdle: the proxy ended the stream with 408 because the request
	// body made no progress (Config.BodyIdleTimeout).
	BodyIdle bool
	// Authority is the request's :authority.
	Authority string
	// TimedOut: Request.Deadline ended the stream.
	TimedOut bool
}

// hopFields are connection-specific fields HTTP/2 forbids; they are
// dropped rather than forwarded.
func hopField(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// requestFields builds the upstream HEADERS of a routed request.
func requestFields(req *Request, buf []hpack.HeaderField) []hpack.HeaderField {
	buf = append(buf,
		hpack.HeaderField{Name: ":method", Value: req.Method},
		hpack.HeaderField{Name: ":scheme", Value: req.Scheme},
		hpack.HeaderField{Name: ":authority", Value: req.Authority},
	)
	if req.Path != "" {
		buf = append(buf, hpack.HeaderField{Name: ":path", Value: req.Path})
	}
	for _, f := range req.Fields {
		if hopField(f.Name) || (f.Name == "te" && f.Value != "trailers") {
			continue
		}
		buf = append(buf, f)
	}
	return buf
}

// filterFields drops hop-by-hop fields from a response head or trailers
// in place.
func filterFields(fields []hpack.HeaderField) []hpack.HeaderField {
	kept := fields[:0]
	for _, f := range fields {
		if hopField(f.Name) {
			continue
		}
		kept = append(kept, f)
	}
	return kept
}

// localFields is the head of a proxy-made answer.
func localFields(r *Response) []hpack.HeaderField {
	out := make([]hpack.HeaderField, 0, 3+len(r.Header))
	ct := r.ContentType
	if ct == "" && !slices.ContainsFunc(r.Header, func(f hpack.HeaderField) bool { return f.Name == "content-type" }) {
		// A Header with its own content-type (a gRPC trailers-only
		// answer) replaces the plain-text one.
		ct = "text/plain; charset=utf-8"
	}
	out = append(out, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(r.Status)})
	if ct != "" {
		out = append(out, hpack.HeaderField{Name: "content-type", Value: ct})
	}
	if r.ContentType == "" || r.Body != "" {
		out = append(out, hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(r.Body))})
	}
	return append(out, r.Header...)
}

// grpcStatus parses a grpc-status field; -1 when fields have none.
func grpcStatus(fields []hpack.HeaderField) int {
	for _, f := range fields {
		if f.Name == "grpc-status" {
			n, err := strconv.Atoi(f.Value)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}
