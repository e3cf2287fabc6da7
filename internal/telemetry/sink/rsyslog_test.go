package sink

// A real rsyslogd for tests, self-contained so that other packages' end to
// end tests can copy this file. It needs the Debian packages rsyslog (and
// rsyslog-gnutls for TLS); without them the test is skipped, or fails when
// TRELLIS_REQUIRE_ALL is set.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const rsyslogdPath = "/usr/sbin/rsyslogd"

// rsyslogTLS makes the server listen with the gtls driver.
type rsyslogTLS struct {
	CAFile, CertFile, KeyFile string
	// AuthMode is the gtls authentication mode: "anon" (no client
	// certificate), "x509/certvalid" (a client certificate from CAFile).
	AuthMode string
}

// rsyslogServer is an rsyslogd listening on a loopback port, writing every
// message it receives to a JSON lines file: its own parse of the RFC 5424
// header, the raw message, and the structured data as parsed by
// mmpstrucdata (so values arrive unescaped by rsyslog's parser, not ours).
type rsyslogServer struct {
	t       testing.TB
	dir     string
	conf    string
	out     string
	logFile string
	port    int
	cmd     *exec.Cmd
	exited  chan struct{}
}

// rsyslogMessage is one line of the server's output file.
type rsyslogMessage struct {
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

// requireRsyslogd skips the test when rsyslogd (and, for TLS, the gtls
// driver) is missing, or fails it under TRELLIS_REQUIRE_ALL.
func requireRsyslogd(t testing.TB, withTLS bool) {
	t.Helper()
	missing := ""
	if _, err := os.Stat(rsyslogdPath); err != nil {
		missing = rsyslogdPath + " (Debian package rsyslog)"
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

// startRsyslogd writes a config for a fresh server in a temporary dir and
// starts it, returning once it accepts connections. It is stopped when the
// test ends; its own log is shown if the test failed.
func startRsyslogd(t testing.TB, tlsOpts *rsyslogTLS) *rsyslogServer {
	t.Helper()
	requireRsyslogd(t, tlsOpts != nil)
	dir := t.TempDir()
	r := &rsyslogServer{
		t:       t,
		dir:     dir,
		conf:    filepath.Join(dir, "rsyslog.conf"),
		out:     filepath.Join(dir, "messages.jsonl"),
		logFile: filepath.Join(dir, "rsyslogd.log"),
	}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(r.logFile)
			t.Logf("rsyslogd output:\n%s", b)
		}
	})
	// A free port can be taken between choosing it and rsyslogd binding it:
	// try a few.
	var err error
	for range 3 {
		r.port = freePort(t)
		if err = os.WriteFile(r.conf, []byte(rsyslogConfig(dir, r.port, r.out, tlsOpts)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err = r.start(); err == nil {
			return r
		}
	}
	t.Fatalf("rsyslogd did not start: %v", err)
	return nil
}

// rsyslogConfig is the whole server config.
func rsyslogConfig(dir string, port int, out string, tlsOpts *rsyslogTLS) string {
	var c strings.Builder
	fmt.Fprintf(&c, "global(workDirectory=%q net.enableDNS=\"off\"", dir)
	if tlsOpts != nil {
		fmt.Fprintf(&c, "\n  defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q",
			tlsOpts.CAFile, tlsOpts.CertFile, tlsOpts.KeyFile)
	}
	c.WriteString(")\n")
	if tlsOpts != nil {
		fmt.Fprintf(&c, "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=%q)\n", tlsOpts.AuthMode)
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
func (r *rsyslogServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Start starts the server again after Stop, on the same port and file.
func (r *rsyslogServer) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("rsyslogd restart: %v", err)
	}
}

func (r *rsyslogServer) start() error {
	logf, err := os.OpenFile(r.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(rsyslogdPath, "-n", "-f", r.conf, "-i", filepath.Join(r.dir, "rsyslogd.pid"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	return r.awaitReady()
}

// awaitReady waits until the port accepts connections.
func (r *rsyslogServer) awaitReady() error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-r.exited:
			r.cmd = nil
			return errors.New("rsyslogd exited at start (see its output below)")
		default:
		}
		if c, err := net.DialTimeout("tcp", r.Addr(), time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Stop()
	return fmt.Errorf("rsyslogd not listening on %s after 15s", r.Addr())
}

// Stop stops the server (SIGTERM, then SIGKILL after 10s) and waits for it
// to exit. Messages it read are in the output file by then.
func (r *rsyslogServer) Stop() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		r.t.Errorf("rsyslogd did not stop on SIGTERM in 10s; killing it")
		r.cmd.Process.Kill()
		<-r.exited
	}
	r.cmd = nil
}

// Messages returns every complete line of the output file.
func (r *rsyslogServer) Messages() []rsyslogMessage {
	r.t.Helper()
	b, err := os.ReadFile(r.out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		return nil
	}
	var msgs []rsyslogMessage
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m rsyslogMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			r.t.Fatalf("rsyslogd output line %q: %v", sc.Text(), err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// AwaitMessages polls the output file until done(messages) holds or the
// timeout passes, and returns the messages.
func (r *rsyslogServer) AwaitMessages(timeout time.Duration, done func([]rsyslogMessage) bool) []rsyslogMessage {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := r.Messages()
		if done(msgs) || time.Now().After(deadline) {
			return msgs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testPKI is a CA with a server certificate for 127.0.0.1 and localhost
// and a client certificate, as PEM files.
type testPKI struct {
	CAFile, ServerCert, ServerKey, ClientCert, ClientKey string
}

func newTestPKI(t testing.TB) testPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "trellis test syslog CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{CAFile: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.CAFile, "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, tmpl *x509.Certificate) (certFile, keyFile string) {
		key := newKey(t)
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p.ServerCert, p.ServerKey = leaf("server", 2, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.ClientCert, p.ClientKey = leaf("client", 3, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "trellis-collector"},
		DNSNames:    []string{"trellis-collector"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
