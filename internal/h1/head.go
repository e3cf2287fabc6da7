package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// Errors of the parsers.
var (
	// ErrUnsupported: a request the fast path does not take (it may be
	// valid HTTP); nothing was consumed.
	ErrUnsupported = errors.New("h1: request outside the fast path")
	// ErrTooLarge: the head does not fit the reader's buffer.
	ErrTooLarge = errors.New("h1: message head larger than the buffer")
	// ErrMalformed: a response that breaks the rules in the package doc.
	ErrMalformed = errors.New("h1: malformed response head")
	// ErrBareLF: a head whose lines end in a bare LF before its end was
	// found. It is reported as soon as the bytes show it, instead of
	// waiting for a CRLF CRLF that will never come.
	ErrBareLF = errors.New("h1: bare LF line ending in the message head")
)

// MaxFields bounds the header fields of one head.
const MaxFields = 100

// Field is one header field as received.
type Field struct {
	Name, Value string
	// Drop marks a field that is not forwarded: connection-specific ones,
	// framing (rewritten by the writer), and ones a caller removed.
	Drop bool
}

// BodyKind is how a message's body is delimited.
type BodyKind uint8

// Body kinds.
const (
	BodyNone BodyKind = iota
	BodyLength
	BodyChunked
	// BodyUntilClose: a response without length or chunking, ended by the
	// server closing the connection.
	BodyUntilClose
)

// Head is a parsed request or response head. Strings slice Raw.
type Head struct {
	Raw string
	// Request line.
	Method, Target string
	// Status line.
	Status int
	Reason string
	// Minor is the HTTP/1 minor version.
	Minor  int
	Fields []Field
	// ContentLength is -1 when absent.
	ContentLength int64
	Chunked       bool
	// Close: "Connection: close" (or an HTTP/1.0 response).
	Close bool
	Host  string
}

func (h *Head) reset() {
	fields := h.Fields[:0]
	*h = Head{Fields: fields, ContentLength: -1}
}

// Get returns the first value of the named field (case-insensitive),
// forwarded or not.
func (h *Head) Get(name string) string {
	for i := range h.Fields {
		f := &h.Fields[i]
		if len(f.Name) == len(name) && strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// RequestBody is how the request's body is delimited.
func (h *Head) RequestBody() BodyKind {
	switch {
	case h.Chunked:
		return BodyChunked
	case h.ContentLength > 0:
		return BodyLength
	}
	return BodyNone
}

// ResponseBody is how the response to a request with the given method is
// delimited (RFC 9112 6.3).
func (h *Head) ResponseBody(method string) BodyKind {
	switch {
	case method == "HEAD", h.Status/100 == 1, h.Status == 204, h.Status == 304:
		return BodyNone
	case h.Chunked:
		return BodyChunked
	case h.ContentLength == 0:
		return BodyNone
	case h.ContentLength > 0:
		return BodyLength
	}
	return BodyUntilClose
}

var crlf2 = []byte("\r\n\r\n")

// peekHead returns the bytes of the head at the start of br's buffer, up
// to and including the empty line, reading more as needed, consuming
// nothing.
func peekHead(br *bufio.Reader) ([]byte, error) {
	from := 0
	for {
		n := br.Buffered()
		if n > 0 {
			b, _ := br.Peek(n)
			if i := bytes.Index(b[from:], crlf2); i >= 0 {
				return b[:from+i+4], nil
			}
			if hasBareLF(b) {
				return nil, ErrBareLF
			}
			from = max(0, n-3)
			if n >= br.Size() {
				return nil, ErrTooLarge
			}
		}
		if _, err := br.Peek(n + 1); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, ErrTooLarge
			}
			if err == io.EOF && n > 0 {
				err = io.ErrUnexpectedEOF // a truncated head
			}
			return nil, err
		}
	}
}

// hasBareLF reports whether b holds an LF not preceded by CR.
func hasBareLF(b []byte) bool {
	for i := bytes.IndexByte(b, '\n'); i >= 0; {
		if i == 0 || b[i-1] != '\r' {
			return true
		}
		j := bytes.IndexByte(b[i+1:], '\n')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

// HeadBuffered reports whether br's buffer already holds a whole head,
// so parsing it will not read (and no read deadline is needed for it).
func HeadBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, crlf2)
}

// ParseRequest parses the request head at the start of br (reading as
// needed) into h without consuming it: n is the head's length, for
// br.Discard once the caller takes the request. ErrUnsupported and
// ErrTooLarge say to hand the connection to a full HTTP server; ErrBareLF
// says to refuse it at once (the head will never end); other
// errors are the connection's (io.EOF before any byte: a clean close).
func ParseRequest(br *bufio.Reader, h *Head) (n int, err error) {
	b, err := peekHead(br)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return 0, ErrUnsupported
		}
		return 0, err
	}
	if err := parseRequest(b, h); err != nil {
		return 0, err
	}
	return len(b), nil
}

func parseRequest(b []byte, h *Head) error {
	h.reset()
	h.Raw = string(b)
	line, rest, _ := strings.Cut(h.Raw, "\r\n")
	method, rest1, ok := strings.Cut(line, " ")
	if !ok || !isToken(method) {
		return ErrUnsupported
	}
	target, proto, ok := strings.Cut(rest1, " ")
	if !ok || proto != "HTTP/1.1" || !validTarget(target) {
		return ErrUnsupported
	}
	h.Method, h.Target, h.Minor = method, target, 1
	if err := parseFields(rest, h, true); err != nil {
		return err
	}
	if h.Host == "" || (h.Chunked && h.ContentLength >= 0) {
		return ErrUnsupported
	}
	return nil
}

// ParseResponse reads a response head from br into h and consumes it.
// Heads larger than br's buffer are ErrTooLarge.
func ParseResponse(br *bufio.Reader, h *Head) error {
	b, err := peekHead(br)
	if err != nil {
		return err
	}
	if err := parseResponse(b, h); err != nil {
		return err
	}
	_, _ = br.Discard(len(b))
	return nil
}

func parseResponse(b []byte, h *Head) error {
	h.reset()
	h.Raw = string(b)
	line, rest, _ := strings.Cut(h.Raw, "\r\n")
	proto, status, ok := strings.Cut(line, " ")
	switch {
	case !ok:
		return ErrMalformed
	case proto == "HTTP/1.1":
		h.Minor = 1
	case proto == "HTTP/1.0":
		h.Close = true
	default:
		return ErrMalformed
	}
	code, reason, _ := strings.Cut(status, " ")
	if len(code) != 3 || !validValue(reason) {
		return ErrMalformed
	}
	for i := 0; i < 3; i++ {
		if code[i] < '0' || code[i] > '9' {
			return ErrMalformed
		}
		h.Status = h.Status*10 + int(code[i]-'0')
	}
	if h.Status < 100 {
		return ErrMalformed
	}
	h.Reason = reason
	if err := parseFields(rest, h, false); err != nil {
		return err
	}
	// RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing
	// (net/http ignores it and reads until close).
	if h.Chunked && (h.ContentLength >= 0 || h.Minor == 0) {
		return ErrMalformed
	}
	return nil
}

// parseFields parses the field lines of s, which ends with the empty line,
// and classifies the ones that frame or concern the connection.
func parseFields(s string, h *Head, request bool) error {
	bad := ErrMalformed
	if request {
		bad = ErrUnsupported
	}
	var connTokens string
	for {
		var line string
		line, s, _ = strings.Cut(s, "\r\n")
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !isToken(name) {
			return bad
		}
		value = trimOWS(value)
		if !validValue(value) || len(h.Fields) == MaxFields {
			return bad
		}
		f := Field{Name: name, Value: value}
		switch len(name) {
		case 2: // TE
			if strings.EqualFold(name, "te") {
				if request {
					return bad
				}
				f.Drop = true
			}
		case 4:
			if strings.EqualFold(name, "host") && request {
				if h.Host != "" || !validHost(value) {
					return bad
				}
				h.Host = value
			}
		case 6: // Expect
			if request && strings.EqualFold(name, "expect") {
				return bad
			}
		case 7: // Upgrade, Trailer
			if strings.EqualFold(name, "upgrade") {
				if request {
					return bad
				}
				f.Drop = true
			} else if strings.EqualFold(name, "trailer") {
				if request || !validTrailer(value) {
					return bad
				}
			}
		case 10: // Connection, Keep-Alive
			if strings.EqualFold(name, "connection") {
				f.Drop = true
				if connTokens != "" {
					connTokens += ","
				}
				connTokens += value
			} else if strings.EqualFold(name, "keep-alive") {
				f.Drop = true
			}
		case 14: // Content-Length, HTTP2-Settings
			if strings.EqualFold(name, "content-length") {
				n, ok := parseLength(value)
				if !ok || (h.ContentLength >= 0 && (request || n != h.ContentLength)) {
					return bad
				}
				h.ContentLength = n
				f.Drop = true
			} else if request && strings.EqualFold(name, "http2-settings") {
				return bad
			}
		case 16: // Proxy-Connection
			if strings.EqualFold(name, "proxy-connection") {
				f.Drop = true
			}
		case 17: // Transfer-Encoding
			if strings.EqualFold(name, "transfer-encoding") {
				if h.Chunked || !strings.EqualFold(value, "chunked") {
					return bad
				}
				h.Chunked = true
				f.Drop = true
			}
		case 18: // Proxy-Authenticate
			if strings.EqualFold(name, "proxy-authenticate") {
				f.Drop = true
			}
		case 19: // Proxy-Authorization
			if strings.EqualFold(name, "proxy-authorization") {
				f.Drop = true
			}
		}
		h.Fields = append(h.Fields, f)
	}
	if connTokens != "" {
		if err := h.connection(connTokens, request); err != nil {
			return err
		}
	}
	return nil
}

// connection applies the Connection header's tokens: close, keep-alive,
// and (responses only) the names of further fields not to forward.
func (h *Head) connection(tokens string, request bool) error {
	for tok := range strings.SplitSeq(tokens, ",") {
		tok = trimOWS(tok)
		switch {
		case tok == "":
		case strings.EqualFold(tok, "close"):
			h.Close = true
		case strings.EqualFold(tok, "keep-alive"):
		case request:
			return ErrUnsupported
		case !isToken(tok):
			return ErrMalformed
		default:
			for i := range h.Fields {
				if strings.EqualFold(h.Fields[i].Name, tok) {
					h.Fields[i].Drop = true
				}
			}
		}
	}
	return nil
}

// validTrailer: a Trailer field may not announce framing fields, which
// net/http refuses.
func validTrailer(value string) bool {
	for tok := range strings.SplitSeq(value, ",") {
		tok = trimOWS(tok)
		if strings.EqualFold(tok, "content-length") || strings.EqualFold(tok, "transfer-encoding") || strings.EqualFold(tok, "trailer") {
			return false
		}
	}
	return true
}

// parseLength parses a Content-Length value: 1 to 18 digits.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// tchar (RFC 9110 5.6.2).
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenTable[s[i]] {
			return false
		}
	}
	return true
}

// validValue: field-content (VCHAR, obs-text, SP, HTAB), no controls.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// targetTable: the characters of an origin-form target the fast path
// forwards as they are (RFC 3986 pchar, '/', '?', and '%'). Others, which
// servers escape or read differently, go the slow way.
var targetTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~!$&'()*+,;=:@/?%" {
		t[c] = true
	}
	return t
}()

func validTarget(s string) bool {
	if s == "" || s[0] != '/' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !targetTable[s[i]] {
			return false
		}
		// A '%' not followed by two hex digits is an error to net/http
		// and guesswork to others.
		if s[i] == '%' && (i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2])) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// validHost: a reg-name, IPv4 or bracketed IPv6 literal, with a port.
func validHost(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}
