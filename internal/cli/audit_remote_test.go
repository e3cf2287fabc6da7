package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// auditEvents makes the control plane append n events to its log, one
// join token each (durable when the API answers).
func (m *mesh) auditEvents(t *testing.T, n int) {
	t.Helper()
	for range n {
		m.mustRun(t, "", "token", "create", "--service", "catalog", "--namespace", "shop")
	}
}

// TestAuditVerifyThroughAPI: `trellis audit verify` as the README writes
// it, with only TRELLIS_API and TRELLIS_TOKEN_FILE set, has the control
// plane check its log, and prints what reading the files prints.
func TestAuditVerifyThroughAPI(t *testing.T) {
	m := startMesh(t)
	m.auditEvents(t, 3)
	t.Setenv("TRELLIS_API", m.APIURL())
	t.Setenv("TRELLIS_TOKEN_FILE", m.tokenFile())

	got := run(t, "", "audit", "verify")
	want := run(t, "", "audit", "verify", "--data-dir", m.DataDir)
	if got.code != cli.ExitOK || got.stderr != "" || !strings.HasPrefix(got.stdout, "ok: ") || got.stdout != want.stdout {
		t.Errorf("through the API: got %v\nwant exit 0 and the output of --data-dir:\n%v", got, want)
	}
}

// TestAuditVerifyThroughAPITampered: a record edited under a running
// control plane is reported through the API, as the files would show.
func TestAuditVerifyThroughAPITampered(t *testing.T) {
	m := startMesh(t)
	m.auditEvents(t, 3)
	dir := filepath.Join(m.DataDir, eventlog.DirName)
	seg, off := findFrame(t, dir, 2)
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	data[off+20] ^= 0x01
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}

	r := m.run(t, "", "audit", "verify")
	wantLine := "tampered: record 2 (segment " + filepath.Base(seg) + ", offset "
	if r.code != cli.ExitUser || r.stdout != "" || !strings.HasPrefix(r.stderr, wantLine) || !strings.Contains(r.stderr, "bad CRC") {
		t.Errorf("got %v\nwant exit 1 and stderr starting with %q, naming the bad CRC", r, wantLine)
	}
	for _, part := range []string{"from record 2 on", "evidence", m.APIURL()} {
		if !strings.Contains(r.stderr, part) {
			t.Errorf("stderr %q lacks %q", r.stderr, part)
		}
	}
}

func TestAuditVerifyThroughAPIErrors(t *testing.T) {
	m := startMesh(t)
	external := cptest.StartControlPlane(t, controlplane.Config{CollectorAddr: "127.0.0.1:1"})
	wrongToken := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(wrongToken, []byte(strings.Repeat("0", 64)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	externalToken := filepath.Join(external.DataDir, controlplane.AdminTokenFile)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"wrong token", []string{"--api", m.APIURL(), "--token-file", wrongToken, "audit", "verify"}, cli.ExitUser, "unauthorized"},
		{"external collector", []string{"--api", external.APIURL(), "--token-file", externalToken, "audit", "verify"}, cli.ExitUser,
			"telemetry goes to the collector at 127.0.0.1:1 (--collector-addr); ask its admin API"},
		{"unreachable", []string{"--api", "http://127.0.0.1:1", "--token-file", m.tokenFile(), "audit", "verify"}, cli.ExitInternal, "unreachable"},
		{"--api and --data-dir", []string{"--api", m.APIURL(), "--token-file", m.tokenFile(), "audit", "verify", "--data-dir", m.DataDir}, cli.ExitUser,
			"give one of them"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", tt.args...)
			if r.code != tt.wantCode || r.stdout != "" || !strings.Contains(r.stderr, tt.want) || strings.Contains(r.stderr, "tampered") {
				t.Errorf("got %v\nwant exit %d and %q", r, tt.wantCode, tt.want)
			}
		})
	}
}

// TestAuditVerifyAPIConcurrent: checks asked at once are answered in
// turn, each over the whole log.
func TestAuditVerifyAPIConcurrent(t *testing.T) {
	m := startMesh(t)
	m.auditEvents(t, 2)
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() {
			res, err := m.client.AuditVerify(context.Background())
			if err == nil && (!res.Intact || res.Records < 2) {
				err = fmt.Errorf("got %+v, want an intact log of at least 2 records", res)
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
