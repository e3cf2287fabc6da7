package main

import (
	"fmt"
	"slices"
	"strings"
)

// results holds every run, by level and topology, in round order.
type results struct {
	o      options
	topos  []string
	levels []level
	runs   map[string]map[string][]runResult // level -> topology -> rounds
}

func newResults(o options, topos []*topology) *results {
	r := &results{o: o, levels: o.levels, runs: map[string]map[string][]runResult{}}
	for _, t := range topos {
		r.topos = append(r.topos, t.name)
	}
	for _, l := range o.levels {
		r.runs[l.name] = map[string][]runResult{}
	}
	return r
}

func (r *results) add(topo, lvl string, rr runResult) {
	r.runs[lvl][topo] = append(r.runs[lvl][topo], rr)
}

// spread is the median of xs with its min and max.
type spread struct{ med, lo, hi float64 }

func spreadOf(xs []float64) spread {
	if len(xs) == 0 {
		return spread{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{med, s[0], s[len(s)-1]}
}

// format prints the median and, when the rounds differ, the range.
func (s spread) format(prec int) string {
	f := "%." + fmt.Sprint(prec) + "f"
	if fmt.Sprintf(f, s.lo) == fmt.Sprintf(f, s.hi) {
		return fmt.Sprintf(f, s.med)
	}
	return fmt.Sprintf(f+" ("+f+"-"+f+")", s.med, s.lo, s.hi)
}

// percentiles in report order, with how to read each from a run.
var percentiles = []struct {
	name string
	get  func(runResult) float64
}{
	{"p50", func(r runResult) float64 { return r.P50 }},
	{"p90", func(r runResult) float64 { return r.P90 }},
	{"p99", func(r runResult) float64 { return r.P99 }},
	{"p99.9", func(r runResult) float64 { return r.P999 }},
}

func collect(runs []runResult, get func(runResult) float64) spread {
	var xs []float64
	for _, rr := range runs {
		xs = append(xs, get(rr))
	}
	return spreadOf(xs)
}

// added is, per round, topology minus direct for one percentile: pairing
// the runs of one round cancels drift that hits both.
func added(topo, direct []runResult, get func(runResult) float64) spread {
	var xs []float64
	for i := range min(len(topo), len(direct)) {
		xs = append(xs, get(topo[i])-get(direct[i]))
	}
	return spreadOf(xs)
}

var peers = []string{"nginx", "haproxy"}

// perProxy formats the median of a per-proxy figure, client / server.
func perProxy(rs []runResult, get func(runResult) []float64) string {
	var out []string
	for i := range 2 {
		out = append(out, collect(rs, func(x runResult) float64 {
			if v := get(x); i < len(v) {
				return v[i]
			}
			return 0
		}).format(1))
	}
	return strings.Join(out, " / ")
}

func (r *results) markdown(header string) string {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("Latencies in ms: median over rounds, (min-max) across rounds when they differ. CPU: both proxies of the pair, " +
		"% of one core, utime+stime from /proc over the measurement window (nginx: master and worker). CPU/1k: ms of CPU per 1,000 requests. " +
		"RSS: peak VmRSS sampled every 100 ms during the window, client-side / server-side proxy, MB " +
		"(nginx: master plus worker, so the ~7 MB of binary and libraries they share count twice); anon RSS: the same for RssAnon " +
		"(heap and stacks, no file-backed pages).\n\n")
	for _, l := range r.levels {
		runs := r.runs[l.name]
		title := fmt.Sprintf("%s rps, %d connections (open loop)", thousands(l.rate), r.o.conns)
		if l.rate == 0 {
			title = fmt.Sprintf("maximum rate, %d connections (closed loop)", r.o.conns)
		}
		fmt.Fprintf(&b, "### %s\n\n", title)
		b.WriteString("| topology | p50 | p90 | p99 | p99.9 | rate (rps) | errors | CPU % | CPU/1k (ms) | RSS (MB) | anon RSS (MB) |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, t := range r.topos {
			rs := runs[t]
			fmt.Fprintf(&b, "| %s |", t)
			for _, p := range percentiles {
				fmt.Fprintf(&b, " %s |", collect(rs, p.get).format(3))
			}
			fmt.Fprintf(&b, " %s |", collect(rs, func(x runResult) float64 { return x.Rate }).format(0))
			var errs int64
			for _, x := range rs {
				errs += x.Errors
			}
			fmt.Fprintf(&b, " %d |", errs)
			if t == "direct" {
				b.WriteString(" - | - | - | - |\n")
				continue
			}
			fmt.Fprintf(&b, " %s |", collect(rs, func(x runResult) float64 { return x.CPUPct }).format(0))
			fmt.Fprintf(&b, " %s |", collect(rs, func(x runResult) float64 {
				if x.Rate == 0 {
					return 0
				}
				return x.CPUPct / 100 / x.Rate * 1e6
			}).format(1))
			fmt.Fprintf(&b, " %s | %s |\n", perProxy(rs, func(x runResult) []float64 { return x.RSS }),
				perProxy(rs, func(x runResult) []float64 { return x.Anon }))
		}
		b.WriteString("\n")
		r.comparison(&b, l)
	}
	return b.String()
}

// comparison writes the latency added over direct and Trellis's ratio to
// the better peer; at maximum rate, the ratio of rates and CPU.
func (r *results) comparison(b *strings.Builder, l level) {
	runs := r.runs[l.name]
	direct, ok := runs["direct"]
	if !ok {
		return
	}
	var proxied []string
	for _, t := range r.topos {
		if t != "direct" {
			proxied = append(proxied, t)
		}
	}
	if len(proxied) == 0 {
		return
	}
	if l.rate == 0 {
		// Closed loop: each topology runs at its own rate, so latencies
		// are not comparable with direct's; rate and CPU are.
		r.rateComparison(b, l)
		return
	}
	b.WriteString("Added over direct (ms, per-round difference, median (min-max)):\n\n")
	b.WriteString("| topology | p50 | p90 | p99 | p99.9 |\n|---|---|---|---|---|\n")
	add := map[string][]spread{}
	for _, t := range proxied {
		fmt.Fprintf(b, "| %s |", t)
		for _, p := range percentiles {
			s := added(runs[t], direct, p.get)
			add[t] = append(add[t], s)
			fmt.Fprintf(b, " %s |", s.format(3))
		}
		b.WriteString("\n")
	}
	if _, ok := runs["trellis"]; ok {
		fmt.Fprintf(b, "| **trellis / best peer** |")
		for i := range percentiles {
			best, bestName := 0.0, ""
			for _, p := range peers {
				if s, ok := add[p]; ok && (bestName == "" || s[i].med < best) {
					best, bestName = s[i].med, p
				}
			}
			if bestName == "" || best <= 0 {
				b.WriteString(" - |")
				continue
			}
			fmt.Fprintf(b, " %.2fx (%s) |", add["trellis"][i].med/best, bestName)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	r.rateComparison(b, l)
}

// rateComparison writes Trellis's rate (at maximum) and CPU per request
// relative to each peer.
func (r *results) rateComparison(b *strings.Builder, l level) {
	runs := r.runs[l.name]
	if _, ok := runs["trellis"]; !ok {
		return
	}
	rate := func(t string) float64 { return collect(runs[t], func(x runResult) float64 { return x.Rate }).med }
	cpuK := func(t string) float64 {
		return collect(runs[t], func(x runResult) float64 {
			if x.Rate == 0 {
				return 0
			}
			return x.CPUPct / 100 / x.Rate * 1e6
		}).med
	}
	var lines []string
	for _, p := range peers {
		if _, ok := runs[p]; !ok {
			continue
		}
		s := fmt.Sprintf("CPU per request %.2fx %s's", cpuK("trellis")/cpuK(p), p)
		if l.rate == 0 {
			s = fmt.Sprintf("rate %.2fx %s's, ", rate("trellis")/rate(p), p) + s
		}
		lines = append(lines, s)
	}
	if len(lines) > 0 {
		fmt.Fprintf(b, "Trellis: %s.\n\n", strings.Join(lines, "; "))
	}
}

// thousands prints n with comma separators: 5000 -> "5,000".
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
