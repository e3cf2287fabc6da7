package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The gRPC part: fortio's gRPC ping (`fortio load -grpc -ping`, an
// independent client) against fortio's ping server, straight (direct) and
// through a Trellis, an nginx and an HAProxy pair, with mutual TLS between
// the two proxies of each pair. The server echoes the ping's payload, so
// request and response both carry it. It runs after the rounds in a full
// run, or alone with -grpc-only.

// grpcPairNames are the gRPC part's pairs in report order.
var grpcPairNames = []string{"direct", "trellis", "nginx", "haproxy"}

// grpcStreams is the calls in flight on each connection in the
// multiplexed run (fortio -s); it has -c / grpcStreams connections, so
// that as many calls are in flight as in the unary runs.
const grpcStreams = 8

// grpcRate is the fixed rate of the gRPC part, calls per second.
const grpcRate = 1000

// grpcRun is one load of the gRPC part: payload bytes each way, conns
// connections with streams calls in flight on each, qps calls per second
// in all (0: as fast as they go).
type grpcRun struct {
	kind                         string // "1000", "max", "streams" or "bidi"
	payload, conns, streams, qps int
}

// name keys the run's results.
func (g grpcRun) name() string { return sizeLabel(g.payload) + "/" + g.kind }

// title is the run's table heading.
func (g grpcRun) title() string {
	load := fmt.Sprintf("%s calls/s, %d connections (open loop)", thousands(g.qps), g.conns)
	switch {
	case g.kind == "bidi":
		return fmt.Sprintf("gRPC, %s messages: a bidirectional stream on each of %d connections, one message and its echo at a time (closed loop)", sizeLabel(g.payload), g.conns)
	case g.qps == 0 && g.streams > 1:
		load = fmt.Sprintf("maximum rate, %d connections x %d streams (closed loop)", g.conns, g.streams)
	case g.qps == 0:
		load = fmt.Sprintf("maximum rate, %d connections (closed loop)", g.conns)
	}
	return fmt.Sprintf("gRPC, %s payload: %s", sizeLabel(g.payload), load)
}

// grpcRuns are the loads of the gRPC part for each payload: unary calls
// (one in flight per connection) at grpcRate and at the maximum, the
// maximum with grpcStreams calls in flight per connection, and messages
// on long-lived bidirectional streams at the maximum (meshbench's own
// client and app: fortio's ping has no streaming mode).
func grpcRuns(o options) []grpcRun {
	var out []grpcRun
	for _, p := range o.grpcPayloads {
		out = append(out,
			grpcRun{kind: "1000", payload: p, conns: o.conns, streams: 1, qps: grpcRate},
			grpcRun{kind: "max", payload: p, conns: o.conns, streams: 1},
			grpcRun{kind: "streams", payload: p, conns: max(1, o.conns/grpcStreams), streams: grpcStreams},
			grpcRun{kind: "bidi", payload: p, conns: o.conns, streams: 1})
	}
	return out
}

// sizeLabel prints a payload size: 64 B, 1 kB, 64 kB.
func sizeLabel(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d kB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// parseGRPCPairs reads -grpc-pairs: empty means all, none means the part
// is off (nil).
func parseGRPCPairs(s string) ([]string, error) {
	switch s {
	case "":
		return slices.Clone(grpcPairNames), nil
	case "none":
		return nil, nil
	}
	var out []string
	for _, n := range strings.Split(s, ",") {
		if !slices.Contains(grpcPairNames, n) {
			return nil, fmt.Errorf("-grpc-pairs: unknown pair %q (%s, or none)", n, strings.Join(grpcPairNames, ", "))
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return slices.Index(grpcPairNames, a) - slices.Index(grpcPairNames, b) })
	return out, nil
}

// maxPayload is what fortio's -payload-size accepts by default
// (-maxpayloadsizekb 256).
const maxPayload = 256 * 1024

// parsePayloads reads -grpc-payloads: sizes in bytes.
func parsePayloads(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 || n >= maxPayload {
			return nil, fmt.Errorf("-grpc-payloads: %q is not a size from 1 to %d bytes", f, maxPayload-1)
		}
		out = append(out, n)
	}
	return out, nil
}

// runGRPCPairs starts fortio's server and the gRPC part's pairs, runs
// every pair at every load, in an order that rotates from load to load,
// and returns the part's report.
func (e *env) runGRPCPairs(ctx context.Context, o options, pc *peerCerts) (string, error) {
	app, err := e.startFortioServer(ctx)
	if err != nil {
		return "", fmt.Errorf("fortio server: %w", err)
	}
	// Every pair must pass the largest payload before the runs start.
	size := slices.Max(o.grpcPayloads)
	topos, err := e.startGRPCPairSet(ctx, o, pc, app, grpcPairSet{suffix: "", service: "ping",
		ready: func(front string, ps ...*proc) error { return awaitPing(ctx, front, size, 20*time.Second, ps...) }})
	if err != nil {
		return "", err
	}
	// The streaming runs have their own app (meshbench's gRPC upstream,
	// whose Stream method echoes) and pairs in front of it.
	streamApp, err := e.startUpstreamNamed("upstream-grpc-stream", true)
	if err != nil {
		return "", fmt.Errorf("gRPC stream upstream: %w", err)
	}
	streamTopos, err := e.startGRPCPairSet(ctx, o, pc, streamApp, grpcPairSet{suffix: "-stream", service: "stream",
		ready: func(front string, ps ...*proc) error { return awaitStream(ctx, front, size, 20*time.Second, ps...) }})
	if err != nil {
		return "", err
	}
	streams := map[string]*topology{}
	for _, t := range streamTopos {
		streams[t.name] = t
	}

	runs := grpcRuns(o)
	ro := options{conns: o.conns}
	titles := map[string]string{}
	for _, g := range runs {
		ro.levels = append(ro.levels, level{name: g.name(), rate: g.qps})
		titles[g.name()] = g.title()
	}
	res := newResults(ro, topos)
	res.titles, res.calls = titles, true
	total := o.grpcRounds * len(runs) * len(topos)
	n := 0
	for r := range o.grpcRounds {
		for k, g := range runs {
			for i := range topos {
				// Rotate from load to load, so that no pair always runs
				// first after a change of load.
				t := topos[(i+k+r)%len(topos)]
				n++
				if err := ctx.Err(); err != nil {
					return "", err
				}
				var rr runResult
				var err error
				if g.kind == "bidi" {
					rr, err = e.measureStream(ctx, streams[t.name], g, o)
				} else {
					rr, err = e.measureFortio(ctx, t, g, o)
				}
				if err != nil {
					return "", fmt.Errorf("gRPC round %d, %s at %s: %w", r+1, t.name, g.name(), err)
				}
				fmt.Fprintf(os.Stderr, "meshbench: gRPC [%d/%d] round %d %-8s %-13s p50 %.3f p99 %.3f ms, %.0f calls/s, cpu %.0f%%, errors %d\n",
					n, total, r+1, t.name, g.name(), rr.P50, rr.P99, rr.Rate, rr.CPUPct, rr.Errors)
				res.add(t.name, g.name(), rr)
			}
		}
	}
	var b strings.Builder
	b.WriteString(grpcLegend)
	res.tables(&b)
	res.grpcSummary(&b, runs, o)
	return b.String(), nil
}

// grpcPairSet is one set of the gRPC part's pairs: names end in suffix,
// the Trellis pair's services are service and "client-"+service, and
// ready says when a pair serves.
type grpcPairSet struct {
	suffix, service string
	ready           func(front string, ps ...*proc) error
}

// startGRPCPairSet starts the pairs o.grpcPairs names in front of app,
// in report order.
func (e *env) startGRPCPairSet(ctx context.Context, o options, pc *peerCerts, app string, set grpcPairSet) ([]*topology, error) {
	var topos []*topology
	for _, name := range o.grpcPairs {
		var t *topology
		var err error
		switch name {
		case "direct":
			t = &topology{name: "direct", front: app}
		case "trellis":
			var tp *trellisPairs
			if tp, err = e.control(ctx); err != nil {
				return nil, err
			}
			t, err = tp.start(ctx, "trellis-"+set.service, set.service, "client-"+set.service, "grpc", app, set.ready)
			if t != nil {
				t.name = "trellis"
			}
		case "nginx":
			t, err = e.startNginxGRPC(ctx, "nginx-grpc"+set.suffix, app, pc, set.ready)
		case "haproxy":
			t, err = e.startHAProxyGRPC(ctx, "haproxy-grpc"+set.suffix, app, pc, set.ready)
		}
		if err != nil {
			return nil, err
		}
		topos = append(topos, t)
	}
	return topos, nil
}

// measureStream runs `meshbench load -grpc-stream` for run g against t,
// after a warmup that is not recorded.
func (e *env) measureStream(ctx context.Context, t *topology, g grpcRun, o options) (runResult, error) {
	return e.runLoad(ctx, t, []string{e.self, "load", "-grpc-stream", "-addr", t.front, "-c", strconv.Itoa(g.conns),
		"-req", strconv.Itoa(g.payload), "-body", strconv.Itoa(g.payload), "-d", o.grpcT.String(), "-warmup", o.warmup.String()})
}
