// Package h1 reads and writes HTTP/1.1 messages for the proxy's fast path.
//
// Parsing is strict and narrow on purpose. A request is taken only when its
// framing has exactly one reading: HTTP/1.1, origin-form target, one Host,
// at most one Content-Length or a lone "Transfer-Encoding: chunked", CRLF
// line ends, no obsolete line folding, and none of Upgrade, Expect, TE or
// Trailer. Anything else is ErrUnsupported, and nothing has been consumed:
// the caller hands the connection, buffered bytes included, to net/http,
// which implements the rest of HTTP/1.x. Responses (from a peer proxy or
// the local app) that break these rules are errors. A head whose lines
// end in a bare LF is ErrBareLF as soon as the bytes show it (the CRLF CRLF
// it lacks never comes), so the caller can answer at once.
//
// It depends on the standard library only.
//
// Heads are parsed from the reader's buffer without consuming it, copied
// once into a string that every field slices, and bodies are copied
// between buffered readers and writers with one flush whenever the source
// has nothing more buffered, so a small message leaves in one write.
package h1
