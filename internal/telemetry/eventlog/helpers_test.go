package eventlog_test

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
)

// testEvent is a typical audit event, about 300 bytes encoded.
func testEvent(i int) *pb.Event {
	return &pb.Event{
		Seq:                  uint64(i),
		Time:                 timestamppb.New(time.Unix(1767225600, int64(i)*1000)),
		Kind:                 "authz.deny",
		Reporter:             "spiffe://trellis.local/ns/shop/sa/catalog",
		SourceId:             "spiffe://trellis.local/ns/shop/sa/frontend",
		SourceService:        "frontend",
		SourceNamespace:      "shop",
		DestinationId:        "spiffe://trellis.local/ns/shop/sa/catalog",
		DestinationService:   "catalog",
		DestinationNamespace: "shop",
		Protocol:             "http",
		Method:               "POST",
		Path:                 fmt.Sprintf("/admin/items/%d", i),
		ResponseCode:         403,
		Decision:             "deny",
		Policy:               "shop/deny-admin",
		Rule:                 0,
		Reason:               "denied by rule 0 of shop/deny-admin",
		TraceId:              "4bf92f3577b34da6a3ce929d0e0e4736",
	}
}

func testEvents(from, n int) []*pb.Event {
	evs := make([]*pb.Event, n)
	for i := range evs {
		evs[i] = testEvent(from + i)
	}
	return evs
}

// logBuffer is a logger bound to t that also keeps what was logged.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	sb strings.Builder
}

func (w *logBuffer) Write(p []byte) (int, error) {
	w.t.Helper()
	w.mu.Lock()
	w.sb.Write(p)
	w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (w *logBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sb.String()
}

func newLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	w := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(w, nil)), w
}

// openLog opens the log in dir and closes it when the test ends.
func openLog(t testing.TB, dir string, segmentBytes int64) *eventlog.Log {
	t.Helper()
	logger, _ := newLogger(t)
	l, err := eventlog.Open(dir, eventlog.Options{SegmentBytes: segmentBytes, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustAppend(t testing.TB, l *eventlog.Log, evs ...*pb.Event) uint64 {
	t.Helper()
	last, err := l.Append(evs...)
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// segments lists the segment files of dir in order.
func segments(t testing.TB, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return paths // Glob sorts, and the names are zero-padded
}

// frameAt is one frame found by parsing a segment independently of the
// package, following the format in its documentation.
type frameAt struct {
	off, size int64
	index     uint64
}

func parseFrames(t testing.TB, path string) []frameAt {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var frames []frameAt
	for off := 0; off+8 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[off:]))
		if off+8+n > len(data) {
			break
		}
		frames = append(frames, frameAt{int64(off), int64(8 + n), binary.BigEndian.Uint64(data[off+8:])})
		off += 8 + n
	}
	return frames
}

// findRecord returns the segment file and frame of a record.
func findRecord(t testing.TB, dir string, index uint64) (string, frameAt) {
	t.Helper()
	for _, p := range segments(t, dir) {
		for _, f := range parseFrames(t, p) {
			if f.index == index {
				return p, f
			}
		}
	}
	t.Fatalf("record %d not found in %s", index, dir)
	return "", frameAt{}
}

// editFile applies fn to the contents of path.
func editFile(t testing.TB, path string, fn func([]byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, fn(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fixCRC recomputes the CRC of the frame at off, as a forger would.
func fixCRC(data []byte, off int64) {
	n := binary.BigEndian.Uint32(data[off:])
	tab := crc32.MakeTable(crc32.Castagnoli)
	crc := crc32.Update(crc32.Checksum(data[off:off+4], tab), tab, data[off+8:off+8+int64(n)])
	binary.BigEndian.PutUint32(data[off+4:], crc)
}

// fixHash recomputes the hash of the frame at off from prev, as a forger
// would, and returns it.
func fixHash(data []byte, off int64, prev []byte) []byte {
	n := int64(binary.BigEndian.Uint32(data[off:]))
	payload := data[off+8 : off+8+n]
	h := sha256.New()
	h.Write(prev)
	h.Write(payload[:len(payload)-32])
	copy(payload[len(payload)-32:], h.Sum(nil))
	return payload[len(payload)-32:]
}

// storedHash is the hash field of the frame at off.
func storedHash(data []byte, off int64) []byte {
	n := int64(binary.BigEndian.Uint32(data[off:]))
	return data[off+8+n-32 : off+8+n]
}

// mustTamper runs Verify and returns the TamperError it must report.
func mustTamper(t testing.TB, dir string) *eventlog.TamperError {
	t.Helper()
	rep, err := eventlog.Verify(dir)
	var te *eventlog.TamperError
	if !errors.As(err, &te) {
		t.Fatalf("Verify: got report %+v, error %v; want a TamperError", rep, err)
	}
	return te
}

func equalEvents(a, b *pb.Event) bool { return proto.Equal(a, b) }
