package h2relay

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzRelay feeds arbitrary frames (after a valid preface) to a
// downstream relay connection whose streams go to a real HTTP/2 server
// (x/net/http2 over an in-memory pipe), or get the proxy's own answer for
// the path /local. Whatever arrives, the relay must not panic, must end
// the connection when the input ends, and must not leave the upstream
// stuck.
func FuzzRelay(f *testing.F) {
	for _, seed := range relaySeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		runRelay(t, in)
	})
}

func runRelay(t *testing.T, in []byte) {
	upSrv := &http2.Server{}
	cfg := Config{IdleTimeout: time.Minute, WriteTimeout: 2 * time.Second}
	pool := NewPool(&cfg, func(context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		go upSrv.ServeConn(b, &http2.ServeConnOpts{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(w, io.LimitReader(r.Body, 1<<20))
		})})
		return a, nil
	})
	defer pool.CloseIdle(true)
	down, peer := net.Pipe()
	c := NewServerConn(down, nil, &cfg, fuzzHandler{pool})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run()
	}()
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	_ = peer.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, _ = peer.Write([]byte(http2.ClientPreface))
	_, _ = peer.Write(in)
	_ = peer.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay did not end after its input ended")
	}
}

type fuzzHandler struct{ pool *Pool }

func (h fuzzHandler) Route(req *Request) (*Conn, *Response, any) {
	if req.Path == "/local" {
		return nil, &Response{Status: 403, Body: "no\n"}, nil
	}
	up, err := h.pool.Get(context.Background())
	if err != nil {
		return nil, &Response{Status: 503, Body: err.Error()}, nil
	}
	return up, nil, nil
}

func (fuzzHandler) Done(*Result) {}

// relaySeeds are frame sequences a client sends: requests with and
// without bodies, trailers, resets, window updates, pings, priorities,
// settings, and a header block split over CONTINUATION.
func relaySeeds() [][]byte {
	var seeds [][]byte
	frames := func(write func(fr *http2.Framer, enc func(...hpack.HeaderField) []byte)) []byte {
		var buf, hb bytes.Buffer
		fr := http2.NewFramer(&buf, nil)
		he := hpack.NewEncoder(&hb)
		enc := func(fields ...hpack.HeaderField) []byte {
			hb.Reset()
			for _, f := range fields {
				_ = he.WriteField(f)
			}
			return append([]byte(nil), hb.Bytes()...)
		}
		write(fr, enc)
		return buf.Bytes()
	}
	req := func(path string) []hpack.HeaderField {
		return []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: path}, {Name: ":authority", Value: "x"}, {Name: "te", Value: "trailers"}}
	}
	seeds = append(seeds, frames(func(fr *http2.Framer, enc func(...hpack.HeaderField) []byte) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(req("/echo")...), EndHeaders: true})
		_ = fr.WriteData(1, false, []byte("hello"))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(hpack.HeaderField{Name: "x-trailer", Value: "1"}), EndHeaders: true, EndStream: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(req("/local")...), EndHeaders: true, EndStream: true})
	}))
	seeds = append(seeds, frames(func(fr *http2.Framer, enc func(...hpack.HeaderField) []byte) {
		_ = fr.WriteSettings()
		_ = fr.WriteWindowUpdate(0, 1<<20)
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(req("/a")...), EndHeaders: true})
		_ = fr.WritePing(false, [8]byte{1})
		_ = fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 10})
		_ = fr.WriteWindowUpdate(1, 1000)
		_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
		_ = fr.WriteData(1, true, []byte("late"))
		_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}))
	seeds = append(seeds, frames(func(fr *http2.Framer, enc func(...hpack.HeaderField) []byte) {
		block := enc(append(req("/split"), hpack.HeaderField{Name: "x-long", Value: string(bytes.Repeat([]byte{'v'}, 300))})...)
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:10]})
		_ = fr.WriteContinuation(1, false, block[10:100])
		_ = fr.WriteContinuation(1, true, block[100:])
		_ = fr.WriteDataPadded(1, true, []byte("body"), []byte{0, 0, 0})
	}))
	return seeds
}

// TestRelaySeeds runs the fuzz seeds as a plain test (make test does not
// fuzz; make fuzz does).
func TestRelaySeeds(t *testing.T) {
	for _, s := range relaySeeds() {
		runRelay(t, s)
	}
}
