// Command testapp is the unmodified application of the transparent-mode
// tests: it knows nothing of the mesh.
//
//	testapp serve HTTP_ADDR [TCP_ADDR]   HTTP: answers "NAME caller=<XFCC URI>"; TCP: echo
//	testapp serve-tls ADDR CERT KEY      HTTPS: answers "NAME sni=<SNI> host=<Host>"
//	testapp get URL                      prints the body, exits 1 on a non-2xx answer
//	testapp echo HOST:PORT MESSAGE       sends MESSAGE over TCP and prints what comes back
//	testapp load URL N CONC NAME [CA]    N GETs, CONC at a time, each on a new connection, with
//	                                     Host NAME (http) or SNI NAME trusting CA (https); prints
//	                                     "ok=X fail=Y codes=... err=FIRST_ERROR", exits 0
//
// NAME comes from $TESTAPP_NAME. Every server counts the requests it
// answered by protocol, host and port; GET /__counts returns them as JSON.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: testapp serve HTTP_ADDR [TCP_ADDR] | get URL | echo HOST:PORT MESSAGE")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		if len(os.Args) > 3 {
			go serveEcho(os.Args[3])
		}
		name := os.Getenv("TESTAPP_NAME")
		err := http.ListenAndServe(os.Args[2], counting(func(w http.ResponseWriter, r *http.Request) {
			caller := "none"
			if x := r.Header.Get("X-Forwarded-Client-Cert"); x != "" {
				if _, uri, ok := strings.Cut(x, "URI="); ok {
					caller = uri
				}
			}
			fmt.Fprintf(w, "%s caller=%s path=%s\n", name, caller, r.URL.Path)
		}))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	case "serve-tls":
		name := os.Getenv("TESTAPP_NAME")
		srv := &http.Server{Addr: os.Args[2], Handler: counting(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s sni=%s host=%s\n", name, r.TLS.ServerName, r.Host)
		})}
		fmt.Fprintln(os.Stderr, srv.ListenAndServeTLS(os.Args[3], os.Args[4]))
		os.Exit(1)
	case "load":
		load(os.Args[2:])
	case "get":
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer resp.Body.Close()
		io.Copy(os.Stdout, resp.Body)
		if resp.StatusCode/100 != 2 {
			fmt.Fprintln(os.Stderr, resp.Status)
			os.Exit(1)
		}
	case "echo":
		c, err := net.DialTimeout("tcp", os.Args[2], 10*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := os.Args[3] + "\n"
		io.WriteString(c, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.Write(buf)
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func serveEcho(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); io.Copy(c, c) }()
	}
}

var (
	countsMu sync.Mutex
	counts   = map[string]int{}
)

// counting counts each request by protocol, host (SNI for TLS) and local
// port, and serves the counts at /__counts.
func counting(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/__counts" {
			countsMu.Lock()
			defer countsMu.Unlock()
			json.NewEncoder(w).Encode(counts)
			return
		}
		_, port, _ := net.SplitHostPort(r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
		key := "http " + r.Host + " " + port
		if r.TLS != nil {
			key = "tls " + r.TLS.ServerName + " " + port
		}
		countsMu.Lock()
		counts[key]++
		countsMu.Unlock()
		h(w, r)
	})
}

// load runs `testapp load URL N CONC NAME [CA]`.
func load(args []string) {
	if len(args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: testapp load URL N CONC NAME [CA]")
		os.Exit(2)
	}
	url, name := args[0], args[3]
	n, _ := strconv.Atoi(args[1])
	conc, _ := strconv.Atoi(args[2])
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{ServerName: name}}
	if len(args) > 4 {
		pem, err := os.ReadFile(args[4])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		tr.TLSClientConfig.RootCAs = x509.NewCertPool()
		tr.TLSClientConfig.RootCAs.AppendCertsFromPEM(pem)
	}
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	var (
		mu       sync.Mutex
		ok, fail int
		codes    = map[int]int{}
		firstErr string
		wg       sync.WaitGroup
	)
	next := make(chan struct{})
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = name
				resp, err := client.Do(req)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				switch {
				case err != nil:
					fail++
					if firstErr == "" {
						firstErr = err.Error()
					}
				default:
					codes[resp.StatusCode]++
					if resp.StatusCode == 200 {
						ok++
					} else {
						fail++
						if firstErr == "" {
							firstErr = resp.Status + ": " + strings.TrimSpace(string(body))
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	var cs []string
	for c, k := range codes {
		cs = append(cs, fmt.Sprintf("%d:%d", c, k))
	}
	sort.Strings(cs)
	fmt.Printf("ok=%d fail=%d codes=%s err=%s\n", ok, fail, strings.Join(cs, ","), firstErr)
}
