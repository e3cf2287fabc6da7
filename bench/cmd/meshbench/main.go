// Command meshbench measures the data plane on loopback: the same load
// through no proxy (direct), a Trellis proxy pair with a real control
// plane, an nginx pair and an HAProxy pair (both mutual TLS with SPIFFE
// certificates), interleaved round by round, and prints a markdown table
// of latency percentiles, rate, CPU and memory. A gRPC unary load runs
// the same way directly (direct-grpc) and through a second Trellis pair
// (trellis-grpc) in the same rounds. docs/benchmarks.md describes the
// method; `make bench` and `make bench-quick` run it.
//
// It re-executes itself for the load generator (`meshbench load`) and the
// upstream (`meshbench upstream`), so that they can be pinned to a CPU.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	var err error
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "load":
			err = loadMain(os.Args[2:])
		case "upstream":
			err = upstreamMain(os.Args[2:])
		default:
			err = benchMain(os.Args[1:])
		}
	} else {
		err = benchMain(nil)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		os.Exit(1)
	}
}

// level is one load level: rate 0 is the closed-loop maximum.
type level struct {
	name string
	rate int
}

type options struct {
	quick   bool
	rounds  int
	dur     time.Duration
	grpcDur time.Duration // window of the gRPC runs
	warmup  time.Duration
	conns   int
	levels  []level
	out     string
	trellis string
	noPin   bool
	keep    bool
	only    []string
}

func benchMain(args []string) error {
	fs := flag.NewFlagSet("meshbench", flag.ContinueOnError)
	var o options
	var levels, only string
	fs.BoolVar(&o.quick, "quick", false, "quick variant: 5 s x 3 rounds (gRPC 2 s) at 1000 rps and max only")
	fs.IntVar(&o.rounds, "rounds", 0, "rounds (default 5, quick 3)")
	fs.DurationVar(&o.dur, "d", 0, "measurement window per run (default 15s, quick 5s)")
	fs.DurationVar(&o.grpcDur, "grpc-d", 0, "measurement window of the gRPC runs (default: -d; quick 2s)")
	fs.DurationVar(&o.warmup, "warmup", 0, "warmup before each run's window (default 1s, quick 500ms)")
	fs.IntVar(&o.conns, "c", 16, "connections")
	fs.StringVar(&levels, "levels", "", "comma-separated rates, max = closed loop (default 1000,5000,max; quick 1000,max)")
	fs.StringVar(&o.out, "o", "", "also write the markdown report to this file")
	fs.StringVar(&o.trellis, "trellis", "", "trellis binary (default: go build -o bin/trellis ./cmd/trellis)")
	fs.BoolVar(&o.noPin, "no-pin", false, "do not pin processes to CPUs with taskset")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs)")
	fs.StringVar(&only, "only", "", "comma-separated topologies to run (default all: "+strings.Join(allTopologies, ",")+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Zero values mean the variant's defaults.
	full := !o.quick
	if o.rounds == 0 {
		o.rounds = pick(full, 5, 3)
	}
	if o.dur == 0 {
		o.dur = pick(full, 15*time.Second, 5*time.Second)
	}
	if o.grpcDur == 0 {
		// Quick: the gRPC runs fit in the 3-minute budget only with a
		// shorter window.
		o.grpcDur = pick(full, o.dur, min(o.dur, 2*time.Second))
	}
	if o.warmup == 0 {
		o.warmup = pick(full, time.Second, 500*time.Millisecond)
	}
	if levels == "" {
		levels = pick(full, "1000,5000,max", "1000,max")
	}
	var err error
	if o.levels, err = parseLevels(levels); err != nil {
		return err
	}
	if o.only, err = parseOnly(only); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, o)
}

// allTopologies in report order.
var allTopologies = []string{"direct", "trellis", "nginx", "haproxy", "direct-grpc", "trellis-grpc"}

// parseLevels reads -levels: rates and "max" (closed loop).
func parseLevels(s string) ([]level, error) {
	var out []level
	for _, l := range strings.Split(s, ",") {
		if l == "max" {
			out = append(out, level{name: "max", rate: 0})
			continue
		}
		r, err := strconv.Atoi(l)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("-levels: %q is not a rate or max", l)
		}
		out = append(out, level{name: l, rate: r})
	}
	return out, nil
}

// parseOnly reads -only; empty means every topology (nil).
func parseOnly(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	out := strings.Split(s, ",")
	for _, n := range out {
		if !slices.Contains(allTopologies, n) {
			return nil, fmt.Errorf("-only: unknown topology %q (%s)", n, strings.Join(allTopologies, ", "))
		}
	}
	return out, nil
}

func pick[T any](full bool, ifFull, ifQuick T) T {
	if full {
		return ifFull
	}
	return ifQuick
}

func run(ctx context.Context, o options) error {
	if err := ensureTools(); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if o.trellis == "" {
		o.trellis = filepath.Join("bin", "trellis")
		fmt.Fprintln(os.Stderr, "meshbench: go build -o bin/trellis ./cmd/trellis")
		cmd := exec.Command("go", "build", "-o", o.trellis, "./cmd/trellis")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build trellis (run from the repository root): %w", err)
		}
	}
	if o.trellis, err = filepath.Abs(o.trellis); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "meshbench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "meshbench: work directory", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	e := &env{dir: dir, self: self, trellis: o.trellis}
	_, tasksetErr := exec.LookPath("taskset")
	e.pin = !o.noPin && tasksetErr == nil && runtime.NumCPU() >= 2
	if e.pin {
		// The orchestrator (sampling /proc) stays off the proxies' CPU too.
		exec.Command("taskset", "-a", "-p", "-c", loadCPU, strconv.Itoa(os.Getpid())).Run()
	}
	defer e.stopAll()

	pc, err := writePeerCerts(dir)
	if err != nil {
		return err
	}
	want := func(name string) bool { return len(o.only) == 0 || slices.Contains(o.only, name) }
	wantHTTP := want("direct") || want("trellis") || want("nginx") || want("haproxy")
	wantGRPC := want("direct-grpc") || want("trellis-grpc")
	var upstream, grpcUpstream string
	if wantHTTP {
		if upstream, err = e.startUpstream(false); err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
	}
	if wantGRPC {
		if grpcUpstream, err = e.startUpstream(true); err != nil {
			return fmt.Errorf("gRPC upstream: %w", err)
		}
	}
	var topos []*topology
	if want("direct") {
		topos = append(topos, &topology{name: "direct", front: upstream})
	}
	if want("trellis") || want("trellis-grpc") {
		tt, err := e.startTrellis(ctx, upstream, grpcUpstream, want("trellis"), want("trellis-grpc"))
		if err != nil {
			return err
		}
		topos = append(topos, tt...)
	}
	starters := []struct {
		name  string
		start func() (*topology, error)
	}{
		{"nginx", func() (*topology, error) { return e.startNginx(ctx, upstream, pc) }},
		{"haproxy", func() (*topology, error) { return e.startHAProxy(ctx, upstream, pc) }},
	}
	for _, s := range starters {
		if !want(s.name) {
			continue
		}
		t, err := s.start()
		if err != nil {
			return err
		}
		topos = append(topos, t)
	}
	if want("direct-grpc") {
		topos = append(topos, &topology{name: "direct-grpc", front: grpcUpstream, grpc: true})
	}
	// Report order, whatever the start order.
	slices.SortStableFunc(topos, func(a, b *topology) int {
		return slices.Index(allTopologies, a.name) - slices.Index(allTopologies, b.name)
	})

	res := newResults(o, topos)
	total := o.rounds * len(o.levels) * len(topos)
	n := 0
	for r := range o.rounds {
		for _, l := range o.levels {
			for i := range topos {
				// Rotate the order each round so no topology always runs
				// first after a level change.
				t := topos[(i+r)%len(topos)]
				n++
				if err := ctx.Err(); err != nil {
					return err
				}
				rr, err := e.measure(ctx, t, l, o)
				if err != nil {
					return fmt.Errorf("round %d, %s at %s: %w", r+1, t.name, l.name, err)
				}
				fmt.Fprintf(os.Stderr, "meshbench: [%d/%d] round %d %-12s %-5s p50 %.3f p99 %.3f ms, %.0f rps, cpu %.0f%%, errors %d\n",
					n, total, r+1, t.name, l.name, rr.P50, rr.P99, rr.Rate, rr.CPUPct, rr.Errors)
				res.add(t.name, l.name, rr)
			}
		}
	}
	report := res.markdown(machineInfo(e.pin, o))
	fmt.Print(report)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// runResult is one run of one topology at one level.
type runResult struct {
	loadResult
	CPUPct float64   // proxy pair, % of one core, over the window
	RSS    []float64 // peak VmRSS per proxy (client side first), MB
	Anon   []float64 // peak RssAnon per proxy, MB
}

// measure runs the load generator against t and samples the proxies' CPU
// and RSS over the measurement window.
func (e *env) measure(ctx context.Context, t *topology, l level, o options) (runResult, error) {
	dur := o.dur
	if t.grpc {
		dur = o.grpcDur
	}
	argv := []string{e.self, "load", "-addr", t.front, "-rate", strconv.Itoa(l.rate), "-c", strconv.Itoa(o.conns),
		"-d", dur.String(), "-warmup", o.warmup.String()}
	if t.grpc {
		argv = append(argv, "-grpc")
	}
	if e.pin {
		argv = append([]string{"taskset", "-c", loadCPU}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return runResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return runResult{}, err
	}
	var pids []int
	for _, p := range t.proxies {
		pids = append(pids, p.pid())
	}
	var rr runResult
	rr.RSS = make([]float64, len(pids))
	rr.Anon = make([]float64, len(pids))
	var cpu0 float64
	var t0 time.Time
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	sc := bufio.NewScanner(out)
	var last string
	for sc.Scan() {
		line := sc.Text()
		if line == measuringLine {
			cpu0, t0 = treeCPU(pids), time.Now()
			go func() {
				defer close(rssDone)
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for {
					for i, p := range pids {
						rss, anon := treeRSS(p)
						rr.RSS[i], rr.Anon[i] = max(rr.RSS[i], rss), max(rr.Anon[i], anon)
					}
					select {
					case <-stopRSS:
						return
					case <-tick.C:
					}
				}
			}()
			continue
		}
		last = line
	}
	if err := cmd.Wait(); err != nil {
		return runResult{}, fmt.Errorf("load: %w: %s", err, stderr.String())
	}
	if t0.IsZero() {
		return runResult{}, fmt.Errorf("load: no measurement window: %s", stderr.String())
	}
	// The window ended when the last request was sent; the scan above
	// returned when the generator exited, a few ms later at most.
	cpu1, t1 := treeCPU(pids), time.Now()
	close(stopRSS)
	<-rssDone
	if err := json.Unmarshal([]byte(last), &rr.loadResult); err != nil {
		return runResult{}, fmt.Errorf("load: bad result %q: %w", last, err)
	}
	if len(pids) > 0 {
		rr.CPUPct = 100 * (cpu1 - cpu0) / t1.Sub(t0).Seconds()
	}
	for _, p := range t.proxies {
		if p.exited() {
			return rr, fmt.Errorf("%s exited during the run: %s", p.name, p.logTail())
		}
	}
	return rr, nil
}

// machineInfo describes what the run was on, for the report.
func machineInfo(pinned bool, o options) string {
	var b strings.Builder
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	version := func(argv ...string) string {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return "?"
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	variant := "full"
	if o.quick {
		variant = "quick"
	}
	fmt.Fprintf(&b, "Run %s UTC, %s variant: %d rounds x %s per topology and level (after %s warmup), %d connections, HTTP/1.1, 1 kB responses.",
		time.Now().UTC().Format("2006-01-02 15:04"), variant, o.rounds, o.dur, o.warmup, o.conns)
	if len(o.only) == 0 || slices.Contains(o.only, "direct-grpc") || slices.Contains(o.only, "trellis-grpc") {
		fmt.Fprintf(&b, " gRPC unary runs (direct-grpc, trellis-grpc) in the same rounds: %s windows", o.grpcDur)
		if o.grpcDur != o.dur {
			b.WriteString(" (shorter, to keep the variant's time budget)")
		}
		fmt.Fprintf(&b, ", %d HTTP/2 connections with one call in flight each, 1 kB request and response payloads.", o.conns)
	}
	b.WriteString("\n\n")
	fmt.Fprintf(&b, "Machine: %s, %d CPUs, Linux %s, %s; %s; %s.\n\n", model, runtime.NumCPU(), strings.TrimSpace(string(kernel)),
		runtime.Version(), version("nginx", "-v"), version("haproxy", "-v"))
	if pinned {
		b.WriteString("Pinning (taskset): both proxies of a pair on CPU 0; load generator, upstream, control plane and this harness on CPU 1.\n\n")
	} else {
		b.WriteString("Pinning: none (taskset missing, one CPU, or -no-pin).\n\n")
	}
	return b.String()
}
