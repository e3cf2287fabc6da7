package sink

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
	"github.com/trellismesh/trellis/internal/testutil"
)

// openLog opens a fresh event log, closed when the test ends.
func openLog(t testing.TB) *eventlog.Log {
	t.Helper()
	return openLogAt(t, filepath.Join(t.TempDir(), eventlog.DirName))
}

func openLogAt(t testing.TB, dir string) *eventlog.Log {
	t.Helper()
	l, err := eventlog.Open(dir, eventlog.Options{Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// testEvent is the event appended as the log's i-th: every field set,
// with the characters escaping must get right (quotes, backslashes, ']',
// non-ASCII) in strings that reach syslog structured data.
func testEvent(i int) *pb.Event {
	e := &pb.Event{
		Seq:                  uint64(i),
		Time:                 timestamppb.New(time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC).Add(time.Duration(i) * time.Millisecond)),
		Kind:                 "authz.audit_would_deny",
		Reporter:             "spiffe://td.example/ns/shop/sa/proxy-" + strconv.Itoa(i%4),
		SourceId:             "spiffe://td.example/ns/shop/sa/web",
		SourceService:        "web",
		SourceNamespace:      "shop",
		DestinationId:        "spiffe://td.example/ns/shop/sa/db",
		DestinationService:   "db",
		DestinationNamespace: "shop",
		Protocol:             "http",
		Method:               "POST",
		Path:                 fmt.Sprintf(`/orders/%d/q"uote\back]slash/é/日本`, i),
		ResponseCode:         200,
		Decision:             "allow",
		Policy:               "shop/orders",
		Rule:                 int32(i % 2),
		Reason:               `rule "admins" [deny] \ matched`,
		TraceId:              fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e%04x", i),
		DurationMicros:       uint64(1000 + i),
		Attributes:           map[string]string{"request_id": "r-" + strconv.Itoa(i), "note": `a "b" ]c`},
	}
	switch i % 3 {
	case 0:
		e.Kind, e.Decision, e.ResponseCode = "authz.deny", "deny", 403
	case 2:
		e.Kind = "access"
	}
	return e
}

// appendEvents appends n test events continuing the log's numbering.
func appendEvents(t testing.TB, l telemetry.Appender, lr telemetry.LogReader, n int) {
	t.Helper()
	first := int(lr.LastIndex()) + 1
	events := make([]*pb.Event, n)
	for i := range events {
		events[i] = testEvent(first + i)
	}
	if _, err := l.Append(events...); err != nil {
		t.Fatal(err)
	}
}

// startDeliverer runs d until the returned stop is called or the test ends;
// stop checks that Run returned nil.
func startDeliverer(t testing.TB, d *Deliverer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("Run did not return 15s after its context was cancelled")
		}
	}
	t.Cleanup(stop)
	return stop
}

func newDeliverer(t testing.TB, cfg DelivererConfig) *Deliverer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t)
	}
	d, err := NewDeliverer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// awaitCursor waits until d's sink has confirmed record index.
func awaitCursor(t testing.TB, d *Deliverer, index uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for d.Stats().Cursor < index {
		if time.Now().After(deadline) {
			t.Fatalf("after %v the cursor is at %d, want %d (stats %+v)", timeout, d.Stats().Cursor, index, d.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wantJSON is the flat JSON object of record index holding e, as decoded
// by encoding/json.
func wantJSON(index uint64, e *pb.Event) map[string]any {
	attrs := map[string]any{}
	for k, v := range e.GetAttributes() {
		attrs[k] = v
	}
	var tm any
	if e.GetTime() != nil {
		tm = e.GetTime().AsTime().UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{
		"index":                 float64(index),
		"seq":                   float64(e.GetSeq()),
		"time":                  tm,
		"kind":                  e.GetKind(),
		"reporter":              e.GetReporter(),
		"instance":              e.GetInstance(),
		"source_id":             e.GetSourceId(),
		"source_service":        e.GetSourceService(),
		"source_namespace":      e.GetSourceNamespace(),
		"destination_id":        e.GetDestinationId(),
		"destination_service":   e.GetDestinationService(),
		"destination_namespace": e.GetDestinationNamespace(),
		"protocol":              e.GetProtocol(),
		"method":                e.GetMethod(),
		"path":                  e.GetPath(),
		"response_code":         float64(e.GetResponseCode()),
		"decision":              e.GetDecision(),
		"policy":                e.GetPolicy(),
		"rule":                  float64(e.GetRule()),
		"reason":                e.GetReason(),
		"trace_id":              e.GetTraceId(),
		"duration_micros":       float64(e.GetDurationMicros()),
		"attributes":            attrs,
	}
}
