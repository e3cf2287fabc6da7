package tracing

import (
	"net/http"
	"testing"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestExtract(t *testing.T) {
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, tc := range []struct {
		name                  string
		h                     http.Header
		ids, decided, sampled bool
		format                Format
	}{
		{"none", hdr(), false, false, false, FormatNone},
		{"w3c sampled", hdr("traceparent", "00-"+tid+"-"+sid+"-01"), true, true, true, FormatW3C},
		{"w3c unsampled", hdr("traceparent", "00-"+tid+"-"+sid+"-00"), true, true, false, FormatW3C},
		{"w3c future version", hdr("traceparent", "01-"+tid+"-"+sid+"-01-what"), true, true, true, FormatW3C},
		{"w3c 00 too long", hdr("traceparent", "00-"+tid+"-"+sid+"-01-x"), false, false, false, FormatNone},
		{"w3c zero trace id", hdr("traceparent", "00-00000000000000000000000000000000-"+sid+"-01"), false, false, false, FormatNone},
		{"w3c bad hex", hdr("traceparent", "00-"+tid[:31]+"g-"+sid+"-01"), false, false, false, FormatNone},
		{"w3c over b3", hdr("traceparent", "00-"+tid+"-"+sid+"-00", "b3", tid+"-"+sid+"-1"), true, true, false, FormatW3C},
		{"bad w3c, b3", hdr("traceparent", "junk", "b3", tid+"-"+sid+"-1"), true, true, true, FormatB3},
		{"b3 single", hdr("b3", tid+"-"+sid+"-1-"+sid), true, true, true, FormatB3},
		{"b3 single no decision", hdr("b3", tid+"-"+sid), true, false, false, FormatB3},
		{"b3 64-bit", hdr("b3", tid[16:]+"-"+sid+"-0"), true, true, false, FormatB3},
		{"b3 deny", hdr("b3", "0"), false, true, false, FormatB3},
		{"b3 debug", hdr("b3", "d"), false, true, true, FormatB3},
		{"b3 multi", hdr("X-B3-TraceId", tid, "X-B3-SpanId", sid, "X-B3-Sampled", "1"), true, true, true, FormatB3Multi},
		{"b3 multi unsampled", hdr("X-B3-TraceId", tid, "X-B3-SpanId", sid, "X-B3-Sampled", "0"), true, true, false, FormatB3Multi},
		{"b3 multi flags", hdr("X-B3-TraceId", tid, "X-B3-SpanId", sid, "X-B3-Flags", "1"), true, true, true, FormatB3Multi},
		{"b3 multi decision only", hdr("X-B3-Sampled", "0"), false, true, false, FormatB3Multi},
	} {
		p := Extract(tc.h)
		if p.HasIDs != tc.ids || p.Decided != tc.decided || p.Sampled != tc.sampled || p.Format != tc.format {
			t.Errorf("%s: got ids %v decided %v sampled %v format %d, want %v %v %v %d", tc.name, p.HasIDs, p.Decided, p.Sampled, p.Format, tc.ids, tc.decided, tc.sampled, tc.format)
		}
		if p.HasIDs && tc.format != FormatB3 || tc.name == "b3 single" {
			if got := Traceparent(p.TraceID, p.SpanID, true); got[3:35] != tid && tc.name != "b3 64-bit" {
				t.Errorf("%s: trace id: got %s, want %s", tc.name, got[3:35], tid)
			}
		}
	}
}

func TestTraceparentRoundTrip(t *testing.T) {
	tp := Unsampled(&Parent{})
	p := Extract(hdr("traceparent", tp))
	if !p.HasIDs || !p.Decided || p.Sampled {
		t.Fatalf("UnsampledRoot %s: got %+v", tp, p)
	}
	if got := Traceparent(p.TraceID, p.SpanID, false); got != tp {
		t.Errorf("got %s, want %s", got, tp)
	}
	if got, want := B3(p.TraceID, p.SpanID, true), tp[3:35]+"-"+tp[36:52]+"-1"; got != want {
		t.Errorf("B3: got %s, want %s", got, want)
	}
}

// Extract and Sample on a request that is not traced allocate nothing.
func TestExtractNoAllocs(t *testing.T) {
	h := hdr("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "x-other", "1")
	tr := &Tracer{}
	allocs := testing.AllocsPerRun(100, func() {
		p := Extract(h)
		if tr.Sample(&p) {
			t.Fatal("sampled")
		}
	})
	if allocs != 0 {
		t.Errorf("got %v allocs, want 0", allocs)
	}
}

func TestIsField(t *testing.T) {
	for _, f := range Fields {
		if !IsField(f) {
			t.Errorf("IsField(%q) = false", f)
		}
	}
	for _, f := range []string{"tracestate", "X-B3-TraceId", "content-type"} {
		if got, want := IsField(f), f == "X-B3-TraceId"; got != want {
			t.Errorf("IsField(%q): got %v, want %v", f, got, want)
		}
	}
}
