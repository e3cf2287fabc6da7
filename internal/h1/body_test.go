package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// copyBody runs CopyBody from in to a buffer, returning the output and
// what src has left.
func copyBody(in io.Reader, kind BodyKind, n int64, keep bool) (out, rest string, err error) {
	var b bytes.Buffer
	src := bufio.NewReader(in)
	err = CopyBody(bufio.NewWriter(&b), src, kind, n, keep)
	r, _ := io.ReadAll(src)
	return b.String(), string(r), err
}

func TestCopyBody(t *testing.T) {
	large := strings.Repeat("0123456789abcdef", 20000) // 320 kB, many buffers
	tests := []struct {
		name, in  string
		kind      BodyKind
		n         int64
		keep      bool
		out, rest string
	}{
		{name: "none", in: "GET / HTTP/1.1\r\n", kind: BodyNone, rest: "GET / HTTP/1.1\r\n"},
		{name: "length", in: "helloGET", kind: BodyLength, n: 5, out: "hello", rest: "GET"},
		{name: "length large", in: large + "next", kind: BodyLength, n: int64(len(large)), out: large, rest: "next"},
		{name: "chunked", in: "5\r\nhello\r\n0\r\n\r\nnext", kind: BodyChunked, out: "5\r\nhello\r\n0\r\n\r\n", rest: "next"},
		{name: "chunked reframed", in: "0005;a=b;c=\"d\"\r\nhello\r\nA \r\n0123456789\r\n000\r\n\r\n", kind: BodyChunked,
			out: "5\r\nhello\r\na\r\n0123456789\r\n0\r\n\r\n"},
		{name: "chunked upper hex", in: "1F\r\n" + large[:31] + "\r\n0\r\n\r\n", kind: BodyChunked,
			out: "1f\r\n" + large[:31] + "\r\n0\r\n\r\n"},
		{name: "chunked large", in: "4e200\r\n" + large + "\r\n0\r\n\r\n", kind: BodyChunked,
			out: "4e200\r\n" + large + "\r\n0\r\n\r\n"},
		{name: "trailers kept", in: "1\r\nx\r\n0\r\nX-Sum: abc\r\nY:1\r\n\r\nnext", kind: BodyChunked, keep: true,
			out: "1\r\nx\r\n0\r\nX-Sum: abc\r\nY:1\r\n\r\n", rest: "next"},
		{name: "trailers dropped", in: "1\r\nx\r\n0\r\nX-Sum: abc\r\n\r\nnext", kind: BodyChunked,
			out: "1\r\nx\r\n0\r\n\r\n", rest: "next"},
		{name: "empty chunked", in: "0\r\n\r\n", kind: BodyChunked, out: "0\r\n\r\n"},
		{name: "until close", in: "hello", kind: BodyUntilClose, out: "5\r\nhello\r\n0\r\n\r\n"},
		{name: "until close empty", in: "", kind: BodyUntilClose, out: "0\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, rest, err := copyBody(strings.NewReader(tt.in), tt.kind, tt.n, tt.keep)
			if err != nil {
				t.Fatalf("CopyBody: %v", err)
			}
			if out != tt.out || rest != tt.rest {
				t.Errorf("got %.80q, left %.80q; want %.80q, left %.80q", out, rest, tt.out, tt.rest)
			}
			// The same a byte at a time: many reads, the same bytes.
			out, rest, err = copyBody(iotest.OneByteReader(strings.NewReader(tt.in)), tt.kind, tt.n, tt.keep)
			if tt.kind == BodyUntilClose {
				if err != nil || decodeChunked(t, out) != tt.in {
					t.Errorf("one byte at a time: got %.80q (%v)", out, err)
				}
				return
			}
			if err != nil || out != tt.out || rest != tt.rest {
				t.Errorf("one byte at a time: got %.80q, left %.80q (%v)", out, rest, err)
			}
		})
	}
}

func decodeChunked(t *testing.T, s string) string {
	t.Helper()
	r := bufio.NewReader(strings.NewReader(s))
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("decode %q: %v", s, err)
		}
		var n int
		for _, c := range strings.TrimSuffix(line, "\r\n") {
			n = n*16 + strings.IndexRune("0123456789abcdef", c)
		}
		if n == 0 {
			break
		}
		chunk := make([]byte, n+2)
		if _, err := io.ReadFull(r, chunk); err != nil {
			t.Fatalf("decode %q: %v", s, err)
		}
		b.Write(chunk[:n])
	}
	return b.String()
}

func TestCopyBodyReadErrors(t *testing.T) {
	tests := []struct {
		name, in string
		kind     BodyKind
		n        int64
		eof      bool // the error is io.ErrUnexpectedEOF
	}{
		{name: "length truncated", in: "hel", kind: BodyLength, n: 5, eof: true},
		{name: "length empty", in: "", kind: BodyLength, n: 1, eof: true},
		{name: "bad hex", in: "5g\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "no size", in: "\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "negative", in: "-5\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "0x prefix", in: "0x5\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "leading space", in: " 5\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "space before ext", in: "5 ;a\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "junk after size", in: "5 x\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "oversized", in: "1000000000000000\r\n", kind: BodyChunked},
		{name: "oversized zeros", in: "0000000000000005\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "ext with control", in: "5;a=\x01\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "ext with CR", in: "5;a\rb\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "ext with DEL", in: "5;a\x7f\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "bare LF size", in: "5\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "bare LF last", in: "0\n\r\n", kind: BodyChunked},
		{name: "no CRLF after data", in: "5\r\nhelloXY0\r\n\r\n", kind: BodyChunked},
		{name: "LF after data", in: "5\r\nhello\n0\r\n\r\n", kind: BodyChunked},
		{name: "data longer than size", in: "3\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
		{name: "truncated size", in: "5", kind: BodyChunked, eof: true},
		{name: "truncated data", in: "5\r\nhel", kind: BodyChunked, eof: true},
		{name: "truncated CRLF", in: "5\r\nhello\r", kind: BodyChunked, eof: true},
		{name: "truncated before last", in: "5\r\nhello\r\n", kind: BodyChunked, eof: true},
		{name: "truncated trailers", in: "0\r\nX: 1\r\n", kind: BodyChunked, eof: true},
		{name: "no final CRLF", in: "0\r\n", kind: BodyChunked, eof: true},
		{name: "trailer fold", in: "0\r\nX: 1\r\n 2\r\n\r\n", kind: BodyChunked},
		{name: "trailer space before colon", in: "0\r\nX : 1\r\n\r\n", kind: BodyChunked},
		{name: "trailer no colon", in: "0\r\nX\r\n\r\n", kind: BodyChunked},
		{name: "trailer control", in: "0\r\nX: a\x00\r\n\r\n", kind: BodyChunked},
		{name: "too many trailers", in: "0\r\n" + strings.Repeat("X: 1\r\n", MaxTrailerFields+1) + "\r\n", kind: BodyChunked},
		{name: "size line too long", in: "5;" + strings.Repeat("a", 5000) + "\r\nhello\r\n0\r\n\r\n", kind: BodyChunked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, keep := range []bool{false, true} {
				_, _, err := copyBody(strings.NewReader(tt.in), tt.kind, tt.n, keep)
				var re *ReadError
				if !errors.As(err, &re) {
					t.Fatalf("CopyBody: %v, want a *ReadError", err)
				}
				if got := errors.Is(err, io.ErrUnexpectedEOF); got != tt.eof {
					t.Errorf("CopyBody: %v; unexpected EOF %v, want %v", err, got, tt.eof)
				}
			}
		})
	}
}

func TestCopyBodyTrailerLimit(t *testing.T) {
	in := "0\r\n" + strings.Repeat("X: 1\r\n", MaxTrailerFields) + "\r\n"
	if out, _, err := copyBody(strings.NewReader(in), BodyChunked, 0, true); err != nil || out != in {
		t.Errorf("%d trailers: %q, %v", MaxTrailerFields, out, err)
	}
}

// A source failing with its own io.ErrUnexpectedEOF (a truncated TLS
// record) did not end an until-close body cleanly.
func TestCopyUntilCloseTruncated(t *testing.T) {
	src := io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(io.ErrUnexpectedEOF))
	out, _, err := copyBody(src, BodyUntilClose, 0, false)
	var re *ReadError
	if !errors.As(err, &re) {
		t.Fatalf("CopyBody: %v, want a *ReadError", err)
	}
	if strings.Contains(out, "0\r\n\r\n") {
		t.Errorf("output %q ends the chunked body", out)
	}
}

func TestCopyBodyReadErrorPassesCause(t *testing.T) {
	boom := errors.New("boom")
	src := io.MultiReader(strings.NewReader("5\r\nhe"), iotest.ErrReader(boom))
	for _, kind := range []BodyKind{BodyLength, BodyChunked, BodyUntilClose} {
		_, _, err := copyBody(src, kind, 10, false)
		var re *ReadError
		if !errors.As(err, &re) || !errors.Is(err, boom) {
			t.Errorf("kind %d: %v, want a *ReadError wrapping boom", kind, err)
		}
	}
}

type failWriter struct{ after int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errors.New("peer gone")
	}
	w.after--
	return len(p), nil
}

func TestCopyBodyWriteError(t *testing.T) {
	large := strings.Repeat("x", 100000)
	tests := []struct {
		name, in string
		kind     BodyKind
		n        int64
	}{
		{"length", "hello", BodyLength, 5},
		{"length large", large, BodyLength, int64(len(large))},
		{"chunked", "5\r\nhello\r\n0\r\n\r\n", BodyChunked, 0},
		{"chunked large", "186a0\r\n" + large + "\r\n0\r\n\r\n", BodyChunked, 0},
		{"until close", "hello", BodyUntilClose, 0},
		{"until close large", large, BodyUntilClose, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, after := range []int{0, 1} {
				err := CopyBody(bufio.NewWriter(&failWriter{after: after}), bufio.NewReader(strings.NewReader(tt.in)), tt.kind, tt.n, true)
				var we *WriteError
				if !errors.As(err, &we) {
					if after == 1 && err == nil {
						continue // one write was all it took
					}
					t.Fatalf("after %d writes: %v, want a *WriteError", after, err)
				}
			}
		})
	}
}

func TestErrorsUnwrap(t *testing.T) {
	cause := errors.New("cause")
	if err := error(&ReadError{cause}); !errors.Is(err, cause) || err.Error() != "read body: cause" {
		t.Errorf("ReadError: %v", err)
	}
	if err := error(&WriteError{cause}); !errors.Is(err, cause) || err.Error() != "write body: cause" {
		t.Errorf("WriteError: %v", err)
	}
}

// chanWriter hands every write to a channel.
type chanWriter chan string

func (w chanWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

// TestCopyBodyStreams feeds a body in pieces through a pipe and checks that
// each piece is written out before the next one is sent: a stream is never
// held back waiting for more input.
func TestCopyBodyStreams(t *testing.T) {
	tests := []struct {
		name   string
		kind   BodyKind
		n      int64
		pieces []string
		outs   []string // what must have left after each piece
	}{
		{"length", BodyLength, 9, []string{"abc", "def", "ghi"}, []string{"abc", "def", "ghi"}},
		{"chunked", BodyChunked, 0,
			[]string{"3\r\nabc\r\n", "3\r\ndef\r\n", "0\r\n\r\n"},
			[]string{"3\r\nabc\r\n", "3\r\ndef\r\n", "0\r\n\r\n"}},
		{"chunked split inside", BodyChunked, 0,
			[]string{"6\r\nabc", "def\r\n3", "\r\nghi", "\r\n0\r\n", "\r\n"},
			[]string{"6\r\nabc", "def\r\n", "3\r\nghi", "\r\n0\r\n", "\r\n"}},
		{"until close", BodyUntilClose, 0, []string{"abc", "de"}, []string{"3\r\nabc\r\n", "2\r\nde\r\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			w := make(chanWriter, 100)
			done := make(chan error, 1)
			go func() { done <- CopyBody(bufio.NewWriter(w), bufio.NewReader(pr), tt.kind, tt.n, false) }()
			var got string
			for i, piece := range tt.pieces {
				if _, err := pw.Write([]byte(piece)); err != nil {
					t.Fatal(err)
				}
				want := strings.Join(tt.outs[:i+1], "")
				deadline := time.After(5 * time.Second)
				for got != want {
					select {
					case s := <-w:
						got += s
					case <-deadline:
						t.Fatalf("after piece %d (%q): wrote %q, want %q", i, piece, got, want)
					}
				}
			}
			pw.Close()
			if err := <-done; err != nil {
				t.Fatalf("CopyBody: %v", err)
			}
			close(w)
			for s := range w {
				got += s
			}
			if tt.kind == BodyUntilClose {
				if want := strings.Join(tt.outs, "") + "0\r\n\r\n"; got != want {
					t.Errorf("wrote %q, want %q", got, want)
				}
			}
		})
	}
}

// One small message leaves in one write.
func TestCopyBodyOneWrite(t *testing.T) {
	w := make(chanWriter, 10)
	err := CopyBody(bufio.NewWriter(w), bufio.NewReader(strings.NewReader("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")), BodyChunked, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 1 {
		t.Errorf("%d writes, want 1", len(w))
	}
}

// TestCopyBodyBufferedLeavesTheEnd: a body that arrived whole stays in
// dst until the caller flushes.
func TestCopyBodyBufferedLeavesTheEnd(t *testing.T) {
	var out bytes.Buffer
	dst := bufio.NewWriter(&out)
	src := bufio.NewReader(strings.NewReader("hello"))
	if err := CopyBodyBuffered(dst, src, BodyLength, 5, false); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 || dst.Buffered() != 5 {
		t.Fatalf("after CopyBodyBuffered: %d bytes written, %d buffered; want 0 and 5", out.Len(), dst.Buffered())
	}
	if err := dst.Flush(); err != nil || out.String() != "hello" {
		t.Fatalf("after Flush: %q, %v", out.String(), err)
	}
}
