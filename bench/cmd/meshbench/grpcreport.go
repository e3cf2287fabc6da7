package main

import (
	"fmt"
	"slices"
	"strings"
)

// grpcPartInfo describes the gRPC part's setup, for the report's header.
func grpcPartInfo(o options) string {
	var sizes []string
	for _, p := range o.grpcPayloads {
		sizes = append(sizes, sizeLabel(p))
	}
	pairs := []string{}
	for _, p := range o.grpcPairs {
		switch p {
		case "direct":
			pairs = append(pairs, "direct (no proxy)")
		case "trellis":
			pairs = append(pairs, "a Trellis pair (server proxy `--protocol grpc`, client proxy with an `--upstream` listener)")
		case "nginx":
			pairs = append(pairs, "an nginx pair (`grpc_pass grpcs://` with a client certificate, `ssl_verify_client on`)")
		case "haproxy":
			pairs = append(pairs, "an HAProxy pair (`proto h2` in, `ssl ... verify required alpn h2` between the proxies, `proto h2` to the app)")
		}
	}
	rounds := "1 round"
	if o.grpcRounds > 1 {
		rounds = fmt.Sprintf("%d rounds", o.grpcRounds)
	}
	return fmt.Sprintf("gRPC part: `fortio load -grpc -ping` against `fortio server`'s gRPC ping, which echoes the payload "+
		"(request and response both carry it), through %s; mutual TLS 1.3 between the two proxies of a pair, h2c before and after. "+
		"Payloads %s. Per payload: %s calls/s (`-uniform`) and maximum rate on %d connections with one call in flight each, "+
		"and maximum rate on %d connections x %d streams (`-s %d`). Streaming: `meshbench load -grpc-stream` (its own grpc-go client; "+
		"fortio's ping has no streaming mode), one bidirectional stream on each of %d connections sending a message and waiting for its echo, "+
		"as fast as they go, against meshbench's gRPC upstream through a second set of the same pairs; its latencies are exact. "+
		"%s x %s per pair, load and payload, each after a %s warmup run that is not recorded.\n\n",
		strings.Join(pairs, ", "), strings.Join(sizes, ", "), thousands(grpcRate), o.conns,
		max(1, o.conns/grpcStreams), grpcStreams, grpcStreams, o.conns, rounds, o.grpcT, o.warmup)
}

const grpcLegend = "gRPC part: latencies in ms as fortio measures them: percentiles interpolated in its histogram's buckets " +
	"(10 µs wide up to 0.12 ms, 20-100 µs up to 1 ms, 0.2 ms up to 2 ms, 0.5 ms up to 5 ms), median over rounds, (min-max) when " +
	"they differ. CPU: both proxies of the pair, % of one core, utime+stime from /proc from the start of fortio's timed calls " +
	"to its exit (nginx: master and worker). CPU/call: µs of CPU per call. RSS: peak VmRSS sampled every 100 ms, " +
	"client-side / server-side proxy, MB; anon RSS: the same for RssAnon.\n\n"

// summaryCol is one column of the gRPC summary.
type summaryCol struct {
	head   string
	kind   string                                         // the grpcRun kind it reads
	get    func(runs, direct []runResult) (float64, bool) // false: nothing to show
	base   bool                                           // shown for direct too
	higher bool                                           // higher is better
	prec   int
}

// grpcSummary writes, per payload, each pair's added latency at the fixed
// rate, maximum rates and CPU per call, and Trellis's ratio to the better
// of nginx and HAProxy in each column.
func (r *results) grpcSummary(b *strings.Builder, runs []grpcRun, o options) {
	addedCol := func(p int) func(runs, direct []runResult) (float64, bool) {
		get := percentiles[p].get
		return func(runs, direct []runResult) (float64, bool) {
			if len(direct) == 0 {
				return 0, false
			}
			return added(runs, direct, get).med, true
		}
	}
	rate := func(runs, _ []runResult) (float64, bool) {
		return collect(runs, func(x runResult) float64 { return x.Rate }).med, true
	}
	cpu := func(runs, _ []runResult) (float64, bool) { return collect(runs, cpuPer1k).med, true }
	errs := func(t string, byKind map[string]map[string][]runResult) int64 {
		var n int64
		for _, rs := range byKind {
			for _, x := range rs[t] {
				n += x.Errors
			}
		}
		return n
	}
	mux := fmt.Sprintf("%d x %d streams", max(1, o.conns/grpcStreams), grpcStreams)
	cols := []summaryCol{
		{head: "added p50 at " + thousands(grpcRate) + "/s (ms)", kind: "1000", get: addedCol(0), prec: 3},
		{head: "added p99 at " + thousands(grpcRate) + "/s (ms)", kind: "1000", get: addedCol(2), prec: 3},
		{head: "max calls/s, unary", kind: "max", get: rate, base: true, higher: true},
		{head: "max calls/s, " + mux, kind: "streams", get: rate, base: true, higher: true},
		{head: "CPU/call at " + thousands(grpcRate) + "/s (µs)", kind: "1000", get: cpu, prec: 1},
		{head: "CPU/call at max (µs)", kind: "max", get: cpu, prec: 1},
		{head: "CPU/call at max, " + mux + " (µs)", kind: "streams", get: cpu, prec: 1},
		{head: "messages/s, bidi stream", kind: "bidi", get: rate, base: true, higher: true},
		{head: "CPU/message, bidi stream (µs)", kind: "bidi", get: cpu, prec: 1},
	}
	f := &families[0]
	b.WriteString("### gRPC summary\n\n")
	fmt.Fprintf(b, "Medians over rounds. Added latency: over %s, per-round difference. Last row of each payload: %s's figure divided by "+
		"the better of %s (lower latency and CPU, higher rate); below 1 is better for %s in the latency and CPU columns, above 1 in the rate columns. "+
		"Failed calls: over all the payload's runs.\n\n",
		f.base, f.label, strings.Join(f.peers, " and "), f.label)
	b.WriteString("| payload | topology |")
	for _, c := range cols {
		fmt.Fprintf(b, " %s |", c.head)
	}
	b.WriteString(" failed calls |\n|---|---|" + strings.Repeat("---|", len(cols)+1) + "\n")
	for _, p := range o.grpcPayloads {
		byKind := map[string]map[string][]runResult{}
		for _, g := range runs {
			if g.payload == p {
				byKind[g.kind] = r.runs[g.name()]
			}
		}
		value := func(c summaryCol, t string) (float64, bool) {
			rs := byKind[c.kind]
			if len(rs[t]) == 0 || (t == f.base && !c.base) {
				return 0, false
			}
			return c.get(rs[t], rs[f.base])
		}
		for _, t := range r.topos {
			fmt.Fprintf(b, "| %s | %s |", sizeLabel(p), t)
			for _, c := range cols {
				v, ok := value(c, t)
				if !ok {
					b.WriteString(" - |")
					continue
				}
				fmt.Fprintf(b, " %.*f |", c.prec, v)
			}
			fmt.Fprintf(b, " %d |\n", errs(t, byKind))
		}
		if !slices.Contains(r.topos, f.subject) {
			continue
		}
		fmt.Fprintf(b, "| %s | **%s / best peer** |", sizeLabel(p), f.subject)
		for _, c := range cols {
			sv, ok := value(c, f.subject)
			best, bestName := 0.0, ""
			for _, peer := range f.peers {
				v, ok := value(c, peer)
				if ok && (bestName == "" || (c.higher && v > best) || (!c.higher && v < best)) {
					best, bestName = v, peer
				}
			}
			// A negative added latency (the pair beat direct: noise) has
			// no meaningful ratio.
			if !ok || bestName == "" || best <= 0 || sv < 0 {
				b.WriteString(" - |")
				continue
			}
			fmt.Fprintf(b, " %.2fx (%s) |", sv/best, bestName)
		}
		b.WriteString(" |\n")
	}
	b.WriteString("\n")
}
