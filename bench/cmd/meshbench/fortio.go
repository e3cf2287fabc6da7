package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

// fortioModule is what the gRPC part installs when fortio is missing:
// later releases do not build from the module proxy here.
const fortioModule = "fortio.org/fortio@v1.66.5"

// ensureFortio finds fortio on PATH or in Go's bin directory, and installs
// it there with go install when it is in neither.
func ensureFortio() (string, error) {
	if p, err := exec.LookPath("fortio"); err == nil {
		return p, nil
	}
	bin, err := goBin()
	if err != nil {
		return "", fmt.Errorf("install: fortio is missing and there is no go to install it with (%w); install %s and put it on PATH", err, fortioModule)
	}
	path := filepath.Join(bin, "fortio")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	fmt.Fprintf(os.Stderr, "meshbench: installing fortio: GOBIN=%s go install %s\n", bin, fortioModule)
	cmd := exec.Command("go", "install", fortioModule)
	cmd.Env = append(os.Environ(), "GOBIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("install: fortio is missing and GOBIN=%s go install %s failed (install it by hand, or put a fortio on PATH): %w: %s",
			bin, fortioModule, err, out)
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("install: fortio still missing after go install: %w", err)
	}
	return path, nil
}

// goBin is where go install puts binaries: GOBIN, else GOPATH's first
// entry's bin.
func goBin() (string, error) {
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	lines := strings.Split(string(out), "\n")
	if len(lines) < 2 {
		return "", fmt.Errorf("go env: unexpected output %q", out)
	}
	if gobin := strings.TrimSpace(lines[0]); gobin != "" {
		return gobin, nil
	}
	gopath := filepath.SplitList(strings.TrimSpace(lines[1]))
	if len(gopath) == 0 || gopath[0] == "" {
		return "", errors.New("go env: neither GOBIN nor GOPATH is set")
	}
	return filepath.Join(gopath[0], "bin"), nil
}

// startFortioServer runs fortio's gRPC ping server on a loopback port, its
// other servers off, pinned with the load generator; it returns the
// address.
func (e *env) startFortioServer(ctx context.Context) (string, error) {
	addr, err := freePort()
	if err != nil {
		return "", err
	}
	p, err := e.start("fortio-server", loadCPU, []string{e.fortio, "server", "-grpc-port", addr,
		"-http-port", "disabled", "-redirect-port", "disabled", "-tcp-port", "disabled", "-udp-port", "disabled",
		"-loglevel", "Warning"}, []string{"GOMAXPROCS=1"})
	if err != nil {
		return "", err
	}
	return addr, awaitPing(ctx, addr, 64, 10*time.Second, p)
}

// fortioPing is the method of fortio's ping service. It answers with the
// PingMessage it got, its timestamp set.
const fortioPing = "/fgrpc.PingServer/Ping"

// pingMessage is a fortio PingMessage whose payload (field 3, a string) is
// size bytes.
func pingMessage(size int) []byte {
	b := protowire.AppendTag(nil, 3, protowire.BytesType)
	return protowire.AppendBytes(b, payload(size))
}

// ping makes one ping call to addr with a size-byte payload and checks
// that the answer carries it back.
func ping(ctx context.Context, addr string, size int) error {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, resp := pingMessage(size), []byte(nil)
	if err := cc.Invoke(ctx, fortioPing, &req, &resp); err != nil {
		return err
	}
	if len(resp) < len(req) {
		return fmt.Errorf("ping: %d-byte answer to %d bytes", len(resp), len(req))
	}
	return nil
}

// awaitPing waits until a ping through addr with a size-byte payload
// succeeds, or one of ps exits.
func awaitPing(ctx context.Context, addr string, size int, timeout time.Duration, ps ...*proc) error {
	return await(ctx, timeout, ps, func() error { return ping(ctx, addr, size) }, func(last error) error {
		return fmt.Errorf("grpc ping %s not answered after %s: %v", addr, timeout, last)
	})
}

// fortioArgs is `fortio load` for run g against addr for d. The unary run
// at a fixed rate spreads the connections' schedules over the interval
// (-uniform), as `meshbench load` does, instead of sending all of them at
// once. Histogram buckets are 10 µs wide up to 0.12 ms, 0.1 ms from 0.6 to
// 1 ms, 0.2 ms to 2 ms (-r 0.00001); percentiles are interpolated in them.
func (e *env) fortioArgs(g grpcRun, d time.Duration, addr string) []string {
	argv := []string{e.fortio, "load", "-grpc", "-ping", "-c", strconv.Itoa(g.conns), "-s", strconv.Itoa(g.streams),
		"-qps", strconv.Itoa(g.qps), "-t", d.String(), "-payload-size", strconv.Itoa(g.payload),
		"-r", "0.00001", "-p", "50,90,99,99.9", "-loglevel", "Warning", "-json", "-"}
	if g.qps > 0 {
		argv = append(argv, "-uniform")
	}
	return append(argv, addr)
}

// fortioStarted is the line fortio writes when the calls it times start
// (after dialing and one call per connection).
func fortioStarted(line string) bool { return strings.HasPrefix(line, "Starting at ") }

// measureFortio runs g against t for o.warmup, not recorded (it fills the
// pairs' connection pools), then for o.grpcT, sampling the proxies' CPU
// and RSS from the start of fortio's timed calls to its exit.
func (e *env) measureFortio(ctx context.Context, t *topology, g grpcRun, o options) (runResult, error) {
	if _, err := e.sample(ctx, "fortio warmup", t, e.fortioArgs(g, o.warmup, t.front), true, fortioStarted); err != nil {
		return runResult{}, err
	}
	lr, err := e.sample(ctx, "fortio", t, e.fortioArgs(g, o.grpcT, t.front), true, fortioStarted)
	if err != nil {
		return runResult{}, err
	}
	res, err := parseFortio([]byte(lr.stdout))
	if err != nil {
		return runResult{}, err
	}
	if res.Errors > 0 {
		fmt.Fprintf(os.Stderr, "meshbench: %s, %s: %d failed calls; fortio's first error: %s\n", t.name, g.name(), res.Errors, firstError(lr.stderr))
	}
	return runResult{loadResult: res, CPUPct: lr.cpuPct, RSS: lr.rss, Anon: lr.anon}, nil
}

// measureFortioHTTP runs fortio's HTTP/1.1 load against t at level l
// (keep-alive connections, the load generator's Host and path), after an
// unrecorded warmup, sampling the proxies from fortio's start of timing.
func (e *env) measureFortioHTTP(ctx context.Context, t *topology, l level, o options) (runResult, error) {
	args := func(d time.Duration) []string {
		argv := []string{e.fortio, "load", "-c", strconv.Itoa(o.conns), "-qps", strconv.Itoa(l.rate), "-t", d.String(),
			"-r", "0.00001", "-p", "50,90,99,99.9", "-loglevel", "Warning", "-json", "-", "-H", "Host: upstream.bench"}
		if t.header != "" {
			argv = append(argv, "-H", t.header)
		}
		if l.rate > 0 {
			argv = append(argv, "-uniform")
		}
		return append(argv, "http://"+t.front+"/")
	}
	if _, err := e.sample(ctx, "fortio warmup", t, args(o.warmup), true, fortioStarted); err != nil {
		return runResult{}, err
	}
	lr, err := e.sample(ctx, "fortio", t, args(o.dur), true, fortioStarted)
	if err != nil {
		return runResult{}, err
	}
	res, err := parseFortioAs([]byte(lr.stdout), "200")
	if err != nil {
		return runResult{}, err
	}
	if res.Errors > 0 {
		fmt.Fprintf(os.Stderr, "meshbench: %s, %s: %d failed requests; fortio's first error: %s\n", t.name, l.name, res.Errors, firstError(lr.stderr))
	}
	return runResult{loadResult: res, CPUPct: lr.cpuPct, RSS: lr.rss, Anon: lr.anon}, nil
}

// firstError is the first warning or error line fortio logged.
func firstError(stderr string) string {
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"err"`) {
			return line
		}
	}
	return "(none logged)"
}

// fortioResult is the part of fortio's JSON result the report uses.
type fortioResult struct {
	ActualDuration    int64 // ns
	DurationHistogram struct {
		Count       int64
		Max         float64 // s
		Percentiles []struct{ Percentile, Value float64 }
	}
	RetCodes map[string]int64
}

// fortioOK is the RetCodes key of a successful ping.
const fortioOK = "SERVING"

// parseFortio reads fortio's JSON result of gRPC pings: successful calls,
// errors (every other RetCodes key) and latencies in ms.
func parseFortio(data []byte) (loadResult, error) { return parseFortioAs(data, fortioOK) }

// parseFortioAs is parseFortio with ok the RetCodes key of success ("200"
// for HTTP).
func parseFortioAs(data []byte, ok string) (loadResult, error) {
	var fr fortioResult
	if err := json.Unmarshal(data, &fr); err != nil {
		return loadResult{}, fmt.Errorf("fortio: bad result: %w", err)
	}
	if fr.ActualDuration <= 0 {
		return loadResult{}, errors.New("fortio: result without a duration")
	}
	var res loadResult
	for code, n := range fr.RetCodes {
		if code == ok {
			res.Requests += n
		} else {
			res.Errors += n
		}
	}
	res.Seconds = float64(fr.ActualDuration) / 1e9
	res.Rate = float64(res.Requests) / res.Seconds
	for _, p := range fr.DurationHistogram.Percentiles {
		ms := p.Value * 1e3
		switch p.Percentile {
		case 50:
			res.P50 = ms
		case 90:
			res.P90 = ms
		case 99:
			res.P99 = ms
		case 99.9:
			res.P999 = ms
		}
	}
	res.Max = fr.DurationHistogram.Max * 1e3
	return res, nil
}
