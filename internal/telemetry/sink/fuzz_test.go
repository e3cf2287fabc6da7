package sink

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry"
)

// FuzzFormats feeds proxy-controlled event fields (a proxy is
// authenticated, not trusted) to the JSON and syslog renderers: neither
// may let a value break out of its field. JSON lines must stay one valid
// JSON object per line carrying the value; a syslog frame's length must
// match, its structured data must parse per RFC 5424, and the path
// parameter must read back as (a prefix of) the value sent.
func FuzzFormats(f *testing.F) {
	f.Add("authz.deny", "/a\"b\\c]d", "reason", "k", "v")
	f.Add("x", "\n<13>1 - forged", "]\"[", "a b=c", "x]\"\\")
	f.Add("", "\xff\xfe", "\x00", "", "")
	f.Fuzz(func(t *testing.T, kind, path, reason, attrKey, attrVal string) {
		e := &pb.Event{
			Seq: 3, Time: timestamppb.New(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)), Kind: kind,
			Reporter: "spiffe://td/ns/shop/sa/db", SourceId: path, Method: kind, Path: path, Reason: reason,
			ResponseCode: 403, Decision: "deny", Policy: reason, Attributes: map[string]string{attrKey: attrVal},
		}
		rec := telemetry.Record{Index: 9, Event: e}

		line := appendJSON(nil, rec)
		if bytes.ContainsAny(line, "\n\r") {
			t.Fatalf("JSON line holds a raw line break: %q", line)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("JSON line does not parse: %v\n%q", err, line)
		}
		// encoding/json replaces each invalid byte with U+FFFD, as appendJSON does.
		ref, _ := json.Marshal(path)
		var want string
		_ = json.Unmarshal(ref, &want)
		if got := m["path"]; got != want {
			t.Fatalf("JSON path %q, want %q", got, want)
		}

		sf := syslogFormat{facility: facilityAuthpriv, hostname: "collector-0", maxMsg: minSyslogMessage}
		frame, _ := sf.appendFrame(nil, nil, rec)
		n, msg, ok := bytes.Cut(frame, []byte(" "))
		if !ok {
			t.Fatalf("frame without a length: %q", frame)
		}
		if l, err := strconv.Atoi(string(n)); err != nil || l != len(msg) {
			t.Fatalf("frame length %q, message is %d bytes", n, len(msg))
		}
		if len(msg) > minSyslogMessage {
			t.Fatalf("message of %d bytes exceeds the %d limit", len(msg), minSyslogMessage)
		}
		params, err := parseSD(msg)
		if err != nil {
			t.Fatalf("structured data: %v\n%q", err, msg)
		}
		if params["index"] != "9" || params["seq"] != "3" {
			t.Fatalf("index/seq %q/%q, want 9/3: a value broke out of its field\n%q", params["index"], params["seq"], msg)
		}
		if path != "" && !strings.HasPrefix(strings.ToValidUTF8(path, "\uFFFD"), params["path"]) {
			t.Fatalf("path read back as %q, not a prefix of %q", params["path"], path)
		}
	})
}

// parseSD parses the header and structured data of an RFC 5424 message
// and returns the first element's parameters.
func parseSD(msg []byte) (map[string]string, error) {
	s := string(msg)
	// PRI+VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID, then SD.
	for range 6 {
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			return nil, errorf("header ends early")
		}
		s = s[i+1:]
	}
	var first map[string]string
	for len(s) > 0 && s[0] == '[' {
		params := map[string]string{}
		s = s[1:]
		end := strings.IndexAny(s, " ]")
		if end <= 0 {
			return nil, errorf("bad SD-ID")
		}
		s = s[end:]
		for len(s) > 0 && s[0] == ' ' {
			eq := strings.IndexByte(s, '=')
			if eq < 2 || len(s) < eq+2 || s[eq+1] != '"' {
				return nil, errorf("bad param")
			}
			name := s[1:eq]
			if strings.ContainsAny(name, " ]\"") {
				return nil, errorf("bad param name %q", name)
			}
			s = s[eq+2:]
			var v strings.Builder
			closed := false
			for i := 0; i < len(s); i++ {
				c := s[i]
				if c == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\' || s[i+1] == ']') {
					v.WriteByte(s[i+1])
					i++
					continue
				}
				if c == ']' {
					return nil, errorf("unescaped ] in value of %s", name)
				}
				if c == '"' {
					s = s[i+1:]
					closed = true
					break
				}
				v.WriteByte(c)
			}
			if !closed {
				return nil, errorf("unterminated value of %s", name)
			}
			if !utf8.ValidString(v.String()) {
				return nil, errorf("invalid UTF-8 in %s", name)
			}
			params[name] = v.String()
		}
		if len(s) == 0 || s[0] != ']' {
			return nil, errorf("element not closed")
		}
		s = s[1:]
		if first == nil {
			first = params
		}
	}
	if first == nil {
		return nil, errorf("no structured data")
	}
	if len(s) > 0 && s[0] != ' ' {
		return nil, errorf("junk after structured data")
	}
	return first, nil
}

type sdError string

func (e sdError) Error() string { return string(e) }

func errorf(format string, args ...any) error {
	if len(args) == 0 {
		return sdError(format)
	}
	return sdError(strings.TrimSpace(strings.ReplaceAll(format, "%q", strconv.Quote(args[0].(string)))))
}
