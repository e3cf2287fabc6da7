package dataplane_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The inbound side has one pool of app connections for the fast path and
// the net/http path. A fast-path exchange once left its watch deadline on
// the connection it returned; a request off the fast path that reused it
// after a pause over the watch interval failed with "client went away"
// (502, after the app had run it). Every way off the fast path alternates
// with fast-path requests here, with pauses past the watch interval and
// past the pool's idle check, over one pool.

// poolPath is one way a request reaches the server proxy.
type poolPath struct {
	name string
	do   func(w *poolWorker, i int) (code int, err error)
}

// poolWorker is one caller: a keep-alive raw connection to the client
// proxy's upstream listener and a client of its HTTP proxy port.
type poolWorker struct {
	m     *mesh
	id    int
	conn  net.Conn
	br    *bufio.Reader
	proxy *http.Client
}

func (w *poolWorker) raw(req string) (int, error) {
	if w.conn == nil {
		c, err := net.Dial("tcp", w.m.upstreamAddr)
		if err != nil {
			return 0, err
		}
		w.conn, w.br = c, bufio.NewReader(c)
	}
	_ = w.conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(w.conn, req); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(w.br, &http.Request{Method: "GET"})
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		w.conn.Close()
		w.conn = nil
	}
	return resp.StatusCode, err
}

func (w *poolWorker) path(i int) string { return fmt.Sprintf("/items/w%d/%d", w.id, i) }

var poolPaths = []poolPath{
	{"fast path", func(w *poolWorker, i int) (int, error) {
		return w.raw("GET " + w.path(i) + " HTTP/1.1\r\nHost: catalog.shop\r\n\r\n")
	}},
	{"HTTP proxy port", func(w *poolWorker, i int) (int, error) {
		resp, err := w.proxy.Get("http://catalog.shop" + w.path(i))
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, err
	}},
	{"HTTP/1.0", func(w *poolWorker, i int) (int, error) {
		c, err := net.Dial("tcp", w.m.upstreamAddr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, "GET "+w.path(i)+" HTTP/1.0\r\nHost: catalog.shop\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, err
	}},
	{"TE: trailers", func(w *poolWorker, i int) (int, error) {
		return w.raw("GET " + w.path(i) + " HTTP/1.1\r\nHost: catalog.shop\r\nTE: trailers\r\n\r\n")
	}},
	{"encoded path", func(w *poolWorker, i int) (int, error) {
		return w.raw("GET /items/%77" + w.path(i)[len("/items/w"):] + " HTTP/1.1\r\nHost: catalog.shop\r\n\r\n")
	}},
	{"dot segments", func(w *poolWorker, i int) (int, error) {
		return w.raw("GET /x/.." + w.path(i) + " HTTP/1.1\r\nHost: catalog.shop\r\n\r\n")
	}},
}

func TestPoolReuseAcrossPathsAfterPauses(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses past the idle check: about 20 s")
	}
	var appSaw atomic.Int64
	m := newMesh(t, meshOptions{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appSaw.Add(1)
		if !strings.HasPrefix(r.URL.Path, "/items/w") {
			http.Error(w, "unexpected path "+r.URL.Path, http.StatusNotFound)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})})
	const workers, perWorker = 4, 500
	proxyURL := &url.URL{Scheme: "http", Host: m.proxyAddr}
	var (
		mu       sync.Mutex
		failures []string
		byPath   = map[string]int{}
		wg       sync.WaitGroup
	)
	for id := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), DisableCompression: true}
			defer tr.CloseIdleConnections()
			w := &poolWorker{m: m, id: id, proxy: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
			defer func() {
				if w.conn != nil {
					w.conn.Close()
				}
			}()
			for i := range perWorker {
				// Fast path, then a way off it, in turn.
				p := poolPaths[0]
				if i%2 == 1 {
					p = poolPaths[1+(i/2+id)%(len(poolPaths)-1)]
				}
				code, err := p.do(w, i)
				mu.Lock()
				byPath[p.name]++
				if err != nil || code != http.StatusOK {
					failures = append(failures, fmt.Sprintf("worker %d request %d (%s): %d %v", id, i, p.name, code, err))
				}
				mu.Unlock()
				// Pauses past the watch interval (250 ms) after a fast-path
				// request, and now and then past the idle check (1 s).
				switch {
				case i%100 == 50:
					time.Sleep(1100 * time.Millisecond)
				case i%10 == 0:
					time.Sleep(350 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed; first ones:\n%s", len(failures), workers*perWorker, strings.Join(failures[:min(10, len(failures))], "\n"))
	}
	for _, p := range poolPaths {
		if byPath[p.name] < 100 {
			t.Errorf("%s: only %d requests sent", p.name, byPath[p.name])
		}
	}
	if got := appSaw.Load(); got != workers*perWorker {
		t.Errorf("app served %d requests, want %d", got, workers*perWorker)
	}
	if m.logs.Contains("client went away") {
		t.Errorf("proxy logged a caller as gone while none went away")
	}
}
