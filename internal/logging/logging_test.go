package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "k", "v")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1: %q", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("json format: %v", err)
	}
	if rec["msg"] != "shown" || rec["k"] != "v" {
		t.Errorf("got %v, want msg=shown k=v", rec)
	}

	buf.Reset()
	log, err = New(&buf, "debug", "text")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("dbg")
	if !strings.Contains(buf.String(), "msg=dbg") {
		t.Errorf("text format: got %q", buf.String())
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct{ level, format, want string }{
		{"loud", "text", "--log-level"},
		{"info", "xml", "--log-format"},
	} {
		_, err := New(&bytes.Buffer{}, tc.level, tc.format)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q, %q) = %v, want error naming %s", tc.level, tc.format, err, tc.want)
		}
	}
}
