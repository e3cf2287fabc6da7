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
	buf     []byte
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
		if err := s.check(ctx, time.Millisecond); err != nil {
			s.Close()
		}
	}
	if s.conn == nil {
		if err := s.dial(ctx); err != nil {
			return fmt.Errorf("syslog sink %s: %w", s.display, err)
		}
	}
	fresh := s.batches == 0
	if err := s.deliver(ctx); err != nil {
		s.Close()
		if fresh && s.tls != nil && ctx.Err() == nil {
			return fmt.Errorf("syslog sink %s: %w (when this repeats, the server may be refusing our client certificate: see its log)", s.display, err)
		}
		return fmt.Errorf("syslog sink %s: %w", s.display, err)
	}
	s.batches++
	return nil
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

// deliver writes the batch, waits until the server's TCP stack has
// acknowledged it, and watches the connection for s.settle.
func (s *syslogSink) deliver(ctx context.Context) error {
	// Cancelling ctx unblocks a write or wait in progress.
	stop := context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := s.conn.Write(s.buf); err != nil {
		return fmt.Errorf("write: %w", orCtx(ctx, err))
	}
	if err := s.awaitAcked(ctx); err != nil {
		return fmt.Errorf("%w; the batch will be sent again", err)
	}
	if err := s.check(ctx, s.settle); err != nil {
		return fmt.Errorf("%w; the batch will be sent again", err)
	}
	return nil
}

// awaitAcked waits until the server's TCP stack has acknowledged every
// byte written: bytes still in our send queue are not delivered, and a
// server that vanished without a reset never acknowledges them. It watches
// the connection meanwhile, since a server that closed or reset it never
// will either.
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
		if err := s.check(ctx, pause); err != nil {
			return err
		}
		pause = min(2*pause, 5*time.Millisecond)
	}
}

// check reads from the connection for d: syslog servers send nothing, so
// end of file, a reset or a TLS alert means the server closed it.
func (s *syslogSink) check(ctx context.Context, d time.Duration) error {
	s.conn.SetReadDeadline(time.Now().Add(d))
	defer s.conn.SetReadDeadline(time.Time{})
	var b [512]byte
	for {
		_, err := s.conn.Read(b[:])
		if err == nil {
			continue // unexpected data (a TLS ticket is consumed inside Read)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() && ctx.Err() == nil {
			return nil
		}
		if err == io.EOF {
			return errors.New("server closed the connection")
		}
		return fmt.Errorf("connection lost: %w", orCtx(ctx, err))
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
