package dataplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

// HTTP/2 abuse against both relay listeners (the client proxy's h2c
// upstream listener and the server proxy's mTLS inbound): each attack must
// end in a bounded way, and a well-behaved caller running beside it must
// see no failure.

// rawH2 is a hand-driven HTTP/2 client connection.
type rawH2 struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	// frames are what the proxy sent, read by a goroutine (nil when the
	// test reads nothing).
	goAway    chan http2.ErrCode
	refused   atomic.Int64
	maxStream atomic.Uint32
	closed    chan struct{}
}

// dialH2Raw connects to the listener of the named side and sends the
// preface and settings; read says whether a goroutine reads what comes
// back.
func dialH2Raw(t *testing.T, m *mesh, side string, read bool, settings ...http2.Setting) *rawH2 {
	t.Helper()
	var c net.Conn
	var err error
	if side == "outbound" {
		c, err = net.Dial("tcp", m.upstreamAddr)
	} else {
		cert := m.pki.cert(frontendID)
		c, err = tls.Dial("tcp", m.inboundAddr, &tls.Config{Certificates: []tls.Certificate{*cert}, InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := &rawH2{t: t, c: c, fr: http2.NewFramer(c, c), goAway: make(chan http2.ErrCode, 1), closed: make(chan struct{})}
	r.enc = hpack.NewEncoder(&r.hbuf)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	if read {
		go r.readLoop()
	}
	return r
}

func (r *rawH2) readLoop() {
	defer close(r.closed)
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			select {
			case r.goAway <- f.ErrCode:
			default:
			}
		case *http2.RSTStreamFrame:
			if f.ErrCode == http2.ErrCodeRefusedStream {
				r.refused.Add(1)
			}
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
				r.maxStream.Store(v)
			}
		}
	}
}

// headers writes a gRPC request head for method on stream id.
func (r *rawH2) headers(id uint32, method string, endStream bool, extra ...hpack.HeaderField) error {
	r.hbuf.Reset()
	for _, f := range append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: method}, {Name: ":authority", Value: "catalog.shop"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, extra...) {
		_ = r.enc.WriteField(f)
	}
	return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: endStream, EndHeaders: true})
}

// expectGoAway waits for a GOAWAY with code, or the connection closing
// when code is 0 and any end will do.
func (r *rawH2) expectGoAway(code http2.ErrCode) {
	r.t.Helper()
	select {
	case got := <-r.goAway:
		if got != code {
			r.t.Fatalf("GOAWAY %v, want %v", got, code)
		}
	case <-r.closed:
		select {
		case got := <-r.goAway:
			if got != code {
				r.t.Fatalf("GOAWAY %v, want %v", got, code)
			}
		default:
			r.t.Fatalf("the connection closed without GOAWAY %v", code)
		}
	case <-time.After(10 * time.Second):
		r.t.Fatalf("no GOAWAY %v within 10s", code)
	}
}

// bystander makes calls on its own connection until stop, counting
// failures.
func bystander(t *testing.T, m *mesh) (stop func()) {
	cc := confClient(t, m.upstreamAddr)
	ctx, cancel := context.WithCancel(context.Background())
	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := echo(cctx, cc, []byte("bystander"))
				ccancel()
				if err != nil && ctx.Err() == nil {
					if failed.Add(1) < 3 {
						t.Errorf("bystander call: %v", err)
					}
				}
				calls.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	var once sync.Once
	end := func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(end)
	return func() {
		t.Helper()
		time.Sleep(200 * time.Millisecond) // calls after the attack too
		end()
		if failed.Load() != 0 || calls.Load() < 20 {
			t.Fatalf("bystander: %d of %d calls failed", failed.Load(), calls.Load())
		}
	}
}

// grpcFrame is one length-prefixed gRPC message.
func grpcFrame(msg []byte) []byte {
	b := []byte{0, byte(len(msg) >> 24), byte(len(msg) >> 16), byte(len(msg) >> 8), byte(len(msg))}
	return append(b, msg...)
}

func TestHTTP2Abuse(t *testing.T) {
	appAddr, app := startConfApp(t)
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: appAddr})

	for _, side := range []string{"outbound", "inbound"} {
		t.Run(side, func(t *testing.T) {
			t.Run("rapid reset", func(t *testing.T) {
				done := bystander(t, m)
				r := dialH2Raw(t, m, side, true)
				for id := uint32(1); id < 6000; id += 2 {
					if r.headers(id, "/trellis.test.Conformance/Wait", false) != nil || r.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
						break
					}
				}
				r.expectGoAway(http2.ErrCodeEnhanceYourCalm)
				done()
			})

			t.Run("CONTINUATION flood", func(t *testing.T) {
				done := bystander(t, m)
				r := dialH2Raw(t, m, side, true)
				_ = r.headers(1, "/trellis.test.Conformance/Echo", false)
				// A HEADERS without END_HEADERS, then endless CONTINUATION.
				r.hbuf.Reset()
				_ = r.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
				_ = r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: r.hbuf.Bytes()})
				junk := make([]byte, 16<<10)
				for i := range junk {
					junk[i] = 'a'
				}
				r.hbuf.Reset()
				_ = r.enc.WriteField(hpack.HeaderField{Name: "x-junk", Value: string(junk[:8000])})
				block := r.hbuf.Bytes()
				sent := 0
				for sent < 64<<20 {
					if err := r.fr.WriteContinuation(3, false, block); err != nil {
						break
					}
					sent += len(block)
				}
				<-r.closed
				if sent >= 64<<20 {
					t.Fatalf("the proxy took %d bytes of CONTINUATION without closing", sent)
				}
				t.Logf("closed after %d KiB of CONTINUATION", sent>>10)
				done()
			})

			floods := []struct {
				name string
				send func(r *rawH2, i int) error
			}{
				{"SETTINGS flood", func(r *rawH2, _ int) error { return r.fr.WriteSettings() }},
				{"PING flood", func(r *rawH2, i int) error { return r.fr.WritePing(false, [8]byte{byte(i)}) }},
				{"PRIORITY flood", func(r *rawH2, i int) error {
					return r.fr.WritePriority(uint32(2*i+1), http2.PriorityParam{Weight: 1})
				}},
				{"empty DATA flood", func(r *rawH2, i int) error {
					if i == 0 {
						if err := r.headers(1, "/trellis.test.Conformance/Sum", false); err != nil {
							return err
						}
					}
					return r.fr.WriteData(1, false, nil)
				}},
			}
			for _, fl := range floods {
				t.Run(fl.name, func(t *testing.T) {
					done := bystander(t, m)
					r := dialH2Raw(t, m, side, true)
					for i := range 20000 {
						if fl.send(r, i) != nil {
							break
						}
					}
					r.expectGoAway(http2.ErrCodeEnhanceYourCalm)
					done()
				})
			}

			t.Run("header list bomb", func(t *testing.T) {
				done := bystander(t, m)
				r := dialH2Raw(t, m, side, false)
				// 200 fields of 1 KiB, each a new entry, far past the 60 KiB
				// limit: the proxy answers 431 or closes, and stays up.
				var extra []hpack.HeaderField
				for i := range 200 {
					extra = append(extra, hpack.HeaderField{Name: "x-bomb-" + strings.Repeat("b", 3) + string(rune('a'+i%26)) + string(rune('a'+i/26)), Value: strings.Repeat("v", 1024)})
				}
				r.hbuf.Reset()
				for _, f := range append([]hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: "/trellis.test.Conformance/Echo"}, {Name: ":authority", Value: "x"}}, extra...) {
					_ = r.enc.WriteField(f)
				}
				block := r.hbuf.Bytes()
				first := true
				for len(block) > 0 {
					n := min(len(block), 16384)
					var err error
					if first {
						err = r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:n], EndStream: true, EndHeaders: n == len(block)})
						first = false
					} else {
						err = r.fr.WriteContinuation(1, n == len(block), block[:n])
					}
					if err != nil {
						break
					}
					block = block[n:]
				}
				got := readUntil(t, r, func(f http2.Frame) bool {
					if h, ok := f.(*http2.MetaHeadersFrame); ok {
						return h.PseudoValue("status") == "431"
					}
					return false
				})
				if got != "match" && got != "closed" {
					t.Fatalf("header list bomb: %s", got)
				}
				done()
			})

			t.Run("HPACK table size beyond the advertised", func(t *testing.T) {
				r := dialH2Raw(t, m, side, false)
				// A dynamic table size update to 1 MiB, over the 4096 the
				// proxy allows: a COMPRESSION_ERROR.
				enc := hpack.NewEncoder(&r.hbuf)
				enc.SetMaxDynamicTableSizeLimit(1 << 20)
				enc.SetMaxDynamicTableSize(1 << 20)
				r.hbuf.Reset()
				_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
				_ = r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.hbuf.Bytes(), EndStream: true, EndHeaders: true})
				got := readUntil(t, r, func(f http2.Frame) bool {
					g, ok := f.(*http2.GoAwayFrame)
					return ok && g.ErrCode == http2.ErrCodeCompression
				})
				if got != "match" {
					t.Fatalf("oversized table: %s", got)
				}
			})

			t.Run("more streams than advertised", func(t *testing.T) {
				done := bystander(t, m)
				before := app.cancelled.Load()
				r := dialH2Raw(t, m, side, true)
				body := grpcFrame(nil)
				for id := uint32(1); id < 2*300; id += 2 {
					if r.headers(id, "/trellis.test.Conformance/Wait", false) != nil || r.fr.WriteData(id, false, body) != nil {
						break
					}
				}
				testutil.Eventually(t, "50 refused streams", func() bool { return r.refused.Load() >= 50 })
				if max := r.maxStream.Load(); max == 0 || max > 250 {
					t.Errorf("advertised MAX_CONCURRENT_STREAMS %d", max)
				}
				_ = r.c.Close()
				// The 250 taken reach the app, which sees each cancelled.
				testutil.Eventually(t, "the app to see the streams end", func() bool { return app.cancelled.Load()-before >= 250 })
				done()
			})

			t.Run("zero window and a socket nobody reads", func(t *testing.T) {
				done := bystander(t, m)
				before := app.floodSent.Load()
				// One caller grants no window at all; another grants 2 GiB
				// and then never reads its socket.
				zero := dialH2Raw(t, m, side, true, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
				deaf := dialH2Raw(t, m, side, false, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
				_ = deaf.fr.WriteWindowUpdate(0, 1<<31-1-65535)
				for _, r := range []*rawH2{zero, deaf} {
					for id := uint32(1); id <= 15; id += 2 {
						_ = r.headers(id, "/trellis.test.Conformance/Flood", false)
						_ = r.fr.WriteData(id, true, grpcFrame(nil))
					}
				}
				time.Sleep(1500 * time.Millisecond)
				held := app.floodSent.Load() - before
				// Per stalled stream at most the windows on the way; the
				// deaf socket is capped by what it has not acknowledged.
				if held > 48<<20 {
					t.Fatalf("the app sent %d MiB to callers that read nothing", held>>20)
				}
				t.Logf("the app sent %d KiB to 16 stalled streams", held>>10)
				done()
			})
		})
	}
}

// readUntil reads frames until match says so ("match"), the connection
// closes ("closed") or 10 s pass.
func readUntil(t *testing.T, r *rawH2, match func(http2.Frame) bool) string {
	t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return "timeout"
			}
			return "closed"
		}
		if match(f) {
			return "match"
		}
	}
}
