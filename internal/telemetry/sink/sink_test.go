package sink

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/testutil/rsyslogtest"
)

func TestParse(t *testing.T) {
	pki := rsyslogtest.NewPKI(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		url  string
		want string // the sink's type, or "" for an error
		err  string // in the error
	}{
		{"syslog+tcp://127.0.0.1:514", "*sink.syslogSink", ""},
		{"syslog+tcp://siem.example", "*sink.syslogSink", ""},
		{"syslog+tcp://[::1]:1514?facility=local3", "*sink.syslogSink", ""},
		{"syslog+tls://127.0.0.1:6514?ca=" + pki.CAFile, "*sink.syslogSink", ""},
		{"syslog+tls://siem:6514?ca=" + pki.CAFile + "&servername=siem.example&cert=" + pki.ClientCert + "&key=" + pki.ClientKey, "*sink.syslogSink", ""},
		{"file://" + filepath.Join(dir, "audit.jsonl"), "*sink.fileSink", ""},
		{"file://localhost" + filepath.Join(dir, "audit.jsonl"), "*sink.fileSink", ""},
		{"file:" + filepath.Join(dir, "audit.jsonl"), "*sink.fileSink", ""},
		{"http://127.0.0.1:8088/services/collector?channel=x", "*sink.httpSink", ""},
		{"https://user:secret@siem.example/ingest", "*sink.httpSink", ""},

		{"", "", "missing scheme"},
		{"siem.example:514", "", "not supported"},
		{"udp://siem:514", "", `scheme "udp" is not supported`},
		{"syslog+tcp://:514", "", "missing host"},
		{"syslog+tcp://h:514/path", "", "only scheme, host, port and query"},
		{"syslog+tcp://h:514?ca=/x.pem", "", "only for syslog+tls"},
		{"syslog+tcp://h:514?facility=nope", "", "not a syslog facility"},
		{"syslog+tls://h:6514?sevrername=h", "", `unknown query parameter "sevrername"`},
		{"syslog+tls://h:6514?ca=/does/not/exist.pem", "", "no such file"},
		{"syslog+tls://h:6514?ca=" + pki.ClientKey, "", "no PEM certificate"},
		{"syslog+tls://h:6514?cert=" + pki.ClientCert, "", "cert and key go together"},
		{"syslog+tls://h:6514?cert=" + pki.ClientCert + "&key=" + pki.ServerKey, "", "private key does not match"},
		{"file://relative/audit.jsonl", "", `not host "relative"`},
		{"file:///", "", "absolute file path"},
		{"file:///no/such/dir/audit.jsonl", "", "does not exist"},
		{"file://" + filepath.Join(dir, "a.jsonl") + "?x=1", "", "no query"},
		{"http:///path", "", "missing host"},
		{"http://h/%zz", "", "not a URL"},
	} {
		s, err := Parse(tc.url, Options{})
		if tc.want != "" {
			if err != nil {
				t.Errorf("%s: %v", tc.url, err)
			} else if got := typeName(s); got != tc.want {
				t.Errorf("%s: got %s, want %s", tc.url, got, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error, want one containing %q", tc.url, tc.err)
			continue
		}
		msg := err.Error()
		for _, want := range []string{"--audit-sink", tc.err, "syslog+tcp://HOST:PORT", "syslog+tls://", "file:///", "http"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: error %q lacks %q", tc.url, msg, want)
			}
		}
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *syslogSink:
		return "*sink.syslogSink"
	case *fileSink:
		return "*sink.fileSink"
	case *httpSink:
		return "*sink.httpSink"
	}
	return "?"
}

// TestParseHidesSecrets: errors and log names never show passwords or
// query parameters (which carry tokens for HTTP collectors).
func TestParseHidesSecrets(t *testing.T) {
	for _, u := range []string{
		"https://user:hunter2@siem.example/x?token=hunter2",
		"ftp://user:hunter2@siem.example/x",
		"http://user:hunter2@siem.example/%zz",
	} {
		s, err := Parse(u, Options{})
		var shown string
		if err != nil {
			shown = err.Error()
		} else {
			shown = s.(interface{ String() string }).String()
		}
		if strings.Contains(shown, "hunter2") {
			t.Errorf("%s: %q shows the secret", u, shown)
		}
	}
	if got, want := Display("https://u:p@siem.example:8443/in?token=x"), "https://siem.example:8443/in"; got != want {
		t.Errorf("Display: got %q, want %q", got, want)
	}
}

func TestSyslogFacility(t *testing.T) {
	s, err := Parse("syslog+tcp://127.0.0.1:514?facility=local3", Options{Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.(*syslogSink).format.facility, 19; got != want {
		t.Errorf("facility: got %d, want %d", got, want)
	}
}
