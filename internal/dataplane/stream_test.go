package dataplane_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/testutil"
)

// The streaming tests move 64 MiB each way and hold the sender at a gate
// after the first MiB until the receiver has seen that MiB: a proxy that
// buffered the whole body would never open the gate, and the transfer
// fails at the gate's timeout instead of passing.
const (
	streamSize = 64 << 20
	gateAt     = 1 << 20
	gateWait   = 20 * time.Second
)

// streamSource yields size deterministic pseudo-random bytes for seed.
func streamSource(seed uint64, size int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), 1, 2, 3}), size)
}

func streamDigest(seed uint64, size int64) string {
	h := sha256.New()
	if _, err := io.Copy(h, streamSource(seed, size)); err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// gatedReader stops after gateAt bytes until gate closes.
type gatedReader struct {
	src  io.Reader
	n    int64
	gate <-chan struct{}
	open bool
}

var errGateTimeout = errors.New("gate never opened: the receiver did not get the first MiB while the rest was held back (is the proxy buffering the body?)")

func (r *gatedReader) Read(p []byte) (int, error) {
	if !r.open && r.n >= gateAt {
		select {
		case <-r.gate:
			r.open = true
		case <-time.After(gateWait):
			return 0, errGateTimeout
		}
	}
	if !r.open && int64(len(p)) > gateAt-r.n {
		p = p[:gateAt-r.n]
	}
	n, err := r.src.Read(p)
	r.n += int64(n)
	return n, err
}

// countingHasher hashes a stream and closes gate once gateAt bytes passed.
type countingHasher struct {
	h    hash.Hash
	n    int64
	once sync.Once
	gate chan struct{}
}

func newCountingHasher() *countingHasher {
	return &countingHasher{h: sha256.New(), gate: make(chan struct{})}
}

func (c *countingHasher) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	if c.n >= gateAt {
		c.once.Do(func() { close(c.gate) })
	}
	return len(p), nil
}

func (c *countingHasher) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

func TestLargeStreamingUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 64 MiB")
	}
	received := newCountingHasher()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(received, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Received", strconv.FormatInt(n, 10))
		_, _ = io.WriteString(w, received.sum())
	})
	m := newMesh(t, meshOptions{app: app})
	body := &gatedReader{src: streamSource(1, streamSize), gate: received.gate}
	req, _ := http.NewRequest(http.MethodPost, m.url("/upload"), body) // unknown length: chunked
	resp, got := testutil.Do(t, testutil.HTTPClient(t), req)
	want := streamDigest(1, streamSize)
	if resp.StatusCode != http.StatusOK || got != want {
		t.Fatalf("upload: got %d, app received %s bytes with sha256 %s; want 200, %d bytes with sha256 %s", resp.StatusCode, resp.Header.Get("X-Received"), got, streamSize, want)
	}
}

func TestLargeStreamingDownload(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 64 MiB")
	}
	clientGot := newCountingHasher()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(streamSize))
		src := &gatedReader{src: streamSource(2, streamSize), gate: clientGot.gate}
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				if src.n == gateAt {
					w.(http.Flusher).Flush()
				}
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Errorf("app: %v", err)
				panic(http.ErrAbortHandler)
			}
		}
	})
	m := newMesh(t, meshOptions{app: app})
	resp, err := testutil.HTTPClient(t).Get(m.url("/download"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(clientGot, resp.Body)
	if err != nil {
		t.Fatalf("download: after %d bytes: %v", n, err)
	}
	if want := streamDigest(2, streamSize); n != streamSize || clientGot.sum() != want {
		t.Fatalf("download: got %d bytes with sha256 %s, want %d with %s", n, clientGot.sum(), streamSize, want)
	}
	if resp.ContentLength != streamSize {
		t.Errorf("download: Content-Length %d, want %d", resp.ContentLength, streamSize)
	}
}

// TestStreamingBothWays echoes a body while it is still being uploaded: the
// first bytes must come back before the rest is sent.
func TestStreamingBothWays(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			t.Errorf("app: %v", err)
		}
		w.WriteHeader(http.StatusOK)
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
	for _, h2c := range []bool{false, true} {
		t.Run("h2c="+strconv.FormatBool(h2c), func(t *testing.T) {
			m := newMesh(t, meshOptions{app: app})
			c := testutil.HTTPClient(t)
			if h2c {
				c = testutil.H2CClient(t)
			}
			echoed := newCountingHasher()
			const size = 4 << 20
			body := &gatedReader{src: streamSource(3, size), gate: echoed.gate}
			req, _ := http.NewRequest(http.MethodPost, m.url("/echo"), body)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			n, err := io.Copy(echoed, resp.Body)
			if err != nil {
				t.Fatalf("echo: after %d bytes: %v", n, err)
			}
			if want := streamDigest(3, size); n != size || echoed.sum() != want {
				t.Fatalf("echo: got %d bytes with sha256 %s, want %d with %s", n, echoed.sum(), size, want)
			}
		})
	}
}
