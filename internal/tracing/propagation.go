package tracing

import (
	"math/rand/v2"
	"strings"
)

// Header is what the propagation reads a request's fields through:
// *h1.Head, http.Header and *h2relay.Request all have it. Get is
// case-insensitive; Extract passes canonical names (http.Header.Get
// then allocates nothing).
type Header interface {
	Get(name string) string
}

// Format is the header format a trace context came in.
type Format uint8

// Formats.
const (
	FormatNone    Format = iota
	FormatW3C            // traceparent (and tracestate)
	FormatB3             // b3 (single header)
	FormatB3Multi        // x-b3-traceid, x-b3-spanid, x-b3-sampled, x-b3-flags
)

// Parent is a caller's trace context, read with Extract.
type Parent struct {
	TraceID [16]byte
	SpanID  [8]byte
	// HasIDs: TraceID and SpanID are set (and not zero); without them
	// the caller may still have made a sampling decision (b3: 0).
	HasIDs bool
	// Decided: the caller made a sampling decision, Sampled.
	Decided bool
	Sampled bool
	Format  Format
}

// Extract reads a caller's trace context: a W3C traceparent first, then
// a B3 single header, then B3 multi headers. Malformed headers are
// ignored (as if absent), as W3C Trace Context says. It allocates
// nothing.
func Extract(h Header) Parent {
	if tp := h.Get("Traceparent"); tp != "" {
		if p, ok := parseTraceparent(tp); ok {
			return p
		}
	}
	if b3 := h.Get("B3"); b3 != "" {
		if p, ok := parseB3(b3); ok {
			return p
		}
	}
	if tid := h.Get("X-B3-Traceid"); tid != "" {
		var p Parent
		if parseB3TraceID(tid, &p.TraceID) && hexInto(p.SpanID[:], h.Get("X-B3-Spanid")) && !zero(p.TraceID[:]) && !zero(p.SpanID[:]) {
			p.HasIDs, p.Format = true, FormatB3Multi
		}
		p.sampledB3Multi(h)
		if p.HasIDs || p.Decided {
			p.Format = FormatB3Multi
			return p
		}
		return Parent{}
	}
	var p Parent
	if p.sampledB3Multi(h); p.Decided {
		p.Format = FormatB3Multi
	}
	return p
}

func (p *Parent) sampledB3Multi(h Header) {
	if h.Get("X-B3-Flags") == "1" { // debug
		p.Decided, p.Sampled = true, true
		return
	}
	switch h.Get("X-B3-Sampled") {
	case "1", "true":
		p.Decided, p.Sampled = true, true
	case "0", "false":
		p.Decided, p.Sampled = true, false
	}
}

// parseTraceparent reads version-traceid-parentid-flags. A version
// other than 00 is read as 00 when the prefix fits (W3C's rule for
// future versions); ff is invalid.
func parseTraceparent(s string) (Parent, bool) {
	var p Parent
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return p, false
	}
	var ver [1]byte
	if !hexInto(ver[:], s[:2]) || ver[0] == 0xff || (ver[0] == 0 && len(s) != 55) || (len(s) > 55 && s[55] != '-') {
		return p, false
	}
	var flags [1]byte
	if !hexInto(p.TraceID[:], s[3:35]) || !hexInto(p.SpanID[:], s[36:52]) || !hexInto(flags[:], s[53:55]) {
		return p, false
	}
	if zero(p.TraceID[:]) || zero(p.SpanID[:]) {
		return p, false
	}
	p.HasIDs, p.Decided, p.Sampled, p.Format = true, true, flags[0]&1 == 1, FormatW3C
	return p, true
}

// parseB3 reads b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]] or
// a bare decision (0, 1, d).
func parseB3(s string) (Parent, bool) {
	var p Parent
	p.Format = FormatB3
	if len(s) == 1 {
		return p, p.b3Sampled(s)
	}
	tid, rest, ok := strings.Cut(s, "-")
	if !ok || !parseB3TraceID(tid, &p.TraceID) {
		return p, false
	}
	sid, rest, more := strings.Cut(rest, "-")
	if !hexInto(p.SpanID[:], sid) || zero(p.TraceID[:]) || zero(p.SpanID[:]) {
		return p, false
	}
	p.HasIDs = true
	if more {
		flag, _, _ := strings.Cut(rest, "-")
		if !p.b3Sampled(flag) {
			return p, false
		}
	}
	return p, true
}

func (p *Parent) b3Sampled(s string) bool {
	switch s {
	case "1", "d":
		p.Decided, p.Sampled = true, true
	case "0":
		p.Decided, p.Sampled = true, false
	default:
		return false
	}
	return true
}

// parseB3TraceID reads a 16 or 32 digit trace id (a 64-bit one is
// left-padded with zeros, as OpenTelemetry's B3 propagator does).
func parseB3TraceID(s string, dst *[16]byte) bool {
	switch len(s) {
	case 32:
		return hexInto(dst[:], s)
	case 16:
		clear(dst[:8])
		return hexInto(dst[8:], s)
	}
	return false
}

// hexInto decodes lower- or upper-case hex s into exactly len(dst) bytes.
func hexInto(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	bad := byte(0)
	for i := range dst {
		hi, lo := unhex[s[2*i]], unhex[s[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&15
	}
	return bad&0x10 == 0
}

// unhex maps a hex digit to its value and anything else to 0x10.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0x10
	}
	for i := byte(0); i < 10; i++ {
		t['0'+i] = i
	}
	for i := byte(0); i < 6; i++ {
		t['a'+i], t['A'+i] = 10+i, 10+i
	}
	return t
}()

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

const hexDigits = "0123456789abcdef"

// Traceparent formats a version 00 traceparent.
func Traceparent(traceID [16]byte, spanID [8]byte, sampled bool) string {
	var b [55]byte
	appendTraceparent(b[:0], traceID, spanID, sampled)
	return string(b[:])
}

func appendTraceparent(b []byte, traceID [16]byte, spanID [8]byte, sampled bool) []byte {
	b = append(b, "00-"...)
	b = appendHex(b, traceID[:])
	b = append(b, '-')
	b = appendHex(b, spanID[:])
	if sampled {
		return append(b, "-01"...)
	}
	return append(b, "-00"...)
}

func appendHex(b, src []byte) []byte {
	for _, c := range src {
		b = append(b, hexDigits[c>>4], hexDigits[c&15])
	}
	return b
}

// B3 formats a b3 single header: {traceid}-{spanid}-{1|0}.
func B3(traceID [16]byte, spanID [8]byte, sampled bool) string {
	b := make([]byte, 0, 51)
	b = appendHex(b, traceID[:])
	b = append(b, '-')
	b = appendHex(b, spanID[:])
	if sampled {
		b = append(b, "-1"...)
	} else {
		b = append(b, "-0"...)
	}
	return string(b)
}

// Unsampled is the traceparent of a request the proxy decided not to
// trace when the caller p made no decision: p's trace id when it has
// one, else a fresh one, and a fresh span id. The next hops follow the
// decision instead of making their own (a request is traced at every
// hop or at none). One allocation.
func Unsampled(p *Parent) string {
	tid := p.TraceID
	if !p.HasIDs {
		putRand(tid[:])
	}
	var sid [8]byte
	putRand(sid[:])
	return Traceparent(tid, sid, false)
}

func putRand(b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rand.Uint64()
		for j := i; j < i+8 && j < len(b); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
	if zero(b) {
		b[0] = 1
	}
}

// Fields are the trace header names a proxy that starts a span replaces
// (lower case); tracestate passes unchanged.
var Fields = []string{"traceparent", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"}

// IsField reports whether name (any case) is one of Fields.
func IsField(name string) bool {
	if len(name) != 2 && len(name) != 11 && (len(name) < 10 || len(name) > 17) {
		return false
	}
	for _, f := range Fields {
		if len(f) == len(name) && strings.EqualFold(f, name) {
			return true
		}
	}
	return false
}
