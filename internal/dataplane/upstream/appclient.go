package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/relay"
)

// AppClient is the inbound side's fast path to an HTTP/1.1 app for
// requests without a body (most traffic). It writes the request and reads
// the response in the handler's goroutine on a pooled keep-alive
// connection, where net/http's Transport hands each request to a writer
// goroutine and each response back from a reader goroutine. Requests with
// a body, which may stream both ways at once, take the Transport.
type AppClient struct {
	// pool is the inbound side's pool of app connections, shared with
	// the HTTP/1.1 fast path.
	pool     *Pool
	fallback http.RoundTripper
}

type appConn struct {
	*Conn
	// stop unregisters the current request's cancellation; false means it
	// already fired and closed c.
	stop func() bool
}

// NewAppClient sends bodyless requests over pool and the rest through
// fallback (net/http's Transport to the same app).
func NewAppClient(pool *Pool, fallback http.RoundTripper) *AppClient {
	return &AppClient{pool: pool, fallback: fallback}
}

// RoundTrip implements http.RoundTripper for requests built by
// relay.NewOutRequest.
func (a *AppClient) RoundTrip(req *http.Request) (*http.Response, error) {
	if !relay.Bodyless(req) {
		return a.fallback.RoundTrip(req)
	}
	for attempt := 0; ; attempt++ {
		pc, reused, err := a.get(req.Context())
		if err != nil {
			return nil, err
		}
		// Closing the connection is how a canceled request (the caller
		// went away) stops waiting for the app.
		c := pc.C
		pc.stop = context.AfterFunc(req.Context(), func() { closeQuietly(c) })
		resp, err := a.exchange(pc, req)
		if err == nil {
			return resp, nil
		}
		pc.stop()
		closeQuietly(pc.C)
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		// A kept-alive connection the app closed while idle fails before
		// any response byte: replay once on a fresh one when that is safe.
		if reused && attempt == 0 && errors.Is(err, errNothingRead) && replayable(req) {
			continue
		}
		return nil, err
	}
}

var errNothingRead = errors.New("app closed the connection before responding")

// checkIdleAfter: a connection idle longer than this is checked before
// reuse. Apps close idle keep-alive connections after a few seconds
// (Node.js: 5s); a busy pool never pays for the check.
const checkIdleAfter = time.Second

func (a *AppClient) exchange(pc *appConn, req *http.Request) (*http.Response, error) {
	if err := writeRequestHead(pc.BW, req); err != nil {
		return nil, err
	}
	if err := pc.BW.Flush(); err != nil {
		return nil, errNothingRead
	}
	for {
		// Peek first: ReadResponse reports a connection closed before any
		// byte as io.ErrUnexpectedEOF, like one closed half-way.
		if _, err := pc.BR.Peek(1); err != nil {
			if err == io.EOF || errors.Is(err, syscall.ECONNRESET) {
				return nil, errNothingRead
			}
			return nil, err
		}
		resp, err := http.ReadResponse(pc.BR, req)
		if err != nil {
			return nil, err
		}
		// 1xx answers (103 Early Hints, a stray 100 Continue) precede
		// the real one; 101 never reaches this path (no Upgrade).
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			continue
		}
		reuse := !resp.Close
		if resp.Body == http.NoBody {
			a.release(pc, reuse)
			return resp, nil
		}
		resp.Body = &appBody{rc: resp.Body, a: a, pc: pc, reuse: reuse}
		return resp, nil
	}
}

// replayable: no body, and a method that may be sent twice, as net/http's
// Transport decides.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, k1 := req.Header["Idempotency-Key"]
	_, k2 := req.Header["X-Idempotency-Key"]
	return k1 || k2
}

// writeRequestHead writes a bodyless HTTP/1.1 request: the caller's
// method, target, Host and headers (no User-Agent is made up).
func writeRequestHead(w *bufio.Writer, req *http.Request) error {
	target := req.URL.RequestURI()
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	if !validHeaderValue(req.Host) {
		return errors.New("invalid Host")
	}
	w.WriteString(req.Host)
	w.WriteString("\r\n")
	for k, vv := range req.Header {
		if k == "Content-Length" {
			continue // written below from what the body really is
		}
		for _, v := range vv {
			// The servers in front validated these already; this guards
			// against request smuggling should that ever change.
			if !validHeaderValue(v) || !validHeaderValue(k) {
				return errors.New("invalid header " + strconv.Quote(k))
			}
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	// As net/http does: a bodyless request other than GET or HEAD says
	// so, since some servers insist on a length for POST and PUT.
	if method != http.MethodGet && method != http.MethodHead {
		w.WriteString("Content-Length: 0\r\n")
	}
	_, err := w.WriteString("\r\n")
	return err
}

func validHeaderValue(v string) bool {
	return strings.IndexByte(v, '\n') < 0 && strings.IndexByte(v, '\r') < 0
}

// Get returns an idle connection (reused=true) or dials a new one.
func (a *AppClient) get(ctx context.Context) (*appConn, bool, error) {
	uc, reused, err := a.pool.Get(ctx)
	if err != nil {
		return nil, false, err
	}
	return &appConn{Conn: uc}, reused, nil
}

func (a *AppClient) release(pc *appConn, reuse bool) {
	if !pc.stop() || !reuse {
		closeQuietly(pc.C)
		return
	}
	a.pool.Put(pc.Conn)
}

// appBody returns its connection to the pool once the body is read to
// the end, and closes it if the body is abandoned half-way.
type appBody struct {
	rc    io.ReadCloser
	a     *AppClient
	pc    *appConn
	reuse bool
	done  bool
}

func (b *appBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.done = true
		b.a.release(b.pc, b.reuse)
	} else if err != nil {
		b.done = true
		b.pc.stop()
		closeQuietly(b.pc.C)
	}
	return n, err
}

func (b *appBody) Close() error {
	if !b.done {
		b.done = true
		b.pc.stop()
		closeQuietly(b.pc.C)
	}
	return nil
}
