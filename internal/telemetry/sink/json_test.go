package sink

import (
	"encoding/json"
	"reflect"
	"sort"
	"testing"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry"
)

// TestJSONHasEveryEventField fails when telemetry.proto gains a field the
// JSON form does not carry.
func TestJSONHasEveryEventField(t *testing.T) {
	var got map[string]any
	if err := json.Unmarshal(appendJSON(nil, telemetry.Record{Index: 1, Event: &pb.Event{}}), &got); err != nil {
		t.Fatal(err)
	}
	want := []string{"index"}
	fields := (&pb.Event{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		want = append(want, string(fields.Get(i).Name()))
	}
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	sort.Strings(want)
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("JSON keys:\n got  %v\n want %v", keys, want)
	}
	if got["time"] != nil {
		t.Errorf("time of an event without one: got %v, want null", got["time"])
	}
}

func TestJSONValues(t *testing.T) {
	for i := 1; i <= 3; i++ {
		e := testEvent(i)
		b := appendJSON(nil, telemetry.Record{Index: uint64(100 + i), Event: e})
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if want := wantJSON(uint64(100+i), e); !reflect.DeepEqual(got, want) {
			t.Errorf("event %d:\n got  %v\n want %v", i, got, want)
		}
	}
}

func TestJSONString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `q"uote`, `back\slash`, "new\nline\ttab\r\x00\x1f\x7f",
		"é日本", "bad\xffutf8\xc3", "line\u2028sep\u2029", "</script>&",
	} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("%q encodes as invalid JSON %s: %v", s, b, err)
			continue
		}
		// encoding/json decodes to what it would have encoded from, with
		// invalid UTF-8 replaced the same way.
		want, _ := json.Marshal(s)
		var wantS string
		json.Unmarshal(want, &wantS)
		if got != wantS {
			t.Errorf("%q: got %q, want %q", s, got, wantS)
		}
	}
}
