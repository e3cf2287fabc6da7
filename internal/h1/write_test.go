package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestWriteRequestHead(t *testing.T) {
	tests := []struct {
		name, in string
		extra    []Field
		out      string
	}{
		{name: "get", in: "GET /a?b HTTP/1.1\r\nHost: svc\r\nAccept: */*\r\n\r\n",
			out: "GET /a?b HTTP/1.1\r\nHost: svc\r\nAccept: */*\r\n\r\n"},
		{name: "hop fields dropped", in: "GET / HTTP/1.1\r\nConnection: keep-alive\r\nhost: svc\r\nKeep-Alive: 1\r\nProxy-Connection: x\r\nX:\tv \r\n\r\n",
			out: "GET / HTTP/1.1\r\nhost: svc\r\nX: v\r\n\r\n"},
		{name: "length moved last", in: "POST /p HTTP/1.1\r\ncontent-length: 0005\r\nHost: svc\r\n\r\nhello",
			extra: []Field{{Name: "X-Forwarded-For", Value: "10.0.0.1"}},
			out:   "POST /p HTTP/1.1\r\nHost: svc\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 5\r\n\r\n"},
		{name: "zero length kept", in: "POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\n\r\n",
			out: "POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\n\r\n"},
		{name: "chunked", in: "PUT /p HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\nHost: svc\r\nConnection: close\r\n\r\n",
			extra: []Field{{Name: "Connection", Value: "close"}},
			out:   "PUT /p HTTP/1.1\r\nHost: svc\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Head
			if _, err := ParseRequest(bufio.NewReader(strings.NewReader(tt.in)), &h); err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			w := bufio.NewWriter(&b)
			WriteRequestHead(w, &h, tt.extra)
			w.Flush()
			if b.String() != tt.out {
				t.Fatalf("wrote %q, want %q", b.String(), tt.out)
			}
			req, err := http.ReadRequest(bufio.NewReader(&b))
			if err != nil {
				t.Fatalf("net/http reads %q: %v", tt.out, err)
			}
			if req.Method != h.Method || req.RequestURI != h.Target || req.Host != h.Host {
				t.Errorf("net/http reads %s %s host %s, want %s %s host %s", req.Method, req.RequestURI, req.Host, h.Method, h.Target, h.Host)
			}
			for _, f := range append(h.Fields, tt.extra...) {
				if f.Drop || strings.EqualFold(f.Name, "host") {
					continue
				}
				if got := req.Header.Get(f.Name); got != f.Value {
					t.Errorf("net/http reads %s: %q, want %q", f.Name, got, f.Value)
				}
			}
		})
	}
}

// A whole request through ParseRequest, WriteRequestHead and CopyBody
// reads the same with net/http.
func TestRequestRoundTrip(t *testing.T) {
	ins := []string{
		"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nX-A: 1\r\n\r\nhello world",
		"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 9\r\n\r\n",
		"GET /q?x=%41 HTTP/1.1\r\nHost: a:1\r\nAccept: a\r\naccept: b\r\n\r\n",
	}
	for _, in := range ins {
		want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(in)))
		if err != nil {
			t.Fatal(err)
		}
		wantBody, _ := io.ReadAll(want.Body)

		src := bufio.NewReader(strings.NewReader(in))
		var h Head
		n, err := ParseRequest(src, &h)
		if err != nil {
			t.Fatal(err)
		}
		src.Discard(n)
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		WriteRequestHead(w, &h, nil)
		if err := CopyBody(w, src, h.RequestBody(), h.ContentLength, true); err != nil {
			t.Fatal(err)
		}
		got, err := http.ReadRequest(bufio.NewReader(&b))
		if err != nil {
			t.Fatalf("net/http reads %q: %v", b.String(), err)
		}
		gotBody, _ := io.ReadAll(got.Body)
		if got.Method != want.Method || got.RequestURI != want.RequestURI || got.Host != want.Host ||
			!reflect.DeepEqual(got.Header, want.Header) || string(gotBody) != string(wantBody) ||
			!reflect.DeepEqual(got.Trailer, want.Trailer) {
			t.Errorf("%q\nrewritten reads %s %s %v %q %v\nwant %s %s %v %q %v", in,
				got.Method, got.RequestURI, got.Header, gotBody, got.Trailer,
				want.Method, want.RequestURI, want.Header, wantBody, want.Trailer)
		}
	}
}

func TestWriteResponseHead(t *testing.T) {
	tests := []struct {
		name, in string
		method   string
		out      string
		body     string // the body after CopyBody, as net/http reads it
	}{
		{name: "length", in: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
			out: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n", body: "hello"},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: 1\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
			out: "HTTP/1.1 200 OK\r\nX: 1\r\nTransfer-Encoding: chunked\r\n\r\n", body: "hi"},
		{name: "until close", in: "HTTP/1.0 200 OK\r\nServer: old\r\n\r\nthe rest",
			out: "HTTP/1.1 200 OK\r\nServer: old\r\nTransfer-Encoding: chunked\r\n\r\n", body: "the rest"},
		{name: "head keeps length", in: "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", method: "HEAD",
			out: "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"},
		{name: "head of chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", method: "HEAD",
			out: "HTTP/1.1 200 OK\r\n\r\n"},
		{name: "204", in: "HTTP/1.1 204 No Content\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n",
			out: "HTTP/1.1 204 No Content\r\nX-End: 2\r\n\r\n"},
		{name: "304", in: "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n",
			out: "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n"},
		{name: "no reason", in: "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
			out: "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n"},
		{name: "101", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
			out: "HTTP/1.1 101 Switching Protocols\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			src := bufio.NewReader(strings.NewReader(tt.in))
			var h Head
			if err := ParseResponse(src, &h); err != nil {
				t.Fatal(err)
			}
			kind := h.ResponseBody(method)
			var b bytes.Buffer
			w := bufio.NewWriter(&b)
			WriteResponseHead(w, &h, kind, nil)
			w.Flush()
			if b.String() != tt.out {
				t.Fatalf("wrote %q, want %q", b.String(), tt.out)
			}
			if err := CopyBody(w, src, kind, h.ContentLength, false); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(&b), &http.Request{Method: method})
			if err != nil {
				t.Fatalf("net/http: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil || string(body) != tt.body {
				t.Errorf("net/http reads body %q (%v), want %q", body, err, tt.body)
			}
			if resp.StatusCode != h.Status || resp.ProtoMinor != 1 {
				t.Errorf("net/http reads %s, want %d", resp.Status, h.Status)
			}
			for _, f := range h.Fields {
				if !f.Drop && resp.Header.Get(f.Name) != f.Value {
					t.Errorf("net/http reads %s: %q, want %q", f.Name, resp.Header.Get(f.Name), f.Value)
				}
			}
		})
	}
}

func TestValidField(t *testing.T) {
	tests := []struct {
		f    Field
		want bool
	}{
		{Field{Name: "X-Forwarded-For", Value: "10.0.0.1, 10.0.0.2"}, true},
		{Field{Name: "X", Value: ""}, true},
		{Field{Name: "X", Value: "caf\xc3\xa9\tok"}, true},
		{Field{Name: "", Value: "v"}, false},
		{Field{Name: "X Y", Value: "v"}, false},
		{Field{Name: "X:", Value: "v"}, false},
		{Field{Name: "X", Value: "a\r\nInjected: 1"}, false},
		{Field{Name: "X", Value: "a\nb"}, false},
		{Field{Name: "X", Value: "a\x00"}, false},
		{Field{Name: "X\r\nY", Value: "v"}, false},
	}
	for _, tt := range tests {
		if got := ValidField(tt.f); got != tt.want {
			t.Errorf("ValidField(%q: %q) = %v, want %v", tt.f.Name, tt.f.Value, got, tt.want)
		}
	}
}
