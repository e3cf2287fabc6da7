// Package rsyslogtest runs a real rsyslogd on a loopback port for tests of
// the syslog audit sinks (internal/telemetry/sink) and end to end tests of
// audit delivery. Only tests import it.
//
// It needs the Debian packages rsyslog (and rsyslog-gnutls for TLS);
// without them Start skips the test, or fails it when TRELLIS_REQUIRE_ALL
// is set.
//
// It must not be imported by non-test code; it depends on the standard
// library only.
package rsyslogtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RsyslogdPath is where Debian installs rsyslogd.
const RsyslogdPath = "/usr/sbin/rsyslogd"

// Message is one message as rsyslogd received and parsed it: its own parse
// of the RFC 5424 header, the raw message, and the structured data as
// parsed by mmpstrucdata (so values arrive unescaped by rsyslog's parser,
// not the sender's).
type Message struct {
	PRI      string `json:"pri"`
	Hostname string `json:"hostname"`
	App      string `json:"app"`
	ProcID   string `json:"procid"`
	MsgID    string `json:"msgid"`
	Msg      string `json:"msg"`
	Raw      string `json:"raw"`
	// SD maps SD-ID to parameter name to value.
	SD map[string]map[string]string `json:"rfc5424-sd"`
}

// Server is an rsyslogd listening on a loopback port, writing every message
// it receives to a JSON lines file.
type Server struct {
	// PKI is the test PKI of a TLS server (nil for plain TCP): CAFile is
	// what a client trusts, ClientCert and ClientKey a certificate from it.
	PKI *PKI

	authMode string // gtls authentication mode with a PKI
	t        testing.TB
	dir      string
	conf     string
	out      string
	logFile  string
	port     int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Require skips the test when rsyslogd (and, for TLS, the gtls driver) is
// missing, or fails it when TRELLIS_REQUIRE_ALL is set.
func Require(t testing.TB, withTLS bool) {
	t.Helper()
	missing := ""
	if _, err := os.Stat(RsyslogdPath); err != nil {
		missing = RsyslogdPath + " (Debian package rsyslog)"
	} else if withTLS {
		if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
			missing = "rsyslog's gtls driver (Debian package rsyslog-gnutls)"
		}
	}
	if missing == "" {
		return
	}
	if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
		t.Fatalf("missing %s; run make deps as root", missing)
	}
	t.Skipf("missing %s; apt-get install rsyslog rsyslog-gnutls (make deps) to run this test", missing)
}

// Start writes a config for a fresh server in a temporary dir and starts
// it, returning once it accepts connections. With withTLS it listens with
// the gtls driver (no client certificate required) on a certificate for
// 127.0.0.1 and localhost from a new test CA, s.PKI. The server is stopped
// when the test ends; its own log is shown if the test failed.
func Start(t testing.TB, withTLS bool) *Server {
	t.Helper()
	if !withTLS {
		return start(t, nil, "")
	}
	p := NewPKI(t)
	return start(t, &p, "anon")
}

// StartTLS starts a TLS server on pki's server certificate. With
// requireClientCert it accepts only clients presenting a certificate from
// pki's CA (gtls authMode x509/certvalid).
func StartTLS(t testing.TB, pki PKI, requireClientCert bool) *Server {
	t.Helper()
	mode := "anon"
	if requireClientCert {
		mode = "x509/certvalid"
	}
	return start(t, &pki, mode)
}

func start(t testing.TB, pki *PKI, authMode string) *Server {
	t.Helper()
	Require(t, pki != nil)
	dir := t.TempDir()
	s := &Server{
		PKI:      pki,
		authMode: authMode,
		t:        t,
		dir:      dir,
		conf:     filepath.Join(dir, "rsyslog.conf"),
		out:      filepath.Join(dir, "messages.jsonl"),
		logFile:  filepath.Join(dir, "rsyslogd.log"),
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(s.logFile)
			t.Logf("rsyslogd output:\n%s", b)
		}
	})
	// A free port can be taken between choosing it and rsyslogd binding it:
	// try a few.
	var err error
	for range 3 {
		s.port = freePort(t)
		if err = os.WriteFile(s.conf, []byte(config(dir, s.port, s.out, s.PKI, s.authMode)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err = s.start(); err == nil {
			return s
		}
	}
	t.Fatalf("rsyslogd did not start: %v", err)
	return nil
}

// config is the whole server config.
func config(dir string, port int, out string, pki *PKI, authMode string) string {
	var c strings.Builder
	fmt.Fprintf(&c, "global(workDirectory=%q net.enableDNS=\"off\"", dir)
	if pki != nil {
		fmt.Fprintf(&c, "\n  defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q",
			pki.CAFile, pki.ServerCert, pki.ServerKey)
	}
	c.WriteString(")\n")
	if pki != nil {
		fmt.Fprintf(&c, "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=%q)\n", authMode)
	} else {
		c.WriteString("module(load=\"imtcp\")\n")
	}
	fmt.Fprintf(&c, `module(load="mmpstrucdata")
input(type="imtcp" address="127.0.0.1" port="%d" ruleset="received")
template(name="json" type="string" string="%%$!%%\n")
ruleset(name="received") {
  action(type="mmpstrucdata")
  set $!pri = $pri;
  set $!hostname = $hostname;
  set $!app = $app-name;
  set $!procid = $procid;
  set $!msgid = $msgid;
  set $!msg = $msg;
  set $!raw = $rawmsg;
  action(type="omfile" file=%q template="json")
}
`, port, out)
	return c.String()
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Restart starts the server again after Stop, on the same port and output
// file.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("rsyslogd restart: %v", err)
	}
}

func (s *Server) start() error {
	logf, err := os.OpenFile(s.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(RsyslogdPath, "-n", "-f", s.conf, "-i", filepath.Join(s.dir, "rsyslogd.pid"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	return s.awaitReady(exited)
}

// awaitReady waits until the port accepts connections.
func (s *Server) awaitReady(exited chan struct{}) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return errors.New("rsyslogd exited at start (see its output)")
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Stop()
	return fmt.Errorf("rsyslogd not listening on %s after 15s", s.Addr())
}

// Stop stops the server (SIGTERM, then SIGKILL after 10s) and waits for it
// to exit. Messages it read are in the output file by then. Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("rsyslogd did not stop on SIGTERM in 10s; killing it")
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Messages returns every complete line of the output file.
func (s *Server) Messages() []Message {
	s.t.Helper()
	b, err := os.ReadFile(s.out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		s.t.Fatal(err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		return nil
	}
	var msgs []Message
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			s.t.Fatalf("rsyslogd output line %q: %v", sc.Text(), err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// AwaitMessages polls the output file until done(messages) holds or the
// timeout passes, and returns the messages (the caller checks them again).
func (s *Server) AwaitMessages(timeout time.Duration, done func([]Message) bool) []Message {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := s.Messages()
		if done(msgs) || time.Now().After(deadline) {
			return msgs
		}
		time.Sleep(20 * time.Millisecond)
	}
}
