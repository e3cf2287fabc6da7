package capture

import (
	"testing"
)

func TestSniff(t *testing.T) {
	tests := []struct {
		in   string
		want sniffResult
	}{
		{"", sniffMore},
		{"G", sniffMore},
		{"GET", sniffMore},
		{"GET ", sniffMore},
		{"GET /items?x=1", sniffMore},
		{"GET /items HTTP/1.", sniffMore},
		{"GET /items HTTP/1.1\r", sniffMore},
		{"GET /items HTTP/1.1\r\n", sniffHTTP},
		{"POST / HTTP/1.0\r\nHost: x\r\n\r\n", sniffHTTP},
		{"PROPFIND /dav HTTP/1.1\r\n", sniffHTTP},
		{"PRI * HTTP/2.0\r\n", sniffMore},
		{h2Preface, sniffHTTP},
		{h2Preface + "\x00\x00\x12\x04", sniffHTTP},
		{"PRI * HTTP/2.0\r\n\r\nXX", sniffOpaque},
		{"\x16\x03\x01\x02\x00", sniffOpaque},             // TLS ClientHello
		{"\x00\x00\x00\x08\x04\xd2\x16\x2f", sniffOpaque}, // PostgreSQL SSLRequest
		{"*1\r\n$4\r\nPING\r\n", sniffOpaque},             // Redis
		{"get / HTTP/1.1\r\n", sniffOpaque},
		{"GET  / HTTP/1.1\r\n", sniffOpaque},
		{"GET /\x01 HTTP/1.1\r\n", sniffOpaque},
		{"GET / HTTP/2\r\n", sniffOpaque},
		{"GET / SPDY/1.1\r\n", sniffOpaque},
		{"ABCDEFGHIJKLMNOPQRSTUVWXYZ ", sniffOpaque},
		{"SSH-2.0-OpenSSH_9.6\r\n", sniffOpaque},
	}
	for _, tt := range tests {
		if got := sniff([]byte(tt.in)); got != tt.want {
			t.Errorf("sniff(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
