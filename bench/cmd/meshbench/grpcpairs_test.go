package main

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestParseGRPCPairsAndPayloads(t *testing.T) {
	if got, err := parseGRPCPairs(""); err != nil || !slices.Equal(got, grpcPairNames) {
		t.Errorf(`parseGRPCPairs("") = %v, %v`, got, err)
	}
	if got, err := parseGRPCPairs("none"); err != nil || got != nil {
		t.Errorf(`parseGRPCPairs("none") = %v, %v`, got, err)
	}
	// Report order, duplicates dropped.
	if got, err := parseGRPCPairs("haproxy,direct,haproxy"); err != nil || !slices.Equal(got, []string{"direct", "haproxy"}) {
		t.Errorf("parseGRPCPairs(haproxy,direct,haproxy) = %v, %v", got, err)
	}
	if _, err := parseGRPCPairs("direct,envoy"); err == nil {
		t.Error("parseGRPCPairs accepted envoy")
	}
	if got, err := parsePayloads("64,1024,65536"); err != nil || !slices.Equal(got, []int{64, 1024, 65536}) {
		t.Errorf("parsePayloads = %v, %v", got, err)
	}
	for _, bad := range []string{"0", "1k", "64,", "262144"} {
		if _, err := parsePayloads(bad); err == nil {
			t.Errorf("parsePayloads(%q) did not fail", bad)
		}
	}
}

func TestGRPCRuns(t *testing.T) {
	runs := grpcRuns(options{conns: 16, grpcPayloads: []int{64, 65536}})
	var got []string
	for _, g := range runs {
		got = append(got, g.name()+": "+g.title())
	}
	want := []string{
		"64 B/1000: gRPC, 64 B payload: 1,000 calls/s, 16 connections (open loop)",
		"64 B/max: gRPC, 64 B payload: maximum rate, 16 connections (closed loop)",
		"64 B/streams: gRPC, 64 B payload: maximum rate, 2 connections x 8 streams (closed loop)",
		"64 B/bidi: gRPC, 64 B messages: a bidirectional stream on each of 16 connections, one message and its echo at a time (closed loop)",
		"64 kB/1000: gRPC, 64 kB payload: 1,000 calls/s, 16 connections (open loop)",
		"64 kB/max: gRPC, 64 kB payload: maximum rate, 16 connections (closed loop)",
		"64 kB/streams: gRPC, 64 kB payload: maximum rate, 2 connections x 8 streams (closed loop)",
		"64 kB/bidi: gRPC, 64 kB messages: a bidirectional stream on each of 16 connections, one message and its echo at a time (closed loop)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("grpcRuns:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Fewer connections than streams still leaves one connection.
	if g := grpcRuns(options{conns: 4, grpcPayloads: []int{64}})[2]; g.conns != 1 || g.streams != grpcStreams {
		t.Errorf("streams run with -c 4: %+v", g)
	}
}

func TestFortioArgs(t *testing.T) {
	e := &env{fortio: "/bin/fortio"}
	argv := strings.Join(e.fortioArgs(grpcRun{payload: 1024, conns: 16, streams: 1, qps: 1000}, 6e9, "127.0.0.1:1"), " ")
	for _, want := range []string{"/bin/fortio load -grpc -ping -c 16 -s 1 -qps 1000 -t 6s -payload-size 1024", "-json -", " -uniform 127.0.0.1:1"} {
		if !strings.Contains(argv, want) {
			t.Errorf("fortio argv %q lacks %q", argv, want)
		}
	}
	argv = strings.Join(e.fortioArgs(grpcRun{payload: 64, conns: 2, streams: 8}, 6e9, "127.0.0.1:1"), " ")
	if !strings.Contains(argv, "-c 2 -s 8 -qps 0") || strings.Contains(argv, "-uniform") {
		t.Errorf("fortio argv at maximum: %q", argv)
	}
}

// fortioJSON is the shape of `fortio load -json -` output, trimmed.
const fortioJSON = `{
  "RunType": "GRPC Ping PayloadLength=64",
  "ActualQPS": 999.6,
  "ActualDuration": 2000000000,
  "DurationHistogram": {
    "Count": 2000,
    "Max": 0.0047,
    "Percentiles": [
      {"Percentile": 50, "Value": 0.00025},
      {"Percentile": 75, "Value": 0.0003},
      {"Percentile": 90, "Value": 0.0004},
      {"Percentile": 99, "Value": 0.0012},
      {"Percentile": 99.9, "Value": 0.003}
    ]
  },
  "RetCodes": {"SERVING": 1990, "ERROR": 10}
}`

func TestParseFortio(t *testing.T) {
	res, err := parseFortio([]byte(fortioJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := loadResult{Requests: 1990, Errors: 10, Seconds: 2, Rate: 995, P50: 0.25, P90: 0.4, P99: 1.2, P999: 3, Max: 4.7}
	near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
	if res.Requests != want.Requests || res.Errors != want.Errors || !near(res.Seconds, want.Seconds) || !near(res.Rate, want.Rate) ||
		!near(res.P50, want.P50) || !near(res.P90, want.P90) || !near(res.P99, want.P99) || !near(res.P999, want.P999) || !near(res.Max, want.Max) {
		t.Errorf("parseFortio = %+v, want %+v", res, want)
	}
	if _, err := parseFortio([]byte(`{"RetCodes": {}}`)); err == nil {
		t.Error("a result without a duration did not fail")
	}
	if _, err := parseFortio([]byte("Starting at max qps")); err == nil {
		t.Error("text instead of JSON did not fail")
	}
}

func TestPingMessage(t *testing.T) {
	b := pingMessage(300)
	num, typ, n := protowire.ConsumeTag(b)
	if num != 3 || typ != protowire.BytesType || n < 0 {
		t.Fatalf("tag %d/%d", num, typ)
	}
	v, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || len(v) != 300 || n+m != len(b) {
		t.Errorf("payload of %d bytes (consumed %d of %d)", len(v), n+m, len(b))
	}
}

func TestGRPCSummary(t *testing.T) {
	o := options{conns: 16, grpcPayloads: []int{1024}}
	runs := grpcRuns(o)
	var topos []*topology
	for _, n := range grpcPairNames {
		topos = append(topos, &topology{name: n})
	}
	ro := options{conns: 16}
	for _, g := range runs {
		ro.levels = append(ro.levels, level{name: g.name(), rate: g.qps})
	}
	r := newResults(ro, topos)
	r.calls = true
	for range 3 {
		r.add("direct", "1 kB/1000", fakeRun(0.1, 1000, 0))
		r.add("trellis", "1 kB/1000", fakeRun(0.3, 1000, 10))
		r.add("nginx", "1 kB/1000", fakeRun(0.5, 1000, 20))
		r.add("haproxy", "1 kB/1000", fakeRun(0.4, 1000, 15))
		for _, k := range []string{"1 kB/max", "1 kB/streams", "1 kB/bidi"} {
			r.add("direct", k, fakeRun(1, 20000, 0))
			r.add("trellis", k, fakeRun(1, 15000, 60))
			r.add("nginx", k, fakeRun(1, 12000, 90))
			r.add("haproxy", k, fakeRun(1, 18000, 60))
		}
	}
	bad := fakeRun(1, 15000, 60)
	bad.Errors = 7
	r.runs["1 kB/max"]["trellis"][0] = bad
	var b strings.Builder
	r.grpcSummary(&b, runs, o)
	md := b.String()
	for _, want := range []string{
		"| payload | topology | added p50 at 1,000/s (ms) | added p99 at 1,000/s (ms) | max calls/s, unary | max calls/s, 2 x 8 streams |",
		"| 1 kB | direct | - | - | 20000 | 20000 | - | - | - | 20000 | - | 0 |",
		"| 1 kB | trellis | 0.200 | 0.200 | 15000 | 15000 | 100.0 | 40.0 | 40.0 | 15000 | 40.0 | 7 |",
		"| 1 kB | nginx | 0.400 | 0.400 | 12000 | 12000 | 200.0 | 75.0 | 75.0 | 12000 | 75.0 | 0 |",
		// Latency and CPU against the lower peer, rate against the higher.
		"| 1 kB | **trellis / best peer** | 0.67x (haproxy) | 0.67x (haproxy) | 0.83x (haproxy) | 0.83x (haproxy) | 0.67x (haproxy) | 1.20x (haproxy) | 1.20x (haproxy) | 0.83x (haproxy) | 1.20x (haproxy) | |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}

	// The per-run tables speak of calls.
	r.titles = map[string]string{"1 kB/1000": runs[0].title()}
	b.Reset()
	r.tables(&b)
	for _, want := range []string{
		"### gRPC, 1 kB payload: 1,000 calls/s, 16 connections (open loop)",
		"| rate (calls/s) | errors | CPU % | CPU/call (µs) |",
		"Trellis: CPU per call 0.50x nginx's; CPU per call 0.67x haproxy's.",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("tables lack %q:\n%s", want, b.String())
		}
	}
}
