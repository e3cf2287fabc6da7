package sink

import (
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/trellismesh/trellis/internal/telemetry"
)

// appendJSON appends rec as the flat JSON object the package doc
// describes. It is hand-written rather than protojson: the field set is
// fixed, numbers stay numbers, and the file sink has to keep up with the
// collector.
func appendJSON(b []byte, rec telemetry.Record) []byte {
	e := rec.Event
	b = append(b, `{"index":`...)
	b = strconv.AppendUint(b, rec.Index, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, e.GetSeq(), 10)
	b = append(b, `,"time":`...)
	if t := e.GetTime(); t != nil {
		b = append(b, '"')
		b = t.AsTime().UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	b = appendJSONField(b, "kind", e.GetKind())
	b = appendJSONField(b, "reporter", e.GetReporter())
	b = appendJSONField(b, "instance", e.GetInstance())
	b = appendJSONField(b, "source_id", e.GetSourceId())
	b = appendJSONField(b, "source_service", e.GetSourceService())
	b = appendJSONField(b, "source_namespace", e.GetSourceNamespace())
	b = appendJSONField(b, "destination_id", e.GetDestinationId())
	b = appendJSONField(b, "destination_service", e.GetDestinationService())
	b = appendJSONField(b, "destination_namespace", e.GetDestinationNamespace())
	b = appendJSONField(b, "protocol", e.GetProtocol())
	b = appendJSONField(b, "method", e.GetMethod())
	b = appendJSONField(b, "path", e.GetPath())
	b = append(b, `,"response_code":`...)
	b = strconv.AppendUint(b, uint64(e.GetResponseCode()), 10)
	b = appendJSONField(b, "decision", e.GetDecision())
	b = appendJSONField(b, "policy", e.GetPolicy())
	b = append(b, `,"rule":`...)
	b = strconv.AppendInt(b, int64(e.GetRule()), 10)
	b = appendJSONField(b, "reason", e.GetReason())
	b = appendJSONField(b, "trace_id", e.GetTraceId())
	b = append(b, `,"duration_micros":`...)
	b = strconv.AppendUint(b, e.GetDurationMicros(), 10)
	b = append(b, `,"attributes":{`...)
	attrs := e.GetAttributes()
	for i, k := range sortedKeys(attrs) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, attrs[k])
	}
	return append(b, "}}"...)
}

func appendJSONField(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, value)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does, so every line stays valid JSON.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		// U+2028 and U+2029 end lines in JavaScript.
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
