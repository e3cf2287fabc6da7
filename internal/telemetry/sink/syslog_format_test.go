package sink

import (
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry"
)

func TestSyslogMessage(t *testing.T) {
	f := syslogFormat{facility: facilityAuthpriv, hostname: "collector-0", maxMsg: defaultSyslogMaxMessage}
	e := &pb.Event{
		Seq:                7,
		Time:               timestamppb.New(time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("x", 3600))),
		Kind:               "authz.deny",
		Reporter:           "spiffe://td/ns/shop/sa/db",
		SourceId:           "spiffe://td/ns/shop/sa/web",
		SourceService:      "web",
		DestinationService: "db",
		Method:             "GET",
		Path:               `/a"b\c]d`,
		ResponseCode:       403,
		Decision:           "deny",
		Policy:             "shop/no-admin",
		Rule:               0,
		Attributes:         map[string]string{"z": "1", "a b=c": `x]`},
	}
	frame, _ := f.appendFrame(nil, nil, telemetry.Record{Index: 42, Event: e})
	want := `<84>1 2026-03-04T04:06:07.123456Z collector-0 trellis - authz.deny ` +
		`[trellis@32473 index="42" seq="7" kind="authz.deny" reporter="spiffe://td/ns/shop/sa/db" ` +
		`source_id="spiffe://td/ns/shop/sa/web" source_service="web" destination_service="db" method="GET" ` +
		`path="/a\"b\\c\]d" response_code="403" decision="deny" policy="shop/no-admin" rule="0"]` +
		`[trellis-attr@32473 a_b_c="x\]" z="1"] ` +
		`authz.deny GET /a"b\c]d from spiffe://td/ns/shop/sa/web to db code 403 decision deny policy shop/no-admin rule 0`
	want = strconv.Itoa(len(want)) + " " + want
	if string(frame) != want {
		t.Errorf("frame:\n got  %s\n want %s", frame, want)
	}

	// An event with nothing set still makes a valid message.
	frame, _ = f.appendFrame(nil, nil, telemetry.Record{Index: 1, Event: &pb.Event{}})
	if want := `74 <85>1 - collector-0 trellis - - [trellis@32473 index="1" seq="0" kind=""] `; string(frame) != want {
		t.Errorf("empty event:\n got  %q\n want %q", frame, want)
	}
}

func TestSyslogSeverity(t *testing.T) {
	for _, tc := range []struct {
		kind, decision string
		want           int
	}{
		{"authz.deny", "deny", 10*8 + 4},
		{"authz.audit_would_deny", "allow", 10*8 + 4},
		{"access", "deny", 10*8 + 4},
		{"access", "allow", 10*8 + 5},
		{"cert.issued", "", 10*8 + 5},
		{"resource.applied", "", 10*8 + 5},
	} {
		f := syslogFormat{facility: facilityAuthpriv, hostname: "h", maxMsg: defaultSyslogMaxMessage}
		msg := string(f.appendMessage(nil, telemetry.Record{Index: 1, Event: &pb.Event{Kind: tc.kind, Decision: tc.decision}}, 0, true))
		if want := "<" + strconv.Itoa(tc.want) + ">1 "; !strings.HasPrefix(msg, want) {
			t.Errorf("%s/%s: got %q, want prefix %q", tc.kind, tc.decision, msg, want)
		}
	}
}

// TestSyslogLongValues: a message that would exceed the limit is shortened
// to fit, values cut on character boundaries, the framing still exact.
func TestSyslogLongValues(t *testing.T) {
	f := syslogFormat{facility: facilityAuthpriv, hostname: "h", maxMsg: 2048}
	e := testEvent(3)
	e.Path = "/" + strings.Repeat("日", 5000)
	e.Reason = strings.Repeat(`"]\`, 3000)
	e.Attributes = map[string]string{}
	for i := range 300 {
		e.Attributes["k"+strconv.Itoa(i)] = strings.Repeat("v", 100)
	}
	frame, msg := f.appendFrame(nil, nil, telemetry.Record{Index: 9, Event: e})
	if len(msg) > 2048 {
		t.Errorf("message is %d bytes, want at most 2048", len(msg))
	}
	if !utf8.Valid(msg) {
		t.Errorf("message is not valid UTF-8")
	}
	n, rest, _ := strings.Cut(string(frame), " ")
	if strconv.Itoa(len(rest)) != n {
		t.Errorf("frame length %s, message is %d bytes", n, len(rest))
	}
	for _, want := range []string{`index="9"`, `kind="authz.deny"`, `decision="deny"`, `path="/日`} {
		if !strings.Contains(string(msg), want) {
			t.Errorf("shortened message lacks %s: %s", want, msg)
		}
	}
}

func TestAppendParamValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{`a"b`, `a\"b`},
		{`a\b`, `a\\b`},
		{`a]b`, `a\]b`},
		{`[x=y]`, `[x=y\]`},
		{"bad\xff", "bad\uFFFD"},
	} {
		if got := string(appendParamValue(nil, tc.in, 0)); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}
