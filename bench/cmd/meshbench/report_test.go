package main

import (
	"strings"
	"testing"
)

func TestPct(t *testing.T) {
	ns := []int64{1e6, 2e6, 3e6, 4e6, 5e6, 6e6, 7e6, 8e6, 9e6, 10e6}
	for _, tc := range []struct {
		p    float64
		want float64
	}{{50, 5}, {90, 9}, {99, 10}, {99.9, 10}, {10, 1}} {
		if got := pct(ns, tc.p); got != tc.want {
			t.Errorf("pct(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := pct(nil, 50); got != 0 {
		t.Errorf("pct(nil) = %v, want 0", got)
	}
}

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want spread
	}{
		{[]float64{3, 1, 2}, spread{2, 1, 3}},
		{[]float64{4, 1, 2, 3}, spread{2.5, 1, 4}},
		{nil, spread{}},
	} {
		if got := spreadOf(tc.xs); got != tc.want {
			t.Errorf("spreadOf(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
	if got, want := (spread{1.5, 1, 2}).format(1), "1.5 (1.0-2.0)"; got != want {
		t.Errorf("format = %q, want %q", got, want)
	}
	if got, want := (spread{1.5, 1.5, 1.5}).format(1), "1.5"; got != want {
		t.Errorf("format = %q, want %q", got, want)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{1: "1", 999: "999", 1000: "1,000", 12345: "12,345", 1000000: "1,000,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseOnlyAndLevels(t *testing.T) {
	if got, err := parseOnly(""); err != nil || got != nil {
		t.Errorf(`parseOnly("") = %v, %v`, got, err)
	}
	if got, err := parseOnly("direct-grpc,trellis-grpc"); err != nil || len(got) != 2 {
		t.Errorf("parseOnly(grpc pair) = %v, %v", got, err)
	}
	if _, err := parseOnly("direct,envoy"); err == nil {
		t.Error("parseOnly accepted envoy")
	}
	got, err := parseLevels("1000,5000,max")
	if err != nil || len(got) != 3 || got[1] != (level{"5000", 5000}) || got[2] != (level{"max", 0}) {
		t.Errorf("parseLevels = %v, %v", got, err)
	}
	for _, bad := range []string{"0", "fast", "1000,"} {
		if _, err := parseLevels(bad); err == nil {
			t.Errorf("parseLevels(%q) did not fail", bad)
		}
	}
}

func TestFamilies(t *testing.T) {
	for topo, base := range map[string]string{
		"direct": "direct", "trellis": "direct", "nginx": "direct", "haproxy": "direct",
		"direct-grpc": "direct-grpc", "trellis-grpc": "direct-grpc",
	} {
		if got := familyOf(topo).base; got != base {
			t.Errorf("familyOf(%s).base = %s, want %s", topo, got, base)
		}
	}
	if !isBase("direct-grpc") || isBase("trellis-grpc") {
		t.Error("isBase: direct-grpc is the gRPC family's base, trellis-grpc is not")
	}
}

// fakeRun is a run with every percentile at ms and the given rate and CPU.
func fakeRun(ms, rate, cpu float64) runResult {
	return runResult{
		loadResult: loadResult{P50: ms, P90: ms, P99: ms, P999: ms, Rate: rate},
		CPUPct:     cpu, RSS: []float64{20, 21}, Anon: []float64{7, 8},
	}
}

func TestMarkdownGRPC(t *testing.T) {
	o := options{conns: 16, levels: []level{{"1000", 1000}, {"max", 0}}}
	var topos []*topology
	for _, n := range allTopologies {
		topos = append(topos, &topology{name: n})
	}
	r := newResults(o, topos)
	for range 3 {
		r.add("direct", "1000", fakeRun(0.04, 1000, 0))
		r.add("trellis", "1000", fakeRun(0.24, 1000, 20))
		r.add("nginx", "1000", fakeRun(0.14, 1000, 10))
		r.add("haproxy", "1000", fakeRun(0.16, 1000, 10))
		r.add("direct-grpc", "1000", fakeRun(0.07, 1000, 0))
		r.add("trellis-grpc", "1000", fakeRun(0.47, 1000, 40))
		r.add("direct", "max", fakeRun(0.3, 50000, 0))
		r.add("trellis", "max", fakeRun(1, 15000, 99))
		r.add("nginx", "max", fakeRun(0.5, 30000, 98))
		r.add("haproxy", "max", fakeRun(0.5, 30000, 98))
		r.add("direct-grpc", "max", fakeRun(0.5, 30000, 0))
		r.add("trellis-grpc", "max", fakeRun(3, 5000, 99))
	}
	md := r.markdown("")
	for _, want := range []string{
		"### gRPC unary: 1,000 rps, 16 connections (open loop)",
		"### gRPC unary: maximum rate, 16 connections (closed loop)",
		"Added over direct-grpc (ms, per-round difference, median (min-max)):",
		"| trellis-grpc | 0.400 | 0.400 | 0.400 | 0.400 |",
		"| direct-grpc | 0.070 | 0.070 | 0.070 | 0.070 | 1000 | 0 | - | - | - | - |",
		"| trellis-grpc | 0.470 | 0.470 | 0.470 | 0.470 | 1000 | 0 | 40 | 400.0 | 20.0 / 21.0 | 7.0 / 8.0 |",
		"Trellis (gRPC): CPU per request 2.00x trellis's over HTTP/1.1.",
		"Trellis (gRPC): rate 0.33x trellis's over HTTP/1.1, CPU per request 3.00x trellis's over HTTP/1.1.",
		"| **trellis / best peer** | 2.00x (nginx) |",
		"Trellis: CPU per request 2.00x nginx's; CPU per request 2.00x haproxy's.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	// The HTTP tables come first and hold no gRPC topology; the gRPC
	// tables have no best-peer row.
	http, grpc, _ := strings.Cut(md, "### gRPC unary")
	if strings.Contains(http, "grpc") {
		t.Errorf("HTTP tables mention gRPC topologies:\n%s", http)
	}
	if strings.Contains(grpc, "nginx") || strings.Contains(grpc, "best peer") {
		t.Errorf("gRPC tables mention peers:\n%s", grpc)
	}

	// Without the gRPC topologies there is no gRPC section.
	r = newResults(o, topos[:4])
	r.add("direct", "1000", fakeRun(0.04, 1000, 0))
	if md := r.markdown(""); strings.Contains(md, "gRPC") {
		t.Errorf("gRPC section without gRPC runs:\n%s", md)
	}
}
