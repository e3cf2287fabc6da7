package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// upstreamMain serves GET / with a fixed body of -body bytes, or with
// -grpc the unary method meshbench.Bench/Unary answering -body bytes.
func upstreamMain(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	size := fs.Int("body", 1024, "response body size")
	useGRPC := fs.Bool("grpc", false, "serve gRPC (h2c) instead of HTTP/1.1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body := payload(*size)
	if *useGRPC {
		return serveGRPC(*addr, body)
	}
	clen := fmt.Sprint(len(body))
	srv := &http.Server{
		Addr: *addr,
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			h := rw.Header()
			h["Content-Type"] = []string{"application/octet-stream"}
			h["Content-Length"] = []string{clen}
			rw.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	return srv.ListenAndServe()
}
