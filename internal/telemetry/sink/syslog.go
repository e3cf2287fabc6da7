package sink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/trellismesh/trellis/internal/telemetry"
)

// syslogSink writes RFC 5424 messages with octet-counting framing over TCP
// or TLS, one write per batch, and re-dials after any error.
type syslogSink struct {
	display string
	addr    string
	tls     *tlsFiles // nil for plain TCP
	format  syslogFormat
	timeout time.Duration
	settle  time.Duration

	conn    net.Conn     // the TLS or TCP connection
	tcp     *net.TCPConn // the TCP connection under conn
	batches int          // delivered on conn
	reset   bool         // conn was reset by the server

	buf     []byte // the frames of the batch being sent
	out     []byte // what is written: resend, then buf
	last    []byte // the frames of the batch last confirmed on conn
	resend  []byte // frames to send again ahead of the next batch
	scratch []byte
}

// tlsFiles are the syslog+tls query parameters; the files are read at each
// dial, so rotated certificates are picked up.
type tlsFiles struct {
	ca, cert, key, serverName string
}

func newSyslogSink(u *url.URL, opts Options) (*syslogSink, error) {
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.Fragment != "" {
		return nil, errors.New("a syslog URL is only scheme, host, port and query")
	}
	useTLS := u.Scheme == "syslog+tls"
	port := "514"
	if useTLS {
		port = "6514"
	}
	addr, err := hostPort(u, port)
	if err != nil {
		return nil, err
	}
	s := &syslogSink{
		display: Display(u.String()),
		addr:    addr,
		timeout: opts.Timeout,
		settle:  opts.SyslogSettle,
		format: syslogFormat{
			facility: facilityAuthpriv,
			maxMsg:   max(opts.SyslogMaxMessage, minSyslogMessage),
		},
	}
	if s.settle <= 0 {
		s.settle = defaultSyslogSettle
	}
	if opts.SyslogMaxMessage == 0 {
		s.format.maxMsg = defaultSyslogMaxMessage
	}
	host := opts.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	s.format.hostname = string(appendHeaderField(nil, host, 255))

	q := u.Query()
	for k, v := range q {
		if len(v) != 1 {
			return nil, fmt.Errorf("query parameter %s given %d times", k, len(v))
		}
		switch k {
		case "facility":
			f, ok := facilities[v[0]]
			if !ok {
				return nil, fmt.Errorf("facility %q is not a syslog facility (such as authpriv, auth, local0..local7)", v[0])
			}
			s.format.facility = f
		case "ca", "servername", "cert", "key":
			if !useTLS {
				return nil, fmt.Errorf("query parameter %s is only for syslog+tls", k)
			}
		default:
			return nil, fmt.Errorf("unknown query parameter %q", k)
		}
	}
	if useTLS {
		s.tls = &tlsFiles{ca: q.Get("ca"), cert: q.Get("cert"), key: q.Get("key"), serverName: q.Get("servername")}
		if s.tls.serverName == "" {
			s.tls.serverName = u.Hostname()
		}
		if (s.tls.cert == "") != (s.tls.key == "") {
			return nil, errors.New("cert and key go together")
		}
		// Fail at start, not at the first event.
		if _, err := s.tls.config(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (f *tlsFiles) config() (*tls.Config, error) {
	c := &tls.Config{ServerName: f.serverName, MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca: no PEM certificate in %s", f.ca)
		}
	}
	if f.cert != "" {
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("cert and key: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func (s *syslogSink) String() string { return s.display }

func (s *syslogSink) Send(ctx context.Context, recs []telemetry.Record) error {
	s.buf = s.buf[:0]
	for _, r := range recs {
		s.buf, s.scratch = s.format.appendFrame(s.buf, s.scratch, r)
	}
	if s.conn != nil {
		// The server may have gone away since the last batch; writing into
		// a connection it closed would succeed and lose the batch.
		if err := s.watch(ctx, 0); err != nil {
			s.drop()
		}
	}
	if s.conn == nil {
		if err := s.dial(ctx); err != nil {
			return fmt.Errorf("syslog sink %s: %w", s.display, err)
		}
	}
	fresh := s.batches == 0
	s.out = append(append(s.out[:0], s.resend...), s.buf...)
	if err := s.deliver(ctx, s.out); err != nil {
		s.drop()
		if fresh && s.tls != nil && ctx.Err() == nil {
			return fmt.Errorf("syslog sink %s: %w (when this repeats, the server may be refusing our client certificate: see its log)", s.display, err)
		}
		return fmt.Errorf("syslog sink %s: %w", s.display, err)
	}
	s.batches++
	s.resend = s.resend[:0]
	s.last = append(s.last[:0], s.buf...)
	return nil
}

// drop closes a connection that failed. A server that closes a connection
// with data unread makes its TCP stack reset it; then the batch last
// confirmed on it may not have been read (the server stopped reading and
// took longer than s.settle to close), so it goes out again ahead of the
// next one.
func (s *syslogSink) drop() {
	if _, reset, _ := tcpState(s.tcp); (reset || s.reset) && len(s.last) > 0 && len(s.resend) == 0 {
		s.resend = append(s.resend, s.last...)
	}
	s.last, s.reset = s.last[:0], false
	s.Close()
}

func (s *syslogSink) dial(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return err
	}
	tcp := c.(*net.TCPConn)
	if s.tls == nil {
		s.conn, s.tcp = tcp, tcp
		return nil
	}
	cfg, err := s.tls.config()
	if err != nil {
		c.Close()
		return err
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return fmt.Errorf("tls: %w", err)
	}
	s.conn, s.tcp = tc, tcp
	return nil
}

// deliver writes b, waits until the server's TCP stack has acknowledged
// it, and watches the connection for s.settle.
func (s *syslogSink) deliver(ctx context.Context, b []byte) error {
	// Cancelling ctx unblocks a write or wait in progress.
	stop := context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := s.conn.Write(b); err != nil {
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			s.reset = true
		}
		return fmt.Errorf("write: %w", orCtx(ctx, err))
	}
	if err := s.awaitAcked(ctx); err != nil {
		return fmt.Errorf("%w; the batch will be sent again", err)
	}
	if err := s.watch(ctx, s.settle); err != nil {
		return fmt.Errorf("%w; the batch will be sent again", err)
	}
	return nil
}

// awaitAcked waits until the server's TCP stack has acknowledged every
// byte written: bytes still in our send queue are not delivered, and a
// server that vanished without a reset never acknowledges them. It watches
// the connection meanwhile, since a server that closed it never will.
func (s *syslogSink) awaitAcked(ctx context.Context) error {
	deadline := time.Now().Add(s.timeout)
	pause := 100 * time.Microsecond
	for {
		n, err := unacked(s.tcp)
		if err != nil || n == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server has not acknowledged %d bytes after %v", n, s.timeout)
		}
		if err := s.watch(ctx, pause); err != nil {
			return err
		}
		pause = min(2*pause, 5*time.Millisecond)
	}
}

// watch returns an error if the server closes the connection within d (or
// closed it before). Syslog servers send nothing, so a read that ends
// other than by its deadline is the server closing or resetting the
// connection, or a TLS alert. The TCP state is checked last, so that a
// deadline that passed while this process was not running does not hide a
// close. It sets s.reset when the connection was reset.
func (s *syslogSink) watch(ctx context.Context, d time.Duration) error {
	_, _, stateKnown := tcpState(s.tcp)
	if d > 0 || !stateKnown {
		if err := s.read(ctx, max(d, time.Millisecond)); err != nil {
			if errors.Is(err, syscall.ECONNRESET) {
				s.reset = true
			}
			return err
		}
	}
	switch gone, reset, _ := tcpState(s.tcp); {
	case reset:
		s.reset = true
		return errors.New("server reset the connection")
	case gone:
		return errors.New("server closed the connection")
	}
	return nil
}

// read reads from the connection until the server closes it or d passes,
// returning nil in the second case.
func (s *syslogSink) read(ctx context.Context, d time.Duration) error {
	s.conn.SetReadDeadline(time.Now().Add(d))
	defer s.conn.SetReadDeadline(time.Time{})
	var b [512]byte
	for {
		_, err := s.conn.Read(b[:])
		switch {
		case err == nil:
			continue // unexpected data; a TLS ticket is handled inside Read
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil
		case err == io.EOF:
			return errors.New("server closed the connection")
		default:
			return fmt.Errorf("connection lost: %w", err)
		}
	}
}

// orCtx prefers ctx's error to the deadline error its cancellation caused.
func orCtx(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (s *syslogSink) Close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn, s.tcp, s.batches = nil, nil, 0
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
