// Package h2relay is the proxy's HTTP/2 data path: it relays HTTP/2
// streams frame by frame between a downstream connection (one the proxy
// accepted) and pooled upstream connections (ones it dialed), without
// net/http's server and transport in between.
//
// Each connection has one goroutine, its reader. A frame is handled where
// it is read: a request's HEADERS are decoded (x/net/http2's Framer and
// HPACK), handed to the Handler, re-encoded for the upstream connection
// and written there; DATA, trailers, RST_STREAM and WINDOW_UPDATE are
// mapped to the other side's stream and written at once. Writes go into a
// connection's buffer under its lock and are flushed when the reading
// goroutine has no more frames buffered, so a batch of frames read in one
// read costs one write on each connection it touched, and no frame
// changes goroutine on its way through.
//
// Flow control is end to end: a stream's window is returned only as the
// bytes it sent leave on the other side, so a slow reader holds at most
// one window of data per stream in the proxy; a connection's window is
// returned as data is read, so a slow stream never holds the window other
// streams share. Writes to a downstream connection go through a Spill and
// never wait, so a caller that stops reading its socket cannot block the
// readers that serve other callers.
//
// Abuse is bounded here, since the path does not inherit net/http's
// mitigations: concurrent streams beyond the advertised limit are
// refused, header lists are bounded and CONTINUATION floods end the
// connection (both in the Framer), and rapid resets (CVE-2023-44487) and
// floods of SETTINGS, PING, PRIORITY, RST_STREAM and empty DATA frames end
// it with GOAWAY ENHANCE_YOUR_CALM (guard.go).
package h2relay
