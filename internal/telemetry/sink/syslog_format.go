package sink

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/trellismesh/trellis/internal/telemetry"
)

const (
	syslogApp = "trellis"
	// sdID and sdAttrID name the structured data elements; 32473 is the
	// private enterprise number RFC 5612 reserves for documentation.
	sdID     = "trellis@32473"
	sdAttrID = "trellis-attr@32473"

	facilityAuthpriv = 10
	severityError    = 3
	severityWarning  = 4
	severityNotice   = 5

	// minSyslogMessage is what RFC 5425 receivers must accept, and room
	// for every field at the shortest cut.
	minSyslogMessage = 2048
)

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
	"lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
	"ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19,
	"local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// syslogFormat renders records as RFC 5424 messages (see the package doc).
type syslogFormat struct {
	facility int
	hostname string // already restricted to what HOSTNAME allows
	maxMsg   int
}

// appendFrame appends rec as "LEN SP MSG" (RFC 6587 octet counting), using
// scratch for the message and returning it for reuse.
func (f *syslogFormat) appendFrame(b, scratch []byte, rec telemetry.Record) (_, _ []byte) {
	msg := f.appendMessage(scratch[:0], rec, 0, true)
	for limit := 1024; len(msg) > f.maxMsg && limit >= 16; limit /= 2 {
		msg = f.appendMessage(msg[:0], rec, limit, true)
	}
	if len(msg) > f.maxMsg {
		// Too many attributes: the log and the other sinks have them.
		msg = f.appendMessage(msg[:0], rec, 16, false)
	}
	b = strconv.AppendInt(b, int64(len(msg)), 10)
	b = append(b, ' ')
	return append(b, msg...), msg
}

// appendMessage appends rec's message, cutting every structured data value
// and the text to maxValue bytes when maxValue > 0.
func (f *syslogFormat) appendMessage(b []byte, rec telemetry.Record, maxValue int, attrs bool) []byte {
	e := rec.Event
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(f.facility*8+severity(rec)), 10)
	b = append(b, ">1 "...)
	if t := e.GetTime(); t != nil {
		b = t.AsTime().UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	b = append(b, f.hostname...)
	b = append(b, " "+syslogApp+" - "...)
	b = appendHeaderField(b, e.GetKind(), 32)

	b = append(b, " ["+sdID...)
	b = appendParam(b, "index", strconv.FormatUint(rec.Index, 10), 0)
	b = appendParam(b, "seq", strconv.FormatUint(e.GetSeq(), 10), 0)
	b = appendParam(b, "kind", e.GetKind(), maxValue)
	for _, p := range [...]struct{ name, value string }{
		{"reporter", e.GetReporter()},
		{"instance", e.GetInstance()},
		{"source_id", e.GetSourceId()},
		{"source_service", e.GetSourceService()},
		{"source_namespace", e.GetSourceNamespace()},
		{"destination_id", e.GetDestinationId()},
		{"destination_service", e.GetDestinationService()},
		{"destination_namespace", e.GetDestinationNamespace()},
		{"protocol", e.GetProtocol()},
		{"method", e.GetMethod()},
		{"path", e.GetPath()},
	} {
		if p.value != "" {
			b = appendParam(b, p.name, p.value, maxValue)
		}
	}
	if c := e.GetResponseCode(); c != 0 {
		b = appendParam(b, "response_code", strconv.FormatUint(uint64(c), 10), 0)
	}
	if d := e.GetDecision(); d != "" {
		b = appendParam(b, "decision", d, maxValue)
	}
	if p := e.GetPolicy(); p != "" {
		b = appendParam(b, "policy", p, maxValue)
		b = appendParam(b, "rule", strconv.FormatInt(int64(e.GetRule()), 10), 0)
	}
	if r := e.GetReason(); r != "" {
		b = appendParam(b, "reason", r, maxValue)
	}
	if t := e.GetTraceId(); t != "" {
		b = appendParam(b, "trace_id", t, maxValue)
	}
	if d := e.GetDurationMicros(); d != 0 {
		b = appendParam(b, "duration_micros", strconv.FormatUint(d, 10), 0)
	}
	b = append(b, ']')
	if a := e.GetAttributes(); attrs && len(a) > 0 {
		b = append(b, "["+sdAttrID...)
		for _, k := range sortedKeys(a) {
			b = append(b, ' ')
			b = appendHeaderField(b, strings.Map(sdNameRune, k), 32)
			b = append(b, '=', '"')
			b = appendParamValue(b, a[k], maxValue)
			b = append(b, '"')
		}
		b = append(b, ']')
	}
	b = append(b, ' ')
	return appendText(b, rec, maxValue)
}

// severity is warning for denials, including audit-mode would-deny, and
// for anomaly alerts (error for high-severity ones), notice for
// everything else.
func severity(rec telemetry.Record) int {
	e := rec.Event
	switch {
	case strings.HasPrefix(e.GetKind(), "anomaly.") && e.GetAttributes()["severity"] == "high":
		return severityError
	case e.GetDecision() == "deny" || e.GetKind() == "authz.deny" || e.GetKind() == "authz.audit_would_deny" || strings.HasPrefix(e.GetKind(), "anomaly."):
		return severityWarning
	}
	return severityNotice
}

// appendHeaderField appends s restricted to printable US-ASCII without
// space and cut to limit bytes, or "-" (NILVALUE) for "".
func appendHeaderField(b []byte, s string, limit int) []byte {
	if s == "" {
		return append(b, '-')
	}
	for i := 0; i < len(s) && i < limit; i++ {
		c := s[i]
		if c < 33 || c > 126 {
			c = '_'
		}
		b = append(b, c)
	}
	return b
}

// sdNameRune maps the characters an SD-NAME may not hold to '_'.
func sdNameRune(r rune) rune {
	if r < 33 || r > 126 || r == '=' || r == ']' || r == '"' {
		return '_'
	}
	return r
}

func appendParam(b []byte, name, value string, maxValue int) []byte {
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, '=', '"')
	b = appendParamValue(b, value, maxValue)
	return append(b, '"')
}

// appendParamValue appends s escaped as RFC 5424 section 6.3.3 requires:
// '"', '\' and ']' get a backslash. Invalid UTF-8 becomes U+FFFD.
func appendParamValue(b []byte, s string, maxValue int) []byte {
	s = cut(strings.ToValidUTF8(s, "\uFFFD"), maxValue)
	start := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c == ']' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', c)
			start = i + 1
		}
	}
	return append(b, s[start:]...)
}

// appendText appends the one-line summary that ends the message.
func appendText(b []byte, rec telemetry.Record, maxValue int) []byte {
	e := rec.Event
	var t strings.Builder
	t.WriteString(e.GetKind())
	add := func(parts ...string) {
		for _, p := range parts {
			t.WriteByte(' ')
			t.WriteString(p)
		}
	}
	if e.GetMethod() != "" || e.GetPath() != "" {
		add(e.GetMethod(), e.GetPath())
	}
	src, dst := orElse(e.GetSourceId(), e.GetSourceService()), orElse(e.GetDestinationId(), e.GetDestinationService())
	if src != "" || dst != "" {
		add("from", orElse(src, "?"), "to", orElse(dst, "?"))
	}
	if c := e.GetResponseCode(); c != 0 {
		add("code", strconv.FormatUint(uint64(c), 10))
	}
	if d := e.GetDecision(); d != "" {
		add("decision", d)
	}
	if p := e.GetPolicy(); p != "" {
		add("policy", p, "rule", strconv.FormatInt(int64(e.GetRule()), 10))
	}
	if r := e.GetReason(); r != "" {
		t.WriteString(": ")
		t.WriteString(r)
	}
	text := strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(t.String(), "\uFFFD"))
	return append(b, cut(text, maxValue)...)
}

func orElse(s, fallback string) string {
	if s != "" {
		return s
	}
	return fallback
}

// cut shortens valid UTF-8 s to at most limit bytes (when limit > 0)
// without splitting a character.
func cut(s string, limit int) string {
	if limit <= 0 || len(s) <= limit {
		return s
	}
	for limit > 0 && !utf8.RuneStart(s[limit]) {
		limit--
	}
	return s[:limit]
}
