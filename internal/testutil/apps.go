package testutil

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// EchoApp answers with what it saw: method, path, query, Host, protocol,
// the X-Forwarded-Client-Cert header (as X-Got-Xfcc), X-Hop and X-Custom
// (as X-Got-Hop, X-Got-Custom), and echoes the body (read whole first: an
// HTTP/1 handler may not read the body once its response is flushed).
func EchoApp() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Path", r.URL.Path)
		w.Header().Set("X-Query", r.URL.RawQuery)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Proto", r.Proto)
		w.Header()["X-Got-Xfcc"] = r.Header.Values("X-Forwarded-Client-Cert")
		w.Header().Set("X-Got-Hop", r.Header.Get("X-Hop"))
		w.Header().Set("X-Got-Custom", r.Header.Get("X-Custom"))
		_, _ = w.Write(body)
	})
}

// Do sends req and returns the response with its whole body.
func Do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

// Get is Do for a GET of url.
func Get(t testing.TB, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return Do(t, c, req)
}

// WantXFCC checks that an EchoApp saw the proxy's X-Forwarded-Client-Cert
// naming caller.
func WantXFCC(t testing.TB, resp *http.Response, caller string) {
	t.Helper()
	if got := strings.Join(resp.Header.Values("X-Got-Xfcc"), ","); !strings.Contains(got, "URI="+caller) {
		t.Errorf("X-Forwarded-Client-Cert at the app = %q, want URI=%s", got, caller)
	}
}

// CountingEcho is a TCP echo on loopback that counts its connections.
func CountingEcho(t testing.TB) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort(), &n
}

// WantRefused checks that a connection dial opens is refused: reset at
// once, or closed without a byte.
func WantRefused(t testing.TB, dial func() (net.Conn, error)) {
	t.Helper()
	c, err := dial()
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial: %v, want a connection that is then reset", err)
		}
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 16))
	if err == nil || n != 0 {
		t.Fatalf("read on a refused connection: %d bytes, err %v; want none and an error", n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection neither served nor refused: %v", err)
	}
}

// EchoThrough writes msg on c, half-closes, and returns all it reads back.
func EchoThrough(t testing.TB, c net.Conn, msg []byte) []byte {
	t.Helper()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		_, _ = c.Write(msg)
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	return got
}

// Metric returns the value of the series name{labels} gathered from g (0
// when absent), summed over series that also carry other labels; counters,
// gauges and histograms (sample count) alike.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range s.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			match := true
			for k, v := range labels {
				if got, ok := have[k]; !ok || got != v {
					match = false
				}
			}
			if !match {
				continue
			}
			if c := s.GetCounter(); c != nil {
				sum += c.GetValue()
			} else if h := s.GetHistogram(); h != nil {
				sum += float64(h.GetSampleCount())
			} else if g := s.GetGauge(); g != nil {
				sum += g.GetValue()
			}
		}
	}
	return sum
}
