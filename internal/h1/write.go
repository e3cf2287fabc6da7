package h1

import (
	"bufio"
	"strconv"
)

// WriteRequestHead writes h's request line and forwarded fields, then
// extra fields, then the framing of its body: the Content-Length it had
// (including 0) or chunked. A bodiless request other than GET or HEAD
// says "Content-Length: 0", as net/http does, since some servers insist
// on a length for POST and PUT. The caller flushes.
func WriteRequestHead(w *bufio.Writer, h *Head, extra []Field) {
	w.WriteString(h.Method)
	w.WriteByte(' ')
	w.WriteString(h.Target)
	w.WriteString(" HTTP/1.1\r\n")
	writeFields(w, h.Fields, extra)
	switch {
	case h.Chunked:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	case h.ContentLength >= 0:
		writeContentLength(w, h.ContentLength)
	case h.Method != "GET" && h.Method != "HEAD":
		writeContentLength(w, 0)
	}
	w.WriteString("\r\n")
}

// WriteResponseHead writes an HTTP/1.1 status line with h's status and
// reason, its forwarded fields, and framing for a body of the given kind
// (BodyUntilClose leaves chunked; a bodiless response keeps the
// Content-Length it announced, as a response to HEAD does). extra fields
// follow h's (a proxy's "Connection: close").
func WriteResponseHead(w *bufio.Writer, h *Head, kind BodyKind, extra []Field) {
	w.WriteString("HTTP/1.1 ")
	var code [3]byte
	code[0], code[1], code[2] = byte('0'+h.Status/100), byte('0'+h.Status/10%10), byte('0'+h.Status%10)
	w.Write(code[:])
	w.WriteByte(' ')
	w.WriteString(h.Reason)
	w.WriteString("\r\n")
	writeFields(w, h.Fields, extra)
	switch kind {
	case BodyChunked, BodyUntilClose:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		if h.ContentLength >= 0 {
			writeContentLength(w, h.ContentLength)
		}
	}
	w.WriteString("\r\n")
}

func writeFields(w *bufio.Writer, fields, extra []Field) {
	for i := range fields {
		if f := &fields[i]; !f.Drop {
			writeField(w, f)
		}
	}
	for i := range extra {
		writeField(w, &extra[i])
	}
}

func writeField(w *bufio.Writer, f *Field) {
	w.WriteString(f.Name)
	w.WriteString(": ")
	w.WriteString(f.Value)
	w.WriteString("\r\n")
}

func writeContentLength(w *bufio.Writer, n int64) {
	w.WriteString("Content-Length: ")
	if w.Available() < 20 {
		w.WriteString(strconv.FormatInt(n, 10))
	} else {
		w.Write(strconv.AppendInt(w.AvailableBuffer(), n, 10))
	}
	w.WriteString("\r\n")
}

// ValidField reports whether a field built by a caller (not parsed) is
// safe to write.
func ValidField(f Field) bool {
	return isToken(f.Name) && validValue(f.Value)
}
