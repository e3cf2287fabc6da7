package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func parseReq(t *testing.T, in string) (*Head, int, error) {
	t.Helper()
	var h Head
	n, err := ParseRequest(bufio.NewReader(strings.NewReader(in)), &h)
	return &h, n, err
}

func TestParseRequestAccepted(t *testing.T) {
	tests := []struct {
		name, in      string
		method, tgt   string
		host          string
		length        int64
		chunked       bool
		close         bool
		body          BodyKind
		dropped, kept []string
	}{
		{name: "get", in: "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			method: "GET", tgt: "/", host: "a", length: -1, body: BodyNone, kept: []string{"Host"}},
		{name: "query", in: "GET /a/b;c?d=%2F&e=f:g@h HTTP/1.1\r\nhost: svc.ns:8080\r\nAccept: */*\r\n\r\n",
			method: "GET", tgt: "/a/b;c?d=%2F&e=f:g@h", host: "svc.ns:8080", length: -1, kept: []string{"host", "Accept"}},
		{name: "post length", in: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
			method: "POST", tgt: "/x", host: "a", length: 5, body: BodyLength, dropped: []string{"Content-Length"}},
		{name: "zero length", in: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
			method: "POST", tgt: "/x", host: "a", length: 0, body: BodyNone},
		{name: "chunked", in: "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
			method: "POST", tgt: "/x", host: "a", length: -1, chunked: true, body: BodyChunked, dropped: []string{"Transfer-Encoding"}},
		{name: "close", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n",
			method: "GET", tgt: "/", host: "a", length: -1, close: true, dropped: []string{"Connection"}},
		{name: "keep-alive", in: "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
			method: "GET", tgt: "/", host: "a", length: -1, dropped: []string{"Connection", "Keep-Alive"}},
		{name: "hop fields", in: "GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: x\r\nProxy-Authorization: b\r\nProxy-Authenticate: c\r\nX: y\r\n\r\n",
			method: "GET", tgt: "/", host: "a", length: -1,
			dropped: []string{"Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate"}, kept: []string{"X"}},
		{name: "ipv6 host", in: "DELETE /r HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
			method: "DELETE", tgt: "/r", host: "[::1]:80", length: -1},
		{name: "ows", in: "GET / HTTP/1.1\r\nHost:\ta \r\nX:  v  w \t\r\n\r\n",
			method: "GET", tgt: "/", host: "a", length: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := parseReq(t, tt.in)
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if want := strings.Index(tt.in, "\r\n\r\n") + 4; n != want {
				t.Errorf("n = %d, want %d", n, want)
			}
			if h.Method != tt.method || h.Target != tt.tgt || h.Host != tt.host || h.Minor != 1 {
				t.Errorf("got %q %q host %q minor %d, want %q %q host %q", h.Method, h.Target, h.Host, h.Minor, tt.method, tt.tgt, tt.host)
			}
			if h.ContentLength != tt.length || h.Chunked != tt.chunked || h.Close != tt.close {
				t.Errorf("got length %d chunked %v close %v, want %d %v %v", h.ContentLength, h.Chunked, h.Close, tt.length, tt.chunked, tt.close)
			}
			if got := h.RequestBody(); got != tt.body {
				t.Errorf("RequestBody() = %d, want %d", got, tt.body)
			}
			for _, name := range tt.dropped {
				if f := field(h, name); f == nil || !f.Drop {
					t.Errorf("field %s: got %+v, want dropped", name, f)
				}
			}
			for _, name := range tt.kept {
				if f := field(h, name); f == nil || f.Drop {
					t.Errorf("field %s: got %+v, want kept", name, f)
				}
			}
			if h.Raw != tt.in[:n] {
				t.Errorf("Raw = %q, want %q", h.Raw, tt.in[:n])
			}
		})
	}
}

func field(h *Head, name string) *Field {
	for i := range h.Fields {
		if h.Fields[i].Name == name {
			return &h.Fields[i]
		}
	}
	return nil
}

func TestParseRequestOWS(t *testing.T) {
	h, _, err := parseReq(t, "GET / HTTP/1.1\r\nHost:\ta \r\nX:  v  w \t\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := h.Get("x"), "v  w"; got != want {
		t.Errorf("Get(x) = %q, want %q", got, want)
	}
}

func TestHeadGet(t *testing.T) {
	h, _, err := parseReq(t, "GET / HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two: 2\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, want string }{
		{"X-Two", "1"}, {"X-TWO", "1"}, {"x-two", "1"}, {"HOST", "a"},
		{"X-Tw", ""}, {"", ""},
	}
	for _, tt := range tests {
		if got := h.Get(tt.name); got != tt.want {
			t.Errorf("Get(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
	// Fields not forwarded are still seen, as net/http's header map
	// showed them to policies.
	for _, f := range h.Fields {
		if f.Drop && h.Get(f.Name) == "" {
			t.Errorf("Get(%q) of a dropped field = \"\"", f.Name)
		}
	}
}

func TestParseRequestUnsupported(t *testing.T) {
	many := "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", MaxFields) + "\r\n"
	tests := []struct{ name, in string }{
		{"http/1.0", "GET / HTTP/1.0\r\nHost: a\r\n\r\n"},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{"http/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n"},
		{"lowercase proto", "GET / http/1.1\r\nHost: a\r\n\r\n"},
		{"absolute form", "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"authority form", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"empty target", "GET  HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"quote in target", "GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"backslash in target", "GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"non-ascii target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"tab in target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"bad escape", "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"short escape", "GET /a%2 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"},
		{"fold first", "GET / HTTP/1.1\r\n Host: a\r\n\r\n"},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\r\n\r\n"},
		{"bare LF in field", "GET / HTTP/1.1\r\nHost: a\r\nX: a\nY: b\r\n\r\n"},
		{"bare CR in field", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rY: b\r\n\r\n"},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello"},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n"},
		{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n"},
		{"missing host", "GET / HTTP/1.1\r\nX: y\r\n\r\n"},
		{"empty host", "GET / HTTP/1.1\r\nHost: \r\n\r\n"},
		{"duplicate host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
		{"duplicate identical host", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"},
		{"host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"},
		{"host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"},
		{"two CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"},
		{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"},
		{"CL sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"},
		{"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n"},
		{"CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello"},
		{"CL huge", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n"},
		{"TE gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"},
		{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"},
		{"TE chunked, gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
		{"TE twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"TE empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n"},
		{"upgrade", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"},
		{"upgrade alone", "GET / HTTP/1.1\r\nHost: a\r\nupgrade: h2c\r\n\r\n"},
		{"expect", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"},
		{"te", "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n"},
		{"trailer", "POST / HTTP/1.1\r\nHost: a\r\nTrailer: X\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"http2-settings", "GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAA\r\n\r\n"},
		{"connection names field", "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\r\n"},
		{"connection names host", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, host\r\n\r\n"},
		{"too many fields", many},
		{"larger than buffer", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("v", 5000) + "\r\n\r\n"},
		{"leading CRLF", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"empty head", "\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			var h Head
			n, err := ParseRequest(br, &h)
			if !errors.Is(err, ErrUnsupported) || n != 0 {
				t.Fatalf("ParseRequest = %d, %v, want 0, ErrUnsupported", n, err)
			}
			// Nothing consumed: net/http gets every byte.
			all, err := io.ReadAll(br)
			if err != nil || string(all) != tt.in {
				t.Fatalf("after ParseRequest the reader yields %q (%v), want the whole input", all, err)
			}
		})
	}
}

func TestParseRequestFieldLimit(t *testing.T) {
	in := "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", MaxFields-1) + "\r\n"
	h, _, err := parseReq(t, in)
	if err != nil || len(h.Fields) != MaxFields {
		t.Fatalf("%d fields: got %d, %v, want accepted", MaxFields, len(h.Fields), err)
	}
}

func TestParseRequestConsumesNothing(t *testing.T) {
	in := "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
	// One byte per read: the head arrives over many reads.
	br := bufio.NewReader(iotest.OneByteReader(strings.NewReader(in)))
	var h Head
	n, err := ParseRequest(br, &h)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(in) - 3; n != want {
		t.Fatalf("n = %d, want %d", n, want)
	}
	all, _ := io.ReadAll(br)
	if string(all) != in {
		t.Fatalf("reader yields %q, want %q", all, in)
	}
}

func TestParseRequestPipelined(t *testing.T) {
	in := "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\nhi" +
		"POST /3 HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n" +
		"GET /4 HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(in))
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	var targets []string
	var h Head
	for {
		n, err := ParseRequest(br, &h)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("request %d: %v", len(targets)+1, err)
		}
		br.Discard(n)
		targets = append(targets, h.Target+" "+h.Host)
		if err := CopyBody(bw, br, h.RequestBody(), h.ContentLength, false); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := strings.Join(targets, ","), "/1 a,/2 b,/3 c,/4 d"; got != want {
		t.Errorf("targets %s, want %s", got, want)
	}
	if got, want := out.String(), "hi1\r\nx\r\n0\r\n\r\n"; got != want {
		t.Errorf("bodies %q, want %q", got, want)
	}
	if !h.Close {
		t.Errorf("last request: Close false, want true")
	}
}

func TestParseRequestEOF(t *testing.T) {
	var h Head
	if _, err := ParseRequest(bufio.NewReader(strings.NewReader("")), &h); err != io.EOF {
		t.Errorf("empty input: %v, want io.EOF", err)
	}
	_, err := ParseRequest(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nHost: a\r\n")), &h)
	if err != io.ErrUnexpectedEOF {
		t.Errorf("truncated head: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestParseRequestReuse(t *testing.T) {
	var h Head
	br := bufio.NewReader(strings.NewReader("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"))
	if _, err := ParseRequest(br, &h); err != nil {
		t.Fatal(err)
	}
	br = bufio.NewReader(strings.NewReader("GET /b HTTP/1.1\r\nHost: b\r\n\r\n"))
	if _, err := ParseRequest(br, &h); err != nil {
		t.Fatal(err)
	}
	if h.ContentLength != -1 || h.Close || h.Chunked || len(h.Fields) != 1 || h.Host != "b" {
		t.Errorf("reused head kept state: %+v", h)
	}
}

func parseResp(t *testing.T, in string) (*Head, *bufio.Reader, error) {
	t.Helper()
	var h Head
	br := bufio.NewReader(strings.NewReader(in))
	err := ParseResponse(br, &h)
	return &h, br, err
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name, in  string
		status    int
		reason    string
		minor     int
		close     bool
		get, head BodyKind
		length    int64
		dropped   []string
		kept      []string
	}{
		{name: "length", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
			status: 200, reason: "OK", minor: 1, get: BodyLength, head: BodyNone, length: 5},
		{name: "zero length", in: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "OK", minor: 1, get: BodyNone, head: BodyNone, length: 0},
		{name: "chunked", in: "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 201, reason: "Created", minor: 1, get: BodyChunked, head: BodyNone, length: -1},
		{name: "until close", in: "HTTP/1.1 200 OK\r\n\r\n",
			status: 200, reason: "OK", minor: 1, get: BodyUntilClose, head: BodyNone, length: -1},
		{name: "1.0", in: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
			status: 200, reason: "OK", minor: 0, close: true, get: BodyLength, head: BodyNone, length: 1},
		{name: "1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
			status: 200, reason: "OK", minor: 0, close: true, get: BodyLength, head: BodyNone, length: 1},
		{name: "no reason", in: "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
			status: 404, minor: 1, length: 0},
		{name: "empty reason", in: "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
			status: 404, minor: 1, length: 0},
		{name: "long reason", in: "HTTP/1.1 503 Service  Unavailable\t(try later) \xe2\x9c\x97\r\nContent-Length: 0\r\n\r\n",
			status: 503, reason: "Service  Unavailable\t(try later) \xe2\x9c\x97", minor: 1, length: 0},
		{name: "100", in: "HTTP/1.1 100 Continue\r\n\r\n",
			status: 100, reason: "Continue", minor: 1, length: -1},
		{name: "101", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
			status: 101, reason: "Switching Protocols", minor: 1, length: -1, dropped: []string{"Upgrade", "Connection"}},
		{name: "204 with length", in: "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
			status: 204, reason: "No Content", minor: 1, length: 7},
		{name: "304 chunked", in: "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 304, reason: "Not Modified", minor: 1, length: -1},
		{name: "599", in: "HTTP/1.1 599 X\r\n\r\n", status: 599, reason: "X", minor: 1, get: BodyUntilClose, length: -1},
		{name: "same length twice", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc",
			status: 200, reason: "OK", minor: 1, get: BodyLength, length: 3},
		{name: "connection tokens", in: "HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: 1\r\nx-a: 2\r\nX-B: 3\r\nConnection: x-c\r\nX-C: 4\r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "OK", minor: 1, close: true, length: 0,
			dropped: []string{"X-A", "x-a", "X-C", "Connection"}, kept: []string{"X-B"}},
		{name: "hop fields", in: "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nTE: x\r\nProxy-Authenticate: b\r\nTrailer: X-T\r\nContent-Length: 0\r\n\r\n",
			status: 200, reason: "OK", minor: 1, length: 0,
			dropped: []string{"Keep-Alive", "TE", "Proxy-Authenticate"}, kept: []string{"Trailer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, br, err := parseResp(t, tt.in)
			if err != nil {
				t.Fatalf("ParseResponse: %v", err)
			}
			if h.Status != tt.status || h.Reason != tt.reason || h.Minor != tt.minor || h.Close != tt.close || h.ContentLength != tt.length {
				t.Errorf("got %d %q minor %d close %v length %d, want %d %q %d %v %d",
					h.Status, h.Reason, h.Minor, h.Close, h.ContentLength, tt.status, tt.reason, tt.minor, tt.close, tt.length)
			}
			if got := h.ResponseBody("GET"); got != tt.get {
				t.Errorf("ResponseBody(GET) = %d, want %d", got, tt.get)
			}
			if got := h.ResponseBody("HEAD"); got != tt.head {
				t.Errorf("ResponseBody(HEAD) = %d, want %d", got, tt.head)
			}
			for _, name := range tt.dropped {
				if f := field(h, name); f == nil || !f.Drop {
					t.Errorf("field %s: got %+v, want dropped", name, f)
				}
			}
			for _, name := range tt.kept {
				if f := field(h, name); f == nil || f.Drop {
					t.Errorf("field %s: got %+v, want kept", name, f)
				}
			}
			// The head is consumed; the body is not.
			rest, _ := io.ReadAll(br)
			if want := tt.in[strings.Index(tt.in, "\r\n\r\n")+4:]; string(rest) != want {
				t.Errorf("left %q, want %q", rest, want)
			}
		})
	}
}

func TestParseResponseMalformed(t *testing.T) {
	tests := []struct{ name, in string }{
		{"http/2", "HTTP/2.0 200 OK\r\n\r\n"},
		{"http/1.2", "HTTP/1.2 200 OK\r\n\r\n"},
		{"no status", "HTTP/1.1\r\n\r\n"},
		{"two digits", "HTTP/1.1 20 OK\r\n\r\n"},
		{"four digits", "HTTP/1.1 2000 OK\r\n\r\n"},
		{"letters", "HTTP/1.1 2x0 OK\r\n\r\n"},
		{"below 100", "HTTP/1.1 099 Odd\r\n\r\n"},
		{"double space", "HTTP/1.1  200 OK\r\n\r\n"},
		{"control in reason", "HTTP/1.1 200 O\x01K\r\n\r\n"},
		{"differing lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"},
		{"length list", "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc"},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"},
		{"CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"TE gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"},
		{"TE twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"TE in 1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"trailer announces length", "HTTP/1.1 200 OK\r\nTrailer: X, content-length\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 1\n\r\n\r\n"},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx"},
		{"connection token not a token", "HTTP/1.1 200 OK\r\nConnection: a b\r\n\r\n"},
		{"too many fields", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", MaxFields+1) + "\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := parseResp(t, tt.in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseResponse: %v, want ErrMalformed", err)
			}
		})
	}
}

func TestParseResponseTooLarge(t *testing.T) {
	in := "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("v", 100) + "\r\n\r\n"
	var h Head
	br := bufio.NewReaderSize(strings.NewReader(in), 64)
	if err := ParseResponse(br, &h); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ParseResponse: %v, want ErrTooLarge", err)
	}
	// Exactly the buffer: fits.
	in = "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("v", 64-len("HTTP/1.1 200 OK\r\nX: \r\n\r\n")) + "\r\n\r\n"
	br = bufio.NewReaderSize(strings.NewReader(in), 64)
	if err := ParseResponse(br, &h); err != nil || len(in) != 64 {
		t.Fatalf("a %d-byte head in a 64-byte buffer: %v", len(in), err)
	}
}

func TestParseResponseSlowReader(t *testing.T) {
	in := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	var h Head
	br := bufio.NewReader(iotest.OneByteReader(strings.NewReader(in)))
	if err := ParseResponse(br, &h); err != nil || h.ContentLength != 2 {
		t.Fatalf("ParseResponse: %v, length %d", err, h.ContentLength)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "ok" {
		t.Fatalf("left %q, want ok", rest)
	}
}

// errWouldBlock stands for a caller who sent a head and waits.
var errWouldBlock = errors.New("would block")

type thenBlock struct{ r io.Reader }

func (t *thenBlock) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.EOF {
		return n, errWouldBlock
	}
	return n, err
}

// A head with bare-LF line ends is reported from the bytes already there,
// not after waiting for a CRLF CRLF that never comes.
func TestBareLFReportedAtOnce(t *testing.T) {
	for _, head := range []string{
		"GET / HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.1\r\nHost: x\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\n",
		"\n",
	} {
		var h Head
		_, err := ParseRequest(bufio.NewReaderSize(&thenBlock{strings.NewReader(head)}, 4096), &h)
		if !errors.Is(err, ErrBareLF) {
			t.Errorf("ParseRequest(%q) = %v, want ErrBareLF", head, err)
		}
		err = ParseResponse(bufio.NewReaderSize(&thenBlock{strings.NewReader(strings.Replace(head, "GET / HTTP/1.1", "HTTP/1.1 200 OK", 1))}, 4096), &h)
		if !errors.Is(err, ErrBareLF) {
			t.Errorf("ParseResponse(%q) = %v, want ErrBareLF", head, err)
		}
	}
	// A CRLF head still waits for its end.
	var h Head
	if _, err := ParseRequest(bufio.NewReaderSize(&thenBlock{strings.NewReader("GET / HTTP/1.1\r\nHost: x\r\n")}, 4096), &h); !errors.Is(err, errWouldBlock) {
		t.Errorf("incomplete CRLF head: %v, want the reader's error", err)
	}
}
