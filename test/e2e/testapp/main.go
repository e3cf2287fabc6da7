// Command testapp is the unmodified application of the transparent-mode
// tests: it knows nothing of the mesh.
//
//	testapp serve HTTP_ADDR [TCP_ADDR]   HTTP: answers "NAME caller=<XFCC URI>"; TCP: echo
//	testapp get URL                      prints the body, exits 1 on a non-2xx answer
//	testapp echo HOST:PORT MESSAGE       sends MESSAGE over TCP and prints what comes back
//
// NAME comes from $TESTAPP_NAME.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
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
		err := http.ListenAndServe(os.Args[2], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
