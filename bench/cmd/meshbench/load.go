package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

// loadResult is what `meshbench load` prints as its last line (JSON).
type loadResult struct {
	Requests int64   `json:"requests"` // completed in the measurement window
	Errors   int64   `json:"errors"`   // failed or unexpected responses in the window
	Seconds  float64 `json:"seconds"`  // length of the measurement window
	Rate     float64 `json:"rate"`     // Requests / Seconds
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	P999     float64 `json:"p999_ms"`
	Max      float64 `json:"max_ms"`
}

// measuringLine is printed on stdout when the warmup ends and the
// measurement window starts, so that the caller can sample CPU over the
// same window.
const measuringLine = "measuring"

// loadMain runs the load generator: conns keep-alive HTTP/1.1 connections
// to addr, each sending GET / in turn; with -grpc, conns gRPC client
// connections (one HTTP/2 connection each), each making one unary call
// with a -req byte payload at a time.
//
// With -rate > 0 it is open loop, wrk2 style: every connection has its own
// schedule (rate/conns per second, staggered so the sum is evenly spaced),
// and a request that starts late because the previous one on its
// connection was still running is charged the wait (no coordinated
// omission). Lateness of the generator's own timer is not charged. With
// -rate 0 it is closed loop (maximum rate).
//
// Every latency of the window is kept and the percentiles are exact.
func loadMain(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	addr := fs.String("addr", "", "HOST:PORT to load")
	rate := fs.Float64("rate", 0, "requests per second in total; 0 = as fast as possible (closed loop)")
	conns := fs.Int("c", 16, "connections")
	warmup := fs.Duration("warmup", time.Second, "warmup, not recorded")
	dur := fs.Duration("d", 5*time.Second, "measurement window")
	bodySize := fs.Int("body", 1024, "expected response body size; other sizes count as errors")
	useGRPC := fs.Bool("grpc", false, "gRPC unary calls (meshbench.Bench/Unary) instead of HTTP/1.1 GET /")
	reqSize := fs.Int("req", 1024, "with -grpc: request payload size")
	header := fs.String("header", "", "an extra request header line, NAME: VALUE (HTTP/1.1 only)")
	useStream := fs.Bool("grpc-stream", false, "one bidirectional gRPC stream per connection (meshbench.Bench/Stream): each request is a -req byte message and its echo")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *conns < 1 {
		return errors.New("load: -addr and -c >= 1 are required")
	}
	start := time.Now().Add(50 * time.Millisecond)
	winStart := start.Add(*warmup)
	winEnd := winStart.Add(*dur)

	workers := make([]*loadWorker, *conns)
	for i := range workers {
		var c requester
		if *useStream {
			s, err := dialGRPCStream(*addr, *reqSize, 5*time.Second)
			if err != nil {
				return fmt.Errorf("load: %w", err)
			}
			c = s
		} else if *useGRPC {
			g, err := dialGRPC(*addr, *reqSize, *bodySize, 5*time.Second)
			if err != nil {
				return fmt.Errorf("load: %w", err)
			}
			c = g
		} else {
			h := &httpConn{addr: *addr, body: *bodySize, req: requestWith(*header)}
			if err := h.dial(); err != nil {
				return fmt.Errorf("load: %w", err)
			}
			c = h
		}
		workers[i] = &loadWorker{conn: c}
	}
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if *rate > 0 {
				interval := time.Duration(float64(time.Second) * float64(*conns) / *rate)
				offset := time.Duration(float64(time.Second) * float64(i) / *rate)
				w.runOpen(start.Add(offset), interval, winStart, winEnd)
			} else {
				w.runClosed(start, winStart, winEnd)
			}
		}()
	}
	time.Sleep(time.Until(winStart))
	fmt.Println(measuringLine)
	wg.Wait()

	var all []int64
	var res loadResult
	for _, w := range workers {
		all = append(all, w.lat...)
		res.Errors += w.errors
		w.conn.close()
	}
	slices.Sort(all)
	res.Requests = int64(len(all))
	res.Seconds = dur.Seconds()
	res.Rate = float64(res.Requests) / res.Seconds
	res.P50, res.P90, res.P99, res.P999 = pct(all, 50), pct(all, 90), pct(all, 99), pct(all, 99.9)
	if n := len(all); n > 0 {
		res.Max = float64(all[n-1]) / 1e6
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// pct is the p-th percentile (nearest rank) of sorted nanoseconds, in ms.
func pct(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return float64(sorted[rank]) / 1e6
}

// requester is one connection of the generator: do makes one request and
// waits for the whole response.
type requester interface {
	do() error
	close()
}

// loadWorker drives one connection and records its latencies.
type loadWorker struct {
	conn   requester
	lat    []int64 // ns, requests of the window only
	errors int64
}

// httpConn is one keep-alive HTTP/1.1 connection; it dials again after a
// failure.
type httpConn struct {
	addr string
	body int
	req  []byte // the request bytes
	conn net.Conn
	br   *bufio.Reader
}

var request = []byte("GET / HTTP/1.1\r\nHost: upstream.bench\r\nUser-Agent: meshbench\r\n\r\n")

// requestWith is request with one more header line ("" adds none).
func requestWith(header string) []byte {
	if header == "" {
		return request
	}
	head := request[:len(request)-2]
	return append(append(append([]byte(nil), head...), header+"\r\n"...), "\r\n"...)
}

func (w *httpConn) dial() error {
	c, err := net.DialTimeout("tcp", w.addr, 5*time.Second)
	if err != nil {
		return err
	}
	w.conn = c
	w.br = bufio.NewReaderSize(c, 8192)
	return nil
}

func (w *httpConn) close() {
	if w.conn != nil {
		w.conn.Close()
	}
}

// do sends one request and reads the whole response.
func (w *httpConn) do() error {
	if w.conn == nil {
		if err := w.dial(); err != nil {
			time.Sleep(10 * time.Millisecond)
			return err
		}
	}
	w.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.conn.Write(w.req); err != nil {
		return w.fail(err)
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		return w.fail(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return w.fail(err)
	}
	if resp.StatusCode != http.StatusOK || int(n) != w.body {
		if resp.Close {
			w.fail(nil)
		}
		return fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
	}
	if resp.Close {
		w.fail(nil)
	}
	return nil
}

// fail drops the connection; the next request dials again.
func (w *httpConn) fail(err error) error {
	w.close()
	w.conn = nil
	return err
}

func (w *loadWorker) record(issued time.Time, lat time.Duration, err error, winStart, winEnd time.Time) {
	if issued.Before(winStart) || !issued.Before(winEnd) {
		return
	}
	if err != nil {
		w.errors++
		return
	}
	w.lat = append(w.lat, int64(lat))
}

func (w *loadWorker) runOpen(first time.Time, interval time.Duration, winStart, winEnd time.Time) {
	prevDone := time.Now()
	for intended := first; intended.Before(winEnd); intended = intended.Add(interval) {
		if d := time.Until(intended); d > 0 {
			time.Sleep(d)
		}
		sent := time.Now()
		// Busy with the previous request at the intended time: the wait is
		// the system's, charge it.
		var queued time.Duration
		if prevDone.After(intended) {
			queued = prevDone.Sub(intended)
		}
		err := w.conn.do()
		prevDone = time.Now()
		w.record(intended, prevDone.Sub(sent)+queued, err, winStart, winEnd)
	}
}

func (w *loadWorker) runClosed(start, winStart, winEnd time.Time) {
	time.Sleep(time.Until(start))
	for {
		sent := time.Now()
		if !sent.Before(winEnd) {
			return
		}
		err := w.conn.do()
		w.record(sent, time.Since(sent), err, winStart, winEnd)
	}
}
