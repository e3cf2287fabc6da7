package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// upstreamMain serves GET / with a fixed body of -body bytes.
func upstreamMain(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	size := fs.Int("body", 1024, "response body size")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body := make([]byte, *size)
	for i := range body {
		body[i] = 'a' + byte(i%26)
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
