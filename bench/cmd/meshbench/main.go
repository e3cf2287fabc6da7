// Command meshbench measures the data plane on loopback: the same load
// through no proxy (direct), a Trellis proxy pair with a real control
// plane, an nginx pair and an HAProxy pair (both mutual TLS with SPIFFE
// certificates), interleaved round by round, and prints a markdown table
// of latency percentiles, rate, CPU and memory. A gRPC unary load runs
// the same way directly (direct-grpc) and through a second Trellis pair
// (trellis-grpc) in the same rounds. After the rounds, the gRPC part
// (-grpc-only runs it alone) puts fortio's gRPC ping through no proxy, a
// Trellis, an nginx and an HAProxy pair (grpcpairs.go). docs/benchmarks.md
// describes the method; `make bench`, `make bench-quick` and `make
// bench-grpc` run it.
//
// It re-executes itself for the load generator (`meshbench load`) and the
// upstream (`meshbench upstream`), so that they can be pinned to a CPU.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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
	// httpFortio loads the HTTP/1.1 topologies with fortio instead of
	// `meshbench load` (an independent client).
	httpFortio bool

	// The gRPC part (grpcpairs.go).
	grpcPart     bool          // run it (after the rounds, if any)
	grpcOnly     bool          // run nothing else
	grpcPairs    []string      // its pairs, report order
	grpcPayloads []int         // bytes, each way
	grpcT        time.Duration // fortio's -t per run
	grpcRounds   int
}

func benchMain(args []string) error {
	fs := flag.NewFlagSet("meshbench", flag.ContinueOnError)
	var o options
	var levels, only string
	fs.BoolVar(&o.quick, "quick", false, "quick variant: 5 s x 3 rounds (gRPC 2 s) at 1000 rps and max only")
	fs.IntVar(&o.rounds, "rounds", 0, "rounds (default 5, quick 3)")
	fs.DurationVar(&o.dur, "d", 0, "measurement window per run (default 15s, quick 5s)")
	fs.DurationVar(&o.grpcDur, "grpc-d", 0, "measurement window of the rounds' gRPC runs, direct-grpc and trellis-grpc (default: -d; quick 2s)")
	fs.DurationVar(&o.warmup, "warmup", 0, "warmup before each run's window (default 1s, quick 500ms)")
	fs.IntVar(&o.conns, "c", 16, "connections")
	fs.StringVar(&levels, "levels", "", "comma-separated rates, max = closed loop (default 1000,5000,max; quick 1000,max)")
	fs.StringVar(&o.out, "o", "", "also write the markdown report to this file")
	fs.StringVar(&o.trellis, "trellis", "", "trellis binary (default: go build -o bin/trellis ./cmd/trellis)")
	fs.BoolVar(&o.noPin, "no-pin", false, "do not pin processes to CPUs with taskset")
	fs.BoolVar(&o.httpFortio, "http-fortio", false, "load the HTTP/1.1 topologies with fortio (installed when missing) instead of meshbench's own generator: an independent client's view")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs)")
	fs.StringVar(&only, "only", "", "comma-separated topologies to run (default all: "+strings.Join(allTopologies, ",")+")")
	var grpcPairs, grpcPayloads string
	fs.BoolVar(&o.grpcOnly, "grpc-only", false, "run only the gRPC part: fortio's gRPC ping through the -grpc-pairs (about 5 minutes)")
	fs.StringVar(&grpcPairs, "grpc-pairs", "", "comma-separated pairs of the gRPC part (default all: "+strings.Join(grpcPairNames, ",")+
		"), or none; the part runs with -grpc-only, and after the rounds of a full run without -only")
	fs.StringVar(&grpcPayloads, "grpc-payloads", "64,1024,65536", "payload sizes of the gRPC part, bytes (each way)")
	fs.DurationVar(&o.grpcT, "grpc-t", 0, "fortio's run time per pair, load and payload in the gRPC part (default 6s, quick 3s)")
	fs.IntVar(&o.grpcRounds, "grpc-rounds", 1, "rounds of the gRPC part")
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
	if o.grpcOnly && len(o.only) > 0 {
		return errors.New("-only selects the rounds, which -grpc-only skips: choose the gRPC part's pairs with -grpc-pairs")
	}
	if o.grpcPairs, err = parseGRPCPairs(grpcPairs); err != nil {
		return err
	}
	if o.grpcPayloads, err = parsePayloads(grpcPayloads); err != nil {
		return err
	}
	if o.grpcT == 0 {
		o.grpcT = pick(full, 6*time.Second, 3*time.Second)
	}
	if o.grpcRounds < 1 {
		return errors.New("-grpc-rounds: at least 1")
	}
	// The quick variant and A/B runs (-only) leave the gRPC part out.
	o.grpcPart = len(o.grpcPairs) > 0 && (o.grpcOnly || (full && len(o.only) == 0))
	if o.grpcOnly && !o.grpcPart {
		return errors.New("-grpc-only with -grpc-pairs none: nothing to run")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, o)
}

// allTopologies in report order.
var allTopologies = []string{"direct", "trellis", "trellis-traffic", "trellis-gateway", "trellis-gateway-jwt", "nginx", "haproxy", "direct-grpc", "trellis-grpc"}

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
	rounds := !o.grpcOnly
	want := func(name string) bool { return rounds && (len(o.only) == 0 || slices.Contains(o.only, name)) }
	grpcWant := func(name string) bool { return o.grpcPart && slices.Contains(o.grpcPairs, name) }
	if want("nginx") || want("haproxy") || grpcWant("nginx") || grpcWant("haproxy") {
		if err := ensureTools(); err != nil {
			return err
		}
	}
	var fortio string
	if o.grpcPart || o.httpFortio {
		var err error
		if fortio, err = ensureFortio(); err != nil {
			return err
		}
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
	e := &env{dir: dir, self: self, trellis: o.trellis, fortio: fortio}
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
	var parts []string
	if rounds {
		md, err := e.runRounds(ctx, o, pc, want)
		if err != nil {
			return err
		}
		parts = append(parts, md)
	}
	// A failed gRPC part still leaves the rounds' report behind.
	var grpcErr error
	if o.grpcPart {
		md, err := e.runGRPCPairs(ctx, o, pc)
		if err != nil && len(parts) == 0 {
			return err
		}
		if err != nil {
			grpcErr = fmt.Errorf("gRPC part: %w", err)
			o.grpcPart = false // not in the report's header
		} else {
			parts = append(parts, md)
		}
	}
	report := machineInfo(e, o) + strings.Join(parts, "")
	fmt.Print(report)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return err
		}
	}
	return grpcErr
}

// runRounds starts the topologies of the rounds that want selects and
// runs the rounds: every topology at every level, in an order that
// rotates. It returns their part of the report.
func (e *env) runRounds(ctx context.Context, o options, pc *peerCerts, want func(string) bool) (string, error) {
	var err error
	wantHTTP := want("direct") || want("trellis") || want("trellis-traffic") || want("trellis-gateway") || want("trellis-gateway-jwt") || want("nginx") || want("haproxy")
	wantGRPC := want("direct-grpc") || want("trellis-grpc")
	var upstream, grpcUpstream string
	if wantHTTP {
		if upstream, err = e.startUpstream(false); err != nil {
			return "", fmt.Errorf("upstream: %w", err)
		}
	}
	if wantGRPC {
		if grpcUpstream, err = e.startUpstream(true); err != nil {
			return "", fmt.Errorf("gRPC upstream: %w", err)
		}
	}
	var topos []*topology
	if want("direct") {
		topos = append(topos, &topology{name: "direct", front: upstream})
	}
	if want("trellis") || want("trellis-grpc") {
		tt, err := e.startTrellis(ctx, upstream, grpcUpstream, want("trellis"), want("trellis-grpc"))
		if err != nil {
			return "", err
		}
		topos = append(topos, tt...)
	}
	starters := []struct {
		name  string
		start func() (*topology, error)
	}{
		{"trellis-traffic", func() (*topology, error) { return e.startTraffic(ctx, upstream) }},
		{"trellis-gateway", func() (*topology, error) { return e.startGateway(ctx, upstream, false) }},
		{"trellis-gateway-jwt", func() (*topology, error) { return e.startGateway(ctx, upstream, true) }},
		{"nginx", func() (*topology, error) { return e.startNginx(ctx, upstream, pc) }},
		{"haproxy", func() (*topology, error) { return e.startHAProxy(ctx, upstream, pc) }},
	}
	for _, s := range starters {
		if !want(s.name) {
			continue
		}
		t, err := s.start()
		if err != nil {
			return "", err
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
					return "", err
				}
				rr, err := e.measure(ctx, t, l, o)
				if err != nil {
					return "", fmt.Errorf("round %d, %s at %s: %w", r+1, t.name, l.name, err)
				}
				fmt.Fprintf(os.Stderr, "meshbench: [%d/%d] round %d %-12s %-5s p50 %.3f p99 %.3f ms, %.0f rps, cpu %.0f%%, errors %d\n",
					n, total, r+1, t.name, l.name, rr.P50, rr.P99, rr.Rate, rr.CPUPct, rr.Errors)
				res.add(t.name, l.name, rr)
			}
		}
	}
	return res.markdown(""), nil
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
	if o.httpFortio && !t.grpc {
		return e.measureFortioHTTP(ctx, t, l, o)
	}
	argv := []string{e.self, "load", "-addr", t.front, "-rate", strconv.Itoa(l.rate), "-c", strconv.Itoa(o.conns),
		"-d", dur.String(), "-warmup", o.warmup.String()}
	if t.grpc {
		argv = append(argv, "-grpc")
	}
	if t.header != "" {
		argv = append(argv, "-header", t.header)
	}
	return e.runLoad(ctx, t, argv)
}

// runLoad runs `meshbench load` argv against t, samples its proxies over
// the measurement window and reads the result (the last line of output).
func (e *env) runLoad(ctx context.Context, t *topology, argv []string) (runResult, error) {
	lr, err := e.sample(ctx, "load", t, argv, false, func(line string) bool { return line == measuringLine })
	if err != nil {
		return runResult{}, err
	}
	rr := runResult{CPUPct: lr.cpuPct, RSS: lr.rss, Anon: lr.anon}
	// The result is the last line.
	lines := strings.Split(strings.TrimSpace(lr.stdout), "\n")
	last := lines[len(lines)-1]
	if err := json.Unmarshal([]byte(last), &rr.loadResult); err != nil {
		return runResult{}, fmt.Errorf("load: bad result %q: %w", last, err)
	}
	return rr, nil
}

// loadRun is one run of a load generator: its output, and the proxies'
// CPU and peak RSS over its measurement window.
type loadRun struct {
	stdout, stderr string
	cpuPct         float64   // proxy pair, % of one core
	rss, anon      []float64 // peak VmRSS and RssAnon per proxy, MB
}

// sample runs the load generator argv (pinned with the upstream,
// GOMAXPROCS 1) against t, and samples the CPU and RSS of t's proxies from
// the output line for which started is true (a line of stdout, or of
// stderr with onStderr) until the generator exits. name prefixes errors.
func (e *env) sample(ctx context.Context, name string, t *topology, argv []string, onStderr bool, started func(string) bool) (loadRun, error) {
	if e.pin {
		argv = append([]string{"taskset", "-c", loadCPU}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	var other, scanned strings.Builder
	var pipe io.ReadCloser
	var err error
	if onStderr {
		cmd.Stdout = &other
		pipe, err = cmd.StderrPipe()
	} else {
		cmd.Stderr = &other
		pipe, err = cmd.StdoutPipe()
	}
	if err != nil {
		return loadRun{}, err
	}
	if err := cmd.Start(); err != nil {
		return loadRun{}, fmt.Errorf("%s: %w", name, err)
	}
	var pids []int
	for _, p := range t.proxies {
		pids = append(pids, p.pid())
	}
	lr := loadRun{rss: make([]float64, len(pids)), anon: make([]float64, len(pids))}
	var cpu0 float64
	var t0 time.Time
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	sc := bufio.NewScanner(pipe)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		scanned.WriteString(line + "\n")
		if !t0.IsZero() || !started(line) {
			continue
		}
		cpu0, t0 = treeCPU(pids), time.Now()
		go func() {
			defer close(rssDone)
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				for i, p := range pids {
					rss, anon := treeRSS(p)
					lr.rss[i], lr.anon[i] = max(lr.rss[i], rss), max(lr.anon[i], anon)
				}
				select {
				case <-stopRSS:
					return
				case <-tick.C:
				}
			}
		}()
	}
	io.Copy(io.Discard, pipe) // after a scan error: let the generator finish
	// Wait first: until it returns, the other stream may still be copied.
	err = cmd.Wait()
	lr.stdout, lr.stderr = scanned.String(), other.String()
	if onStderr {
		lr.stdout, lr.stderr = lr.stderr, lr.stdout
	}
	if err != nil {
		if !t0.IsZero() {
			close(stopRSS)
			<-rssDone
		}
		return loadRun{}, fmt.Errorf("%s: %w: %s", name, err, tail(lr.stderr))
	}
	if t0.IsZero() {
		return loadRun{}, fmt.Errorf("%s: no measurement window: %s", name, tail(lr.stderr))
	}
	// The window ended when the last request was sent; the scan above
	// returned when the generator exited, a few ms later at most.
	cpu1, t1 := treeCPU(pids), time.Now()
	close(stopRSS)
	<-rssDone
	if len(pids) > 0 {
		lr.cpuPct = 100 * (cpu1 - cpu0) / t1.Sub(t0).Seconds()
	}
	for _, p := range t.proxies {
		if p.exited() {
			return lr, fmt.Errorf("%s exited during the run: %s", p.name, p.logTail())
		}
	}
	return lr, nil
}

// tail is the end of a generator's stderr, for errors.
func tail(s string) string {
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

// machineInfo describes what ran on what, for the report.
func machineInfo(e *env, o options) string {
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
	now := time.Now().UTC().Format("2006-01-02 15:04")
	if !o.grpcOnly {
		fmt.Fprintf(&b, "Run %s UTC, %s variant: %d rounds x %s per topology and level (after %s warmup), %d connections, HTTP/1.1, 1 kB responses.",
			now, variant, o.rounds, o.dur, o.warmup, o.conns)
		if o.httpFortio {
			b.WriteString(" HTTP/1.1 load by fortio (`fortio load`, keep-alive, -uniform at a fixed rate; percentiles interpolated in its 10 µs histogram buckets), not meshbench's own generator.")
		}
		if len(o.only) == 0 || slices.Contains(o.only, "direct-grpc") || slices.Contains(o.only, "trellis-grpc") {
			fmt.Fprintf(&b, " gRPC unary runs (direct-grpc, trellis-grpc) in the same rounds: %s windows", o.grpcDur)
			if o.grpcDur != o.dur {
				b.WriteString(" (shorter, to keep the variant's time budget)")
			}
			fmt.Fprintf(&b, ", %d HTTP/2 connections with one call in flight each, 1 kB request and response payloads.", o.conns)
		}
		b.WriteString("\n\n")
	} else {
		fmt.Fprintf(&b, "Run %s UTC, gRPC part only (-grpc-only).\n\n", now)
	}
	if o.grpcPart {
		b.WriteString(grpcPartInfo(o))
	}
	fmt.Fprintf(&b, "Machine: %s, %d CPUs, Linux %s, %s; %s; %s", model, runtime.NumCPU(), strings.TrimSpace(string(kernel)),
		runtime.Version(), version("nginx", "-v"), version("haproxy", "-v"))
	if o.grpcPart {
		fmt.Fprintf(&b, "; fortio %s", version(e.fortio, "version"))
	}
	b.WriteString(".\n\n")
	if !e.pin {
		b.WriteString("Pinning: none (taskset missing, one CPU, or -no-pin).\n\n")
		return b.String()
	}
	rest := "load generator, upstream, control plane and this harness"
	switch {
	case o.grpcOnly:
		rest = "fortio load, fortio server, control plane and this harness"
	case o.grpcPart:
		rest = "load generators (meshbench load, fortio load), upstreams (meshbench upstream, fortio server), control plane and this harness"
	}
	fmt.Fprintf(&b, "Pinning (taskset): both proxies of a pair on CPU %s; %s on CPU %s.\n\n", proxyCPU, rest, loadCPU)
	return b.String()
}
