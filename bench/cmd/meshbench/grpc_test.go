package main

import (
	"bytes"
	"net"
	"testing"
	"time"
)

func TestRawCodec(t *testing.T) {
	var c rawCodec
	in := []byte("hello")
	data, err := c.Marshal(&in)
	if err != nil || string(data) != "hello" {
		t.Fatalf("Marshal = %q, %v", data, err)
	}
	var out []byte
	if err := c.Unmarshal(data, &out); err != nil || string(out) != "hello" {
		t.Fatalf("Unmarshal = %q, %v", out, err)
	}
	// The result must not alias gRPC's buffer.
	data[0] = 'j'
	if string(out) != "hello" {
		t.Errorf("Unmarshal aliases its input: %q", out)
	}
	if _, err := c.Marshal("x"); err == nil {
		t.Error("Marshal(string) did not fail")
	}
	if err := c.Unmarshal(data, new(string)); err == nil {
		t.Error("Unmarshal into *string did not fail")
	}
}

// TestGRPCUpstream makes unary calls the way `meshbench load -grpc` does
// against the upstream `meshbench upstream -grpc` serves.
func TestGRPCUpstream(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	body := payload(1024)
	srv := newGRPCUpstream(body)
	go srv.Serve(l)
	defer srv.Stop()

	g, err := dialGRPC(l.Addr().String(), 1024, 1024, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	for range 3 {
		if err := g.do(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g.resp, body) {
			t.Fatalf("response %q..., want the payload", g.resp[:min(len(g.resp), 16)])
		}
	}
	g.body = 1000
	if err := g.do(); err == nil {
		t.Error("a response of the wrong size did not count as an error")
	}

	w := &loadWorker{conn: g}
	g.body = 1024
	now := time.Now()
	w.runClosed(now, now, now.Add(100*time.Millisecond))
	if len(w.lat) == 0 || w.errors != 0 {
		t.Errorf("closed loop over gRPC: %d calls, %d errors", len(w.lat), w.errors)
	}
}

// TestGRPCStreamUpstream exchanges messages the way `meshbench load
// -grpc-stream` does on the upstream's bidirectional Stream method.
func TestGRPCStreamUpstream(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newGRPCUpstream(payload(10))
	go srv.Serve(l)
	defer srv.Stop()

	s, err := dialGRPCStream(l.Addr().String(), 300, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	for i := range 300 {
		if err := s.do(); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(s.g.resp, s.g.req) {
			t.Fatalf("message %d: echo %q..., want the message", i, s.g.resp[:min(len(s.g.resp), 16)])
		}
	}
	// A wrong size counts as an error, and the next message goes on a
	// new stream.
	s.g.body = 299
	if err := s.do(); err == nil {
		t.Error("an echo of the wrong size did not count as an error")
	}
	s.g.body = 300
	w := &loadWorker{conn: s}
	now := time.Now()
	w.runClosed(now, now, now.Add(100*time.Millisecond))
	if len(w.lat) == 0 || w.errors != 0 {
		t.Errorf("closed loop on a stream: %d messages, %d errors", len(w.lat), w.errors)
	}
}
