package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The benchmarks compare a keep-alive HTTP/1.1 call straight to the app
// with the same call through both proxies (client -> outbound listener ->
// mTLS HTTP/2 -> inbound -> app); the difference is the cost of the mesh.

var benchBody = bytes.Repeat([]byte("x"), 1024)

// benchParallelism * GOMAXPROCS concurrent callers keep every hop busy, so
// the parallel benchmarks measure throughput rather than latency.
const benchParallelism = 8

func benchApp() http.Handler {
	n := strconv.Itoa(len(benchBody))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Length"] = []string{n}
		_, _ = w.Write(benchBody)
	})
}

func benchClient(b *testing.B) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func benchGet(b *testing.B, c *http.Client, req *http.Request) {
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(benchBody)) {
		b.Fatalf("got %d with %d bytes (%v), want 200 with %d", resp.StatusCode, n, err, len(benchBody))
	}
}

func benchRequest(b *testing.B, url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	return req
}

func BenchmarkDirect(b *testing.B) {
	addr := startHTTPApp(b, benchApp(), false)
	c := benchClient(b)
	req := benchRequest(b, "http://"+addr+"/bench")
	benchGet(b, c, req)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		benchGet(b, c, req)
	}
	cpu.report(b)
}

func BenchmarkThroughProxies(b *testing.B) {
	m := newMesh(b, meshOptions{app: benchApp()})
	c := benchClient(b)
	req := benchRequest(b, m.url("/bench"))
	benchGet(b, c, req)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		benchGet(b, c, req)
	}
	cpu.report(b)
}

func BenchmarkDirectParallel(b *testing.B) {
	addr := startHTTPApp(b, benchApp(), false)
	c := benchClient(b)
	url := "http://" + addr + "/bench"
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest(b, url)
		for pb.Next() {
			benchGet(b, c, req)
		}
	})
	cpu.report(b)
}

func BenchmarkThroughProxiesParallel(b *testing.B) {
	m := newMesh(b, meshOptions{app: benchApp()})
	c := benchClient(b)
	url := m.url("/bench")
	benchGet(b, c, benchRequest(b, url))
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest(b, url)
		for pb.Next() {
			benchGet(b, c, req)
		}
	})
	cpu.report(b)
}

// cpuMeter reports the process CPU time (user+system) per operation, which
// includes the client and the app; subtract the direct benchmark's figure
// for the proxies' share.
type cpuMeter struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuMeter { return cpuMeter{processCPU()} }

func (m cpuMeter) report(b *testing.B) {
	b.ReportMetric(float64(processCPU()-m.start)/float64(b.N)/1e3, "cpu-us/op")
}
