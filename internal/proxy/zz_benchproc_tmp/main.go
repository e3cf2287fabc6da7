// Throwaway: process-separated measurement of the two proxies. Deleted after use.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/proxy"
)

func main() {
	mode := flag.String("mode", "load", "load|proxies")
	app := flag.String("app", "", "app addr (proxies mode)")
	conc := flag.Int("c", 32, "concurrency")
	dur := flag.Duration("d", 5*time.Second, "duration")
	rate := flag.Int("rate", 0, "fixed total rps (0 = max)")
	direct := flag.Bool("direct", false, "load the app directly")
	flag.Parse()
	if *mode == "proxies" {
		runProxies(*app)
		return
	}
	body := bytes.Repeat([]byte("x"), 1024)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Length"] = []string{"1024"}
		w.Write(body)
	}))
	target := l.Addr().String()
	var child *exec.Cmd
	if !*direct {
		child = exec.Command(os.Args[0], "-mode", "proxies", "-app", target)
		child.Env = append(os.Environ(), "GOMAXPROCS=1")
		child.Stderr = os.Stderr
		out, _ := child.StdoutPipe()
		if err := child.Start(); err != nil {
			panic(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		target = strings.TrimSpace(line)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 1000, DisableCompression: true}
	c := &http.Client{Transport: tr}
	url := "http://" + target + "/bench"
	one := func() time.Duration {
		s := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(s)
	}
	for i := 0; i < 2000; i++ {
		one()
	}
	cpu0 := procCPU(child)
	var n atomic.Int64
	var mu sync.Mutex
	var lats []time.Duration
	stop := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for g := 0; g < *conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			var interval time.Duration
			if *rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(*conc) / float64(*rate))
			}
			next := time.Now()
			for time.Now().Before(stop) {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					next = next.Add(interval)
				}
				local = append(local, one())
				n.Add(1)
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	cpu1 := procCPU(child)
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	p := func(q float64) time.Duration { return lats[int(q*float64(len(lats)-1))] }
	total := n.Load()
	fmt.Printf("requests=%d rps=%.0f p50=%v p90=%v p99=%v", total, float64(total)/dur.Seconds(), p(.5), p(.9), p(.99))
	if child != nil {
		fmt.Printf(" proxy-cpu-us/req=%.1f proxy-cpu-util=%.0f%%", (cpu1-cpu0).Seconds()*1e6/float64(total), 100*(cpu1-cpu0).Seconds()/dur.Seconds())
		fmt.Printf(" rss=%s", rss(child))
		child.Process.Signal(syscall.SIGTERM)
		child.Wait()
	}
	fmt.Println()
}

func procCPU(c *exec.Cmd) time.Duration {
	if c == nil {
		return 0
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func rss(c *exec.Cmd) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS") {
			return strings.Join(strings.Fields(l)[1:], "")
		}
	}
	return "?"
}

func runProxies(app string) {
	dir, _ := os.MkdirTemp("", "benchca")
	defer os.RemoveAll(dir)
	td := spiffeid.RequireTrustDomainFromString("trellis.test")
	ca, _, err := identity.LoadOrCreateCA(dir, td, identity.CAOptions{})
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	for _, r := range ca.Roots() {
		roots.AddCert(r)
	}
	ident := func(sa string) *proxy.StaticIdentity {
		id := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", sa)
		c, err := ca.IssueServing(id, time.Hour, nil, nil)
		if err != nil {
			panic(err)
		}
		for _, i := range ca.Intermediates() {
			c.Certificate = append(c.Certificate, i.Raw)
		}
		return &proxy.StaticIdentity{SPIFFEID: id, Cert: c, Roots: roots}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	inL, _ := net.Listen("tcp", "127.0.0.1:0")
	catalog := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "catalog")
	snap := &proxy.Snapshot{Version: "1", MTLSMode: "STRICT", AuthzDefault: "allow", TrustBundle: roots, Services: map[string]*proxy.Service{
		"catalog.shop": {Name: "catalog", Namespace: "shop", Protocol: "http", IDs: map[spiffeid.ID]bool{catalog: true},
			Endpoints: []proxy.Endpoint{{Addr: inL.Addr().String(), ID: catalog}}},
	}}
	get := func() *proxy.Snapshot { return snap }
	in := proxy.NewInbound(proxy.DataPlaneConfig{Identity: ident("catalog"), Snapshot: get, Service: "catalog", Namespace: "shop", AppAddr: app, Logger: log, Metrics: proxy.NewMetrics()})
	out := proxy.NewOutbound(proxy.DataPlaneConfig{Identity: ident("frontend"), Snapshot: get, Service: "frontend", Namespace: "shop", Logger: log, Metrics: proxy.NewMetrics()})
	upL, _ := net.Listen("tcp", "127.0.0.1:0")
	go in.Serve(inL)
	go out.ServeUpstream(upL, "catalog.shop")
	fmt.Println(upL.Addr().String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	in.Shutdown(ctx)
	out.Shutdown(ctx)
}
