package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"reflect"
	"testing"
)

// Differential fuzzing against net/http: whatever h1 accepts, net/http must
// read the same way, and what h1 writes must read back the same way. A
// disagreement where h1 is the looser one is a request smuggling risk.

var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /p?q=1&r=%20 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n",
	"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nx: 2\r\nX:3 \r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	// Shapes the fast path refuses: smuggling classics.
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET //evil/x HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /%2 HTTP/1.1\r\nHost: a\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-foo\r\nX-Foo: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n1234567",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +7\r\n\r\n1234567",
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\nuntil close",
	"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
	"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
	"HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 099 Odd\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
}

var chunkedSeeds = []string{
	"0\r\n\r\n",
	"5\r\nhello\r\n0\r\n\r\n",
	"5;a=b\r\nhello\r\n0\r\nX: 1\r\nY: 2\r\n\r\n",
	"5 \r\nhello\r\n0\r\n\r\n",
	"5 ;a\r\nhello\r\n0\r\n\r\n",
	"5\t\r\nhello\r\n0\r\n\r\n",
	"0005\r\nhello\r\n0\r\n\r\n",
	"5\r\nhello\n0\r\n\r\n",
	"5\nhello\r\n0\r\n\r\n",
	"5;\x01\r\nhello\r\n0\r\n\r\n",
	"5;a\rb\r\nhello\r\n0\r\n\r\n",
	"fffffffffffffff\r\n",
	"10000000000000000\r\n",
	"-1\r\n\r\n",
	"0x5\r\nhello\r\n0\r\n\r\n",
	"5\r\nhel",
	"0\r\nX : 1\r\n\r\n",
	"0\r\n X: 1\r\n\r\n",
}

// headerOf returns the fields of h as net/http would hold them, less those
// net/http moves out of the map (Host, Transfer-Encoding, Trailer), may
// delete (Connection) or rewrites (Content-Length); those are compared
// through the Request and Response fields.
func headerOf(h *Head, dropped bool) http.Header {
	m := http.Header{}
	for _, f := range h.Fields {
		if f.Drop && !dropped {
			continue
		}
		k := textproto.CanonicalMIMEHeaderKey(f.Name)
		switch k {
		case "Host", "Transfer-Encoding", "Content-Length", "Connection", "Trailer":
			continue
		}
		m[k] = append(m[k], f.Value)
	}
	return m
}

func netHeader(h http.Header) http.Header {
	m := h.Clone()
	delete(m, "Content-Length")
	delete(m, "Transfer-Encoding")
	delete(m, "Connection")
	delete(m, "Trailer")
	if len(m) == 0 {
		return http.Header{}
	}
	return m
}

// forwarded is the subset of hdr that h forwards.
func forwarded(hdr http.Header, h *Head) http.Header {
	want := headerOf(h, false)
	m := http.Header{}
	for k, v := range hdr {
		if _, ok := want[k]; ok {
			m[k] = v
		}
	}
	return m
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 4096)
		nbr := bufio.NewReaderSize(bytes.NewReader(in), 4096)
		for i := 0; ; i++ {
			var h Head
			before := br.Buffered()
			n, err := ParseRequest(br, &h)
			if err != nil {
				if errors.Is(err, ErrUnsupported) {
					if before > 0 && br.Buffered() < before {
						t.Fatalf("request %d: ErrUnsupported consumed bytes", i)
					}
					if i == 0 {
						rest, _ := io.ReadAll(br)
						if !bytes.Equal(rest, in) {
							t.Fatalf("ErrUnsupported consumed input: %q left", rest)
						}
					}
				}
				return
			}
			if n <= 0 || n > br.Buffered() {
				t.Fatalf("request %d: n = %d, buffered %d", i, n, br.Buffered())
			}
			req, err := http.ReadRequest(nbr)
			if err != nil {
				t.Fatalf("request %d: h1 accepted, net/http: %v", i, err)
			}
			compareRequest(t, &h, req)
			netBody, netErr := io.ReadAll(req.Body)

			br.Discard(n)
			var out bytes.Buffer
			bw := bufio.NewWriter(&out)
			WriteRequestHead(bw, &h, nil)
			if err := CopyBody(bw, br, h.RequestBody(), h.ContentLength, true); err != nil {
				var re *ReadError
				if !errors.As(err, &re) {
					t.Fatalf("request %d: CopyBody: %v, want a *ReadError", i, err)
				}
				return
			}
			if netErr != nil {
				t.Fatalf("request %d: h1 copied the body, net/http: %v", i, netErr)
			}
			again, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out.Bytes())))
			if err != nil {
				t.Fatalf("request %d: rewritten %q: %v", i, out.Bytes(), err)
			}
			if again.Method != req.Method || again.RequestURI != req.RequestURI || again.Host != req.Host {
				t.Fatalf("request %d: rewritten reads %s %s %s, want %s %s %s", i,
					again.Method, again.RequestURI, again.Host, req.Method, req.RequestURI, req.Host)
			}
			if got, want := forwarded(again.Header, &h), headerOf(&h, false); !reflect.DeepEqual(got, want) {
				t.Fatalf("request %d: rewritten header %v, want %v", i, got, want)
			}
			body, err := io.ReadAll(again.Body)
			if err != nil || !bytes.Equal(body, netBody) {
				t.Fatalf("request %d: rewritten body %q (%v), net/http read %q", i, body, err, netBody)
			}
			if !reflect.DeepEqual(again.Trailer, req.Trailer) {
				t.Fatalf("request %d: rewritten trailer %v, net/http read %v", i, again.Trailer, req.Trailer)
			}
			// Both must now stand at the same next request.
			if br.Buffered() != nbr.Buffered() {
				t.Fatalf("request %d: h1 left %d bytes, net/http %d", i, br.Buffered(), nbr.Buffered())
			}
			if i == 3 {
				return
			}
		}
	})
}

func compareRequest(t *testing.T, h *Head, req *http.Request) {
	t.Helper()
	if h.Method != req.Method || h.Target != req.RequestURI || h.Host != req.Host {
		t.Fatalf("h1 read %q %q host %q, net/http %q %q host %q", h.Method, h.Target, h.Host, req.Method, req.RequestURI, req.Host)
	}
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 {
		t.Fatalf("net/http read HTTP/%d.%d", req.ProtoMajor, req.ProtoMinor)
	}
	switch {
	case h.Chunked:
		if req.ContentLength != -1 || !reflect.DeepEqual(req.TransferEncoding, []string{"chunked"}) {
			t.Fatalf("h1 read chunked, net/http length %d encoding %q", req.ContentLength, req.TransferEncoding)
		}
	case h.ContentLength < 0:
		if req.ContentLength != 0 || req.TransferEncoding != nil {
			t.Fatalf("h1 read no body, net/http length %d encoding %q", req.ContentLength, req.TransferEncoding)
		}
	default:
		if req.ContentLength != h.ContentLength || req.TransferEncoding != nil {
			t.Fatalf("h1 read length %d, net/http length %d encoding %q", h.ContentLength, req.ContentLength, req.TransferEncoding)
		}
	}
	if h.Close != req.Close {
		t.Fatalf("h1 read close %v, net/http %v", h.Close, req.Close)
	}
	if got, want := headerOf(h, true), netHeader(req.Header); !reflect.DeepEqual(got, want) {
		t.Fatalf("h1 read fields %v, net/http %v", got, want)
	}
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add(false, []byte(s))
		f.Add(true, []byte(s))
	}
	f.Fuzz(func(t *testing.T, head bool, in []byte) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		br := bufio.NewReaderSize(bytes.NewReader(in), 4096)
		var h Head
		if err := ParseResponse(br, &h); err != nil {
			return
		}
		nbr := bufio.NewReaderSize(bytes.NewReader(in), 4096)
		req := &http.Request{Method: method}
		resp, err := http.ReadResponse(nbr, req)
		if err != nil {
			t.Fatalf("h1 accepted, net/http: %v", err)
		}
		if resp.StatusCode != h.Status || resp.ProtoMinor != h.Minor || resp.ProtoMajor != 1 {
			t.Fatalf("h1 read %d HTTP/1.%d, net/http %d %s", h.Status, h.Minor, resp.StatusCode, resp.Proto)
		}
		if got, want := headerOf(&h, true), netHeader(resp.Header); !reflect.DeepEqual(got, want) {
			t.Fatalf("h1 read fields %v, net/http %v", got, want)
		}
		kind := h.ResponseBody(method)
		switch kind {
		case BodyChunked:
			if !reflect.DeepEqual(resp.TransferEncoding, []string{"chunked"}) {
				t.Fatalf("h1 read chunked, net/http encoding %q length %d", resp.TransferEncoding, resp.ContentLength)
			}
		case BodyLength:
			if resp.ContentLength != h.ContentLength || resp.TransferEncoding != nil {
				t.Fatalf("h1 read length %d, net/http %d %q", h.ContentLength, resp.ContentLength, resp.TransferEncoding)
			}
		case BodyUntilClose:
			if resp.ContentLength != -1 || resp.TransferEncoding != nil || !resp.Close {
				t.Fatalf("h1 read until close, net/http length %d %q close %v", resp.ContentLength, resp.TransferEncoding, resp.Close)
			}
		}
		// h1 may close where net/http would not, never the other way.
		if resp.Close && !h.Close && kind != BodyUntilClose {
			t.Fatalf("net/http closes, h1 keeps the connection")
		}
		netBody, netErr := io.ReadAll(resp.Body)

		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		WriteResponseHead(bw, &h, kind, nil)
		if err := CopyBody(bw, br, kind, h.ContentLength, true); err != nil {
			var re *ReadError
			if !errors.As(err, &re) {
				t.Fatalf("CopyBody: %v, want a *ReadError", err)
			}
			return
		}
		if netErr != nil {
			t.Fatalf("h1 copied the body, net/http: %v", netErr)
		}
		if kind != BodyUntilClose && br.Buffered() != nbr.Buffered() {
			t.Fatalf("h1 left %d bytes, net/http %d", br.Buffered(), nbr.Buffered())
		}
		again, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out.Bytes())), req)
		if err != nil {
			t.Fatalf("rewritten %q: %v", out.Bytes(), err)
		}
		if again.StatusCode != resp.StatusCode {
			t.Fatalf("rewritten status %d, want %d", again.StatusCode, resp.StatusCode)
		}
		if got, want := forwarded(again.Header, &h), headerOf(&h, false); !reflect.DeepEqual(got, want) {
			t.Fatalf("rewritten header %v, want %v", got, want)
		}
		body, err := io.ReadAll(again.Body)
		if err != nil || !bytes.Equal(body, netBody) {
			t.Fatalf("rewritten body %q (%v), net/http read %q", body, err, netBody)
		}
		// A bodiless response announcing trailers loses its chunking.
		if kind == BodyChunked && !reflect.DeepEqual(again.Trailer, resp.Trailer) {
			t.Fatalf("rewritten trailer %v, net/http read %v", again.Trailer, resp.Trailer)
		}
	})
}

func FuzzCopyChunked(f *testing.F) {
	for _, s := range chunkedSeeds {
		f.Add(false, []byte(s))
		f.Add(true, []byte(s))
	}
	f.Fuzz(func(t *testing.T, keep bool, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		if err := CopyBody(bw, br, BodyChunked, 0, keep); err != nil {
			var re *ReadError
			if !errors.As(err, &re) {
				t.Fatalf("CopyBody: %v, want a *ReadError", err)
			}
			return
		}
		nbr := bufio.NewReader(bytes.NewReader(in))
		want, err := io.ReadAll(httputil.NewChunkedReader(nbr))
		if err != nil {
			t.Fatalf("h1 copied %q, net/http: %v", in, err)
		}
		// net/http reads the trailer section after the chunked reader.
		var trailer textproto.MIMEHeader
		if b, _ := nbr.Peek(2); bytes.Equal(b, []byte("\r\n")) {
			nbr.Discard(2)
		} else if trailer, err = textproto.NewReader(nbr).ReadMIMEHeader(); err != nil {
			t.Fatalf("h1 copied trailers net/http rejects: %v", err)
		}
		if br.Buffered() != nbr.Buffered() {
			t.Fatalf("h1 left %d bytes, net/http %d", br.Buffered(), nbr.Buffered())
		}

		obr := bufio.NewReader(bytes.NewReader(out.Bytes()))
		got, err := io.ReadAll(httputil.NewChunkedReader(obr))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("output %q decodes to %q (%v), want %q", out.Bytes(), got, err, want)
		}
		var otrailer textproto.MIMEHeader
		if b, _ := obr.Peek(2); bytes.Equal(b, []byte("\r\n")) {
			obr.Discard(2)
		} else if otrailer, err = textproto.NewReader(obr).ReadMIMEHeader(); err != nil {
			t.Fatalf("output trailers %q: %v", out.Bytes(), err)
		}
		if obr.Buffered() != 0 {
			t.Fatalf("output %q has bytes after the body", out.Bytes())
		}
		if !keep {
			trailer = nil
		}
		if len(trailer) != len(otrailer) || (len(trailer) > 0 && !reflect.DeepEqual(trailer, otrailer)) {
			t.Fatalf("output trailers %v, want %v", otrailer, trailer)
		}
	})
}
