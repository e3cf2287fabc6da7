package tracing

import (
	"net/http"
	"testing"
)

// BenchmarkUnsampled is what a proxy does for a request it does not
// trace: read the caller's context (none here: five lookups), decide at
// the root rate, and make the not-sampled traceparent for the next hop.
func BenchmarkUnsampled(b *testing.B) {
	h := http.Header{"Host": {"catalog"}, "User-Agent": {"Go-http-client/1.1"}, "Accept-Encoding": {"gzip"}}
	t := &Tracer{}
	t.cfg.Rate = 0.01
	b.ReportAllocs()
	for b.Loop() {
		p := Extract(h)
		if !t.Sample(&p) && !p.Decided {
			_ = Unsampled(&p)
		}
	}
}

// BenchmarkUnsampledParent is the next hop: a not-sampled traceparent
// parsed and followed.
func BenchmarkUnsampledParent(b *testing.B) {
	h := http.Header{"Host": {"catalog"}, "Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}}
	t := &Tracer{}
	t.cfg.Rate = 0.01
	b.ReportAllocs()
	for b.Loop() {
		p := Extract(h)
		if t.Sample(&p) {
			b.Fatal("sampled")
		}
	}
}
