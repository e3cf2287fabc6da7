package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// ReadError and WriteError tell which side of a body copy failed: the
// source (a broken or malformed body) or the destination (gone).
type (
	ReadError  struct{ Err error }
	WriteError struct{ Err error }
)

func (e *ReadError) Error() string  { return "read body: " + e.Err.Error() }
func (e *ReadError) Unwrap() error  { return e.Err }
func (e *WriteError) Error() string { return "write body: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// errBadChunk is a malformed chunked body.
var errBadChunk = errors.New("malformed chunked encoding")

// MaxTrailerFields bounds the trailer section of a chunked body.
const MaxTrailerFields = 64

// CopyBody copies one body of the given kind from src to dst, framed the
// same way on the way out except BodyUntilClose, which leaves chunked. n
// is the length for BodyLength. Trailers of a chunked body are forwarded
// when keepTrailers, else dropped. dst is flushed whenever src has nothing
// more buffered, so streams flow, and at the end.
func CopyBody(dst *bufio.Writer, src *bufio.Reader, kind BodyKind, n int64, keepTrailers bool) error {
	if err := CopyBodyBuffered(dst, src, kind, n, keepTrailers); err != nil {
		return err
	}
	if err := dst.Flush(); err != nil {
		return &WriteError{err}
	}
	return nil
}

// CopyBodyBuffered is CopyBody without the final flush: the end of the
// body may stay in dst for the caller to flush (after its bookkeeping, or
// with the next message).
func CopyBodyBuffered(dst *bufio.Writer, src *bufio.Reader, kind BodyKind, n int64, keepTrailers bool) error {
	var err error
	switch kind {
	case BodyNone:
	case BodyLength:
		err = copyLength(dst, src, n)
	case BodyChunked:
		err = copyChunked(dst, src, keepTrailers)
	case BodyUntilClose:
		err = copyUntilClose(dst, src)
	}
	return err
}

// flush writes out what dst holds, before a read that may block.
func flush(dst *bufio.Writer) error {
	if dst.Buffered() > 0 {
		if err := dst.Flush(); err != nil {
			return &WriteError{err}
		}
	}
	return nil
}

// fill waits for src to have bytes buffered, flushing dst first: a write
// of what is there before blocking on a read.
func fill(dst *bufio.Writer, src *bufio.Reader) error {
	if src.Buffered() > 0 {
		return nil
	}
	if dst.Buffered() > 0 {
		if err := dst.Flush(); err != nil {
			return &WriteError{err}
		}
	}
	if _, err := src.Peek(1); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return &ReadError{err}
	}
	return nil
}

func copyLength(dst *bufio.Writer, src *bufio.Reader, n int64) error {
	for n > 0 {
		if err := fill(dst, src); err != nil {
			return err
		}
		k := src.Buffered()
		if int64(k) > n {
			k = int(n)
		}
		b, _ := src.Peek(k)
		if _, err := dst.Write(b); err != nil {
			return &WriteError{err}
		}
		_, _ = src.Discard(k)
		n -= int64(k)
	}
	return nil
}

func copyUntilClose(dst *bufio.Writer, src *bufio.Reader) error {
	for {
		if src.Buffered() == 0 {
			if err := dst.Flush(); err != nil {
				return &WriteError{err}
			}
			// Only a clean EOF ends the body: a source's own
			// io.ErrUnexpectedEOF (a truncated TLS record) is an error.
			if _, err := src.Peek(1); err == io.EOF {
				break
			} else if err != nil {
				return &ReadError{err}
			}
		}
		b, _ := src.Peek(src.Buffered())
		if err := writeChunk(dst, b); err != nil {
			return err
		}
		_, _ = src.Discard(len(b))
	}
	if _, err := dst.WriteString("0\r\n\r\n"); err != nil {
		return &WriteError{err}
	}
	return nil
}

func writeChunk(dst *bufio.Writer, b []byte) error {
	writeChunkSize(dst, int64(len(b)))
	dst.Write(b)
	if _, err := dst.WriteString("\r\n"); err != nil {
		return &WriteError{err}
	}
	return nil
}

// writeChunkSize writes a chunk-size line; errors surface at the next
// checked write.
func writeChunkSize(dst *bufio.Writer, n int64) {
	var hex [16]byte
	i := len(hex)
	for ; ; n >>= 4 {
		i--
		hex[i] = "0123456789abcdef"[n&0xf]
		if n < 16 {
			break
		}
	}
	dst.Write(hex[i:])
	dst.WriteString("\r\n")
}

// copyChunked re-frames a chunked body chunk by chunk: sizes are parsed
// and rewritten, extensions dropped, and the trailer section validated
// like header fields.
func copyChunked(dst *bufio.Writer, src *bufio.Reader, keepTrailers bool) error {
	for {
		if err := fill(dst, src); err != nil {
			return err
		}
		line, err := readLine(dst, src)
		if err != nil {
			return err
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return &ReadError{errBadChunk}
		}
		if size == 0 {
			break
		}
		writeChunkSize(dst, size)
		if err := copyLength(dst, src, size); err != nil {
			return err
		}
		if err := expectCRLF(dst, src); err != nil {
			return err
		}
		if _, err := dst.WriteString("\r\n"); err != nil {
			return &WriteError{err}
		}
	}
	dst.WriteString("0\r\n")
	for n := 0; ; n++ {
		line, err := readLine(dst, src)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := cutColon(line)
		if !ok || n == MaxTrailerFields || !isToken(name) || !validValue(value) {
			return &ReadError{errBadChunk}
		}
		if keepTrailers {
			dst.Write(line)
			dst.WriteString("\r\n")
		}
	}
	if _, err := dst.WriteString("\r\n"); err != nil {
		return &WriteError{err}
	}
	return nil
}

// readLine reads one CRLF-terminated line (without the CRLF); a bare LF or
// a line longer than the buffer is an error.
func readLine(dst *bufio.Writer, src *bufio.Reader) ([]byte, error) {
	if b, _ := src.Peek(src.Buffered()); bytes.IndexByte(b, '\n') < 0 {
		if err := flush(dst); err != nil {
			return nil, err
		}
	}
	line, err := src.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, &ReadError{err}
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, &ReadError{errBadChunk}
	}
	return line[:len(line)-2], nil
}

func expectCRLF(dst *bufio.Writer, src *bufio.Reader) error {
	if src.Buffered() < 2 {
		if err := flush(dst); err != nil {
			return err
		}
	}
	b, err := src.Peek(2)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return &ReadError{err}
	}
	if b[0] != '\r' || b[1] != '\n' {
		return &ReadError{errBadChunk}
	}
	_, _ = src.Discard(2)
	return nil
}

// parseChunkSize parses "HEX[;ext...]" (at most 15 hex digits, so the size
// fits an int64).
func parseChunkSize(line []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i == 15 {
			return 0, false
		}
		n = n<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, false
	}
	rest := line[i:]
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	// net/http takes trailing whitespace but not whitespace before ';'.
	if len(rest) > 0 && (line[i] != ';' || !validValue(string(rest))) {
		return 0, false
	}
	return n, true
}

func cutColon(line []byte) (name, value string, ok bool) {
	for i, c := range line {
		if c == ':' {
			return string(line[:i]), trimOWS(string(line[i+1:])), true
		}
	}
	return "", "", false
}
