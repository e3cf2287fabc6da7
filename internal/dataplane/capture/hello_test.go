package capture

import (
	"bytes"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"
)

// clientHello returns the first bytes a crypto/tls client sends to
// serverName ("" for none).
func clientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == ""})
		_ = c.Handshake()
	}()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	_ = b.Close()
	return buf[:n]
}

// sniffBytes runs SniffHost over a connection that sends b and then
// waits (as a client waiting for the server's answer does).
func sniffBytes(t *testing.T, b []byte) Hello {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() { _, _ = client.Write(b) }()
	h, err := SniffHost(server, 2*time.Second)
	if err != nil {
		t.Fatalf("SniffHost(%q): %v", b, err)
	}
	return h
}

func TestSniffHost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    []byte
		proto string
		host  string
	}{
		{"tls sni", clientHello(t, "api.psp.example"), HelloTLS, "api.psp.example"},
		{"tls no sni", clientHello(t, ""), HelloTLS, ""},
		{"http/1.1", []byte("GET /x HTTP/1.1\r\nHost: api.psp.example:8080\r\nUser-Agent: t\r\n\r\n"), HelloHTTP, "api.psp.example:8080"},
		{"http/1.1 body", []byte("POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\nabc"), HelloHTTP, "a.example"},
		{"http/1.0 no host", []byte("GET / HTTP/1.0\r\n\r\n"), HelloHTTP, ""},
		{"http/1.0 host", []byte("GET / HTTP/1.0\r\nHost: b.example\r\n\r\n"), HelloHTTP, "b.example"},
		{"absolute form", []byte("GET http://abs.example/x HTTP/1.1\r\nHost: other.example\r\n\r\n"), HelloHTTP, "abs.example"},
		{"expect", []byte("PUT /x HTTP/1.1\r\nHost: e.example\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"), HelloHTTP, "e.example"},
		{"two hosts", []byte("GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"), "", ""},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.2\r\n"), "", ""},
		{"binary", []byte{0, 1, 2, 3}, "", ""},
		{"bad tls", []byte{0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0}, HelloTLS, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := sniffBytes(t, tc.in)
			if h.Proto != tc.proto || h.Host != tc.host {
				t.Errorf("got proto %q host %q, want %q %q", h.Proto, h.Host, tc.proto, tc.host)
			}
			if !bytes.HasPrefix(tc.in, h.Prefix) || len(h.Prefix) == 0 {
				t.Errorf("prefix %q is not a non-empty prefix of what was sent", h.Prefix)
			}
			if tc.proto == HelloTLS && tc.name != "bad tls" && !bytes.Equal(h.Prefix, tc.in) {
				t.Errorf("prefix holds %d of the hello's %d bytes", len(h.Prefix), len(tc.in))
			}
		})
	}
}

// A client that sends part of a hello and stalls names no host once the
// timeout passes, and its bytes are kept.
func TestSniffHostTimeout(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	hello := clientHello(t, "slow.example")
	go func() { _, _ = client.Write(hello[:10]) }()
	start := time.Now()
	h, err := SniffHost(server, 100*time.Millisecond)
	if err != nil || h.Host != "" || !bytes.Equal(h.Prefix, hello[:10]) {
		t.Errorf("got %+v, %v; want no host, the 10 bytes sent", h, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	// Nothing at all: an error.
	c2, s2 := net.Pipe()
	c2.Close()
	if _, err := SniffHost(s2, 100*time.Millisecond); err == nil {
		t.Error("closed before any byte: want an error")
	}
}

// The hello limit holds for a head that never ends.
func TestSniffHostBounded(t *testing.T) {
	r := &replayReader{r: strings.NewReader("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 1<<20)), max: maxHello}
	h, _ := sniffHost(r)
	if h.Host != "" || len(r.buf) > maxHello {
		t.Errorf("got host %q after %d bytes, want none within %d", h.Host, len(r.buf), maxHello)
	}
}

// FuzzSniffHost feeds arbitrary first bytes (seeded with real hellos and
// heads) through the SNI and Host extraction: it must not panic, must
// read at most maxHello bytes, and what it keeps must be what was read.
// The ClientHello seeds are 1.5 KB, so minimizing what the fuzzer finds
// takes its default minute each: make fuzz gives -fuzzminimizetime 1s.
func FuzzSniffHost(f *testing.F) {
	f.Add(clientHello(f, "api.psp.example"))
	f.Add(clientHello(f, ""))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"))
	f.Add([]byte("GET http://x/ HTTP/1.0\r\n\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &replayReader{r: bytes.NewReader(b), max: maxHello}
		h, err := sniffHost(r)
		if len(r.buf) > maxHello || !bytes.HasPrefix(b, r.buf) {
			t.Fatalf("kept %d bytes that are not a prefix of the input", len(r.buf))
		}
		if err != nil && len(b) > 0 {
			t.Fatalf("error %v with %d bytes to read", err, len(b))
		}
		if h.Host != "" && h.Proto == "" {
			t.Fatalf("host %q without a protocol", h.Host)
		}
	})
}
