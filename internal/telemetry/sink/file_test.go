package sink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/telemetry"
)

// readJSONL decodes every line of path; a line that is not JSON is returned
// as nil.
func readJSONL(t testing.TB, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Errorf("%s does not end with a newline", path)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			m = nil
		}
		lines = append(lines, m)
	}
	return lines
}

func indexes(lines []map[string]any) []uint64 {
	var idx []uint64
	for _, l := range lines {
		if l == nil {
			idx = append(idx, 0)
			continue
		}
		f, _ := l["index"].(float64)
		idx = append(idx, uint64(f))
	}
	return idx
}

func seq(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestFileSink(t *testing.T) {
	log := openLog(t)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := Parse("file://"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := newDeliverer(t, DelivererConfig{Name: "file://" + path, Sink: s, Log: log, Dir: t.TempDir(), MaxBatch: 16, BatchDelay: 5 * time.Millisecond})
	appendEvents(t, log, log, 40)
	startDeliverer(t, d)
	appendEvents(t, log, log, 25)
	awaitCursor(t, d, 65, 10*time.Second)

	lines := readJSONL(t, path)
	if got, want := indexes(lines), seq(1, 65); !reflect.DeepEqual(got, want) {
		t.Fatalf("indexes in the file:\n got  %v\n want %v", got, want)
	}
	recs, err := log.Read(1, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if want := wantJSON(r.Index, r.Event); !reflect.DeepEqual(lines[i], want) {
			t.Errorf("line %d:\n got  %v\n want %v", i+1, lines[i], want)
		}
	}
	if st := d.Stats(); st.Delivered != 65 || st.Lag != 0 || st.FailedAttempts != 0 || st.Batches < 5 {
		t.Errorf("stats %+v, want 65 delivered in at least 5 batches of at most 16, no lag, no failures", st)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode: %v %v, want 0600", fi.Mode(), err)
	}
}

// TestFileSinkAfterCrash: a line left unfinished by a crash is ended before
// new lines go in, so they stay valid JSON.
func TestFileSinkAfterCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, []byte(`{"index":1}`+"\n"+`{"index":2,"se`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Parse("file://"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs := []telemetry.Record{{Index: 2, Event: testEvent(2)}, {Index: 3, Event: testEvent(3)}}
	if err := s.Send(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if got, want := indexes(readJSONL(t, path)), []uint64{1, 0, 2, 3}; !reflect.DeepEqual(got, want) {
		t.Errorf("indexes (0 = not JSON): got %v, want %v", got, want)
	}
}

// TestFileSinkRotation: after the file is moved away (logrotate), the next
// batch goes to a new file at the path.
func TestFileSinkRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	s, err := Parse("file://"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Send(ctx, []telemetry.Record{{Index: 1, Event: testEvent(1)}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx, []telemetry.Record{{Index: 2, Event: testEvent(2)}}); err != nil {
		t.Fatal(err)
	}
	if got := indexes(readJSONL(t, path+".1")); !reflect.DeepEqual(got, []uint64{1}) {
		t.Errorf("rotated file: got %v, want [1]", got)
	}
	if got := indexes(readJSONL(t, path)); !reflect.DeepEqual(got, []uint64{2}) {
		t.Errorf("new file: got %v, want [2]", got)
	}
}
