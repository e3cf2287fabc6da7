package cli_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
)

// writeEventLog writes n events to the event log of a new data dir, in
// segments of about five records, and returns the data dir.
func writeEventLog(t *testing.T, n int) string {
	t.Helper()
	dataDir := t.TempDir()
	l, err := eventlog.Open(filepath.Join(dataDir, eventlog.DirName), eventlog.Options{SegmentBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		ev := &pb.Event{Kind: "authz.deny", Reporter: "spiffe://trellis.local/ns/shop/sa/catalog", Path: fmt.Sprintf("/admin/%d", i)}
		if _, err := l.Append(ev, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dataDir
}

func TestAuditVerifyOK(t *testing.T) {
	dataDir := writeEventLog(t, 20)
	rep, err := eventlog.Verify(filepath.Join(dataDir, eventlog.DirName))
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, "", "audit", "verify", "--data-dir", dataDir)
	want := fmt.Sprintf("ok: 40 records in %d segments, last hash %x\n", rep.Segments, rep.LastHash)
	if r.code != cli.ExitOK || r.stdout != want || r.stderr != "" {
		t.Errorf("got %v, want exit 0 and %q", r, want)
	}
}

func TestAuditVerifyTampered(t *testing.T) {
	dataDir := writeEventLog(t, 20)
	dir := filepath.Join(dataDir, eventlog.DirName)
	// Flip a byte in the event of record 7.
	seg, off := findFrame(t, dir, 7)
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	data[off+20] ^= 0x01
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}

	r := run(t, "", "audit", "verify", "--data-dir", dataDir)
	wantLine := fmt.Sprintf("tampered: record 7 (segment %s, offset %d): bad CRC\n", filepath.Base(seg), off)
	if r.code != cli.ExitUser || !strings.HasPrefix(r.stderr, wantLine) || r.stdout != "" {
		t.Errorf("got %v, want exit 1 and stderr starting with %q", r, wantLine)
	}
	if !strings.Contains(r.stderr, "evidence") {
		t.Errorf("stderr %q does not say what to do next", r.stderr)
	}
}

func TestAuditVerifyTornTail(t *testing.T) {
	dataDir := writeEventLog(t, 20)
	dir := filepath.Join(dataDir, eventlog.DirName)
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	last := segs[len(segs)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, fi.Size()-5); err != nil {
		t.Fatal(err)
	}
	r := run(t, "", "audit", "verify", "--data-dir", dataDir)
	if r.code != cli.ExitOK || !strings.HasPrefix(r.stdout, "ok: 39 records in ") || !strings.Contains(r.stderr, "interrupted") {
		t.Errorf("got %v, want exit 0, 39 records and a note about the interrupted write", r)
	}
}

func TestAuditVerifyErrors(t *testing.T) {
	clearEnv(t)
	empty := t.TempDir()
	if err := os.Mkdir(filepath.Join(empty, eventlog.DirName), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no data dir and no token", []string{"audit", "verify"}, "no admin token: pass --token-file DATA_DIR/admin.token (or set TRELLIS_TOKEN_FILE); or, on the collector's host, --data-dir DATA_DIR"},
		{"missing log", []string{"audit", "verify", "--data-dir", t.TempDir()}, "no event log in "},
		{"missing data dir", []string{"audit", "verify", "--data-dir", filepath.Join(t.TempDir(), "nope")}, "no event log in "},
		{"log without segments", []string{"audit", "verify", "--data-dir", empty}, "no event log in "},
		{"arguments", []string{"audit", "verify", "--data-dir", empty, "extra"}, "takes no arguments"},
		{"mistyped subcommand", []string{"audit", "verfy"}, `did you mean "verify"?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", tt.args...)
			if r.code != cli.ExitUser || !strings.Contains(r.stderr, tt.want) || strings.Contains(r.stderr, "tampered") {
				t.Errorf("got %v, want exit 1 and %q", r, tt.want)
			}
		})
	}
}

func TestAuditVerifyUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	dataDir := writeEventLog(t, 3)
	seg := filepath.Join(dataDir, eventlog.DirName, "00000000000000000001.seg")
	if err := os.Chmod(seg, 0); err != nil {
		t.Fatal(err)
	}
	r := run(t, "", "audit", "verify", "--data-dir", dataDir)
	if r.code != cli.ExitUser || !strings.Contains(r.stderr, "run as the user that owns the data dir") {
		t.Errorf("got %v, want exit 1 saying to run as the owner", r)
	}
}

// findFrame returns the segment file and offset of a record's frame,
// walking the frames as the format documents: a 4-byte length, a 4-byte
// CRC, then the payload starting with the 8-byte index.
func findFrame(t *testing.T, dir string, index uint64) (string, int) {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, seg := range segs {
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+16 <= len(data); off += 8 + int(binary.BigEndian.Uint32(data[off:])) {
			if binary.BigEndian.Uint64(data[off+8:]) == index {
				return seg, off
			}
		}
	}
	t.Fatalf("record %d not found in %s", index, dir)
	return "", 0
}
