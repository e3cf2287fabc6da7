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
	titles map[string]string                 // level -> heading, when not the rate's
	calls  bool                              // gRPC part: calls/s and CPU per call (µs)
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

// family is a group of topologies under the same load, reported in its own
// tables: latency is added over base, and subject is compared with others
// (CPU per request, and rate at maximum).
type family struct {
	title   string // prefix of the level headings
	base    string
	subject string
	label   string   // the subject in prose
	peers   []string // whose added latency subject's is divided by
	others  []other
}

// other is a topology subject's CPU and rate are compared with, possibly
// of another family (same level).
type other struct{ name, label string }

var families = []family{
	{
		base: "direct", subject: "trellis", label: "Trellis", peers: []string{"nginx", "haproxy"},
		others: []other{{"nginx", "nginx's"}, {"haproxy", "haproxy's"}},
	},
	{
		title: "gRPC unary: ", base: "direct-grpc", subject: "trellis-grpc", label: "Trellis (gRPC)",
		others: []other{{"trellis", "trellis's over HTTP/1.1"}},
	},
}

// familyOf is the family topology t is reported in.
func familyOf(t string) *family {
	for i := range families {
		f := &families[i]
		if t == f.base || t == f.subject || slices.Contains(f.peers, t) {
			return f
		}
	}
	return &families[0]
}

func isBase(t string) bool { return familyOf(t).base == t }

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
	r.tables(&b)
	return b.String()
}

// tables writes every family's tables, level by level.
func (r *results) tables(b *strings.Builder) {
	for fi := range families {
		f := &families[fi]
		var topos []string
		for _, t := range r.topos {
			if familyOf(t) == f {
				topos = append(topos, t)
			}
		}
		if len(topos) == 0 {
			continue
		}
		for _, l := range r.levels {
			r.table(b, f, topos, l)
		}
	}
}

// table writes one family's table at one level, and its comparisons.
func (r *results) table(b *strings.Builder, f *family, topos []string, l level) {
	runs := r.runs[l.name]
	title := fmt.Sprintf("%s rps, %d connections (open loop)", thousands(l.rate), r.o.conns)
	if l.rate == 0 {
		title = fmt.Sprintf("maximum rate, %d connections (closed loop)", r.o.conns)
	}
	if t, ok := r.titles[l.name]; ok {
		title = t
	}
	fmt.Fprintf(b, "### %s%s\n\n", f.title, title)
	if r.calls {
		// CPU per call in µs is CPU per 1,000 calls in ms.
		b.WriteString("| topology | p50 | p90 | p99 | p99.9 | rate (calls/s) | errors | CPU % | CPU/call (µs) | RSS (MB) | anon RSS (MB) |\n")
	} else {
		b.WriteString("| topology | p50 | p90 | p99 | p99.9 | rate (rps) | errors | CPU % | CPU/1k (ms) | RSS (MB) | anon RSS (MB) |\n")
	}
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, t := range topos {
		rs := runs[t]
		fmt.Fprintf(b, "| %s |", t)
		for _, p := range percentiles {
			fmt.Fprintf(b, " %s |", collect(rs, p.get).format(3))
		}
		fmt.Fprintf(b, " %s |", collect(rs, func(x runResult) float64 { return x.Rate }).format(0))
		var errs int64
		for _, x := range rs {
			errs += x.Errors
		}
		fmt.Fprintf(b, " %d |", errs)
		if isBase(t) {
			b.WriteString(" - | - | - | - |\n")
			continue
		}
		fmt.Fprintf(b, " %s |", collect(rs, func(x runResult) float64 { return x.CPUPct }).format(0))
		fmt.Fprintf(b, " %s |", collect(rs, cpuPer1k).format(1))
		fmt.Fprintf(b, " %s | %s |\n", perProxy(rs, func(x runResult) []float64 { return x.RSS }),
			perProxy(rs, func(x runResult) []float64 { return x.Anon }))
	}
	b.WriteString("\n")
	r.comparison(b, f, topos, l)
}

// cpuPer1k is ms of proxy CPU per 1,000 requests.
func cpuPer1k(x runResult) float64 {
	if x.Rate == 0 {
		return 0
	}
	return x.CPUPct / 100 / x.Rate * 1e6
}

// comparison writes the latency added over the family's base and the
// subject's ratio to the better peer; at maximum rate, the ratio of rates
// and CPU.
func (r *results) comparison(b *strings.Builder, f *family, topos []string, l level) {
	runs := r.runs[l.name]
	direct, ok := runs[f.base]
	if !ok {
		return
	}
	var proxied []string
	for _, t := range topos {
		if t != f.base {
			proxied = append(proxied, t)
		}
	}
	if len(proxied) == 0 {
		return
	}
	if l.rate == 0 {
		// Closed loop: each topology runs at its own rate, so latencies
		// are not comparable with direct's; rate and CPU are.
		r.rateComparison(b, f, l)
		return
	}
	fmt.Fprintf(b, "Added over %s (ms, per-round difference, median (min-max)):\n\n", f.base)
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
	if _, ok := runs[f.subject]; ok && len(f.peers) > 0 {
		fmt.Fprintf(b, "| **%s / best peer** |", f.subject)
		for i := range percentiles {
			best, bestName := 0.0, ""
			for _, p := range f.peers {
				if s, ok := add[p]; ok && (bestName == "" || s[i].med < best) {
					best, bestName = s[i].med, p
				}
			}
			if bestName == "" || best <= 0 {
				b.WriteString(" - |")
				continue
			}
			fmt.Fprintf(b, " %.2fx (%s) |", add[f.subject][i].med/best, bestName)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	r.rateComparison(b, f, l)
}

// rateComparison writes the subject's rate (at maximum) and CPU per
// request relative to each of the family's others.
func (r *results) rateComparison(b *strings.Builder, f *family, l level) {
	runs := r.runs[l.name]
	if _, ok := runs[f.subject]; !ok {
		return
	}
	rate := func(t string) float64 { return collect(runs[t], func(x runResult) float64 { return x.Rate }).med }
	cpuK := func(t string) float64 { return collect(runs[t], cpuPer1k).med }
	unit := "request"
	if r.calls {
		unit = "call"
	}
	var lines []string
	for _, o := range f.others {
		if _, ok := runs[o.name]; !ok {
			continue
		}
		s := fmt.Sprintf("CPU per %s %.2fx %s", unit, cpuK(f.subject)/cpuK(o.name), o.label)
		if l.rate == 0 {
			s = fmt.Sprintf("rate %.2fx %s, ", rate(f.subject)/rate(o.name), o.label) + s
		}
		lines = append(lines, s)
	}
	if len(lines) > 0 {
		fmt.Fprintf(b, "%s: %s.\n\n", f.label, strings.Join(lines, "; "))
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
