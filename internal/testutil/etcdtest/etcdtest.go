// Package etcdtest runs a real etcd cluster of one or more members as local
// processes on loopback ports, for the tests of the etcd store backend and
// of the command line that uses it. The binary is the one
// scripts/k8s-bins.sh builds and caches (kubetest.BinDir finds it); without
// it Start skips the test, or fails it when TRELLIS_REQUIRE_ALL is set, and
// -short skips it too.
//
// Clients must use TLS with a client certificate (--client-cert-auth, a
// fresh test CA per cluster), so a test exercises the TLS path it would in
// production; the members talk to each other over plain HTTP on loopback.
// Members can be killed (SIGKILL) and restarted on their data dirs to take
// away and give back the quorum.
//
// It must not be imported by non-test code.
package etcdtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
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

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// startTimeout bounds the wait for a started or restarted cluster to be
// healthy.
const startTimeout = 30 * time.Second

// Cluster is a running etcd cluster. Its methods may be called from the
// test's goroutine only, except Endpoints and ClientTLS.
type Cluster struct {
	// CAFile verifies the members' serving certificate; CertFile and
	// KeyFile are a client certificate and key they accept (PEM files,
	// for flags such as trellis control's --etcd-ca-file).
	CAFile, CertFile, KeyFile string

	t       testing.TB
	bin     string
	dir     string
	pki     testutil.PKI
	members []*member

	clientOnce sync.Once
	client     *clientv3.Client
}

type member struct {
	name                 string
	clientPort, peerPort int
	dataDir, logPath     string
	args                 []string
	proc                 *process // nil while killed
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	log  *os.File
}

// Require returns the etcd binary's path, skipping the test under -short or
// when the binary is missing (failing it instead when TRELLIS_REQUIRE_ALL
// is set).
func Require(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("etcdtest: -short skips the tests on a real etcd cluster")
	}
	_, bin := kubetest.BinDir()
	if _, err := os.Stat(bin); err != nil {
		msg := "etcdtest: " + bin + " missing: run make k8s-bins (scripts/k8s-bins.sh builds etcd once)"
		if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// Start runs a cluster of n members (1 or 3, usually) until the test ends,
// and returns once every member is healthy and a leader is elected. Its
// members' logs are shown when the test fails.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: %d members, want at least 1", n)
	}
	bin := Require(t)
	dir := t.TempDir()
	c := &Cluster{t: t, bin: bin, dir: dir, pki: testutil.NewPKI(t, dir, testutil.PKIOptions{CAName: "trellis etcdtest CA", ServerName: "etcd", ClientName: "trellis-control", ServerAlsoClient: true})}
	c.CAFile, c.CertFile, c.KeyFile = c.pki.CAFile, c.pki.ClientCert, c.pki.ClientKey
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})

	t.Cleanup(c.stopAll)
	// Free ports are found by binding and closing, so another test
	// process may take one before etcd binds it: start again on new ports
	// (a few times) when a member says so.
	for attempt := 1; ; attempt++ {
		c.launch(n, filepath.Join(dir, "attempt"+strconv.Itoa(attempt)))
		var err error
		for i := range c.members {
			if err = c.awaitHealthy(i); err != nil {
				break
			}
		}
		if err == nil {
			return c
		}
		if attempt < 3 && c.portTaken() {
			t.Logf("etcdtest: a port was taken before etcd bound it; starting again on others")
			c.stopAll()
			c.resetClient()
			continue
		}
		t.Fatalf("etcdtest: %v (its log is shown below)", err)
	}
}

// launch starts n fresh members in dir, on free ports.
func (c *Cluster) launch(n int, dir string) {
	t := c.t
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	c.members = nil
	var peers []string
	for i := range n {
		m := &member{
			name:       "m" + strconv.Itoa(i),
			clientPort: testutil.FreePort(t),
			peerPort:   testutil.FreePort(t),
			dataDir:    filepath.Join(dir, "m"+strconv.Itoa(i)),
			logPath:    filepath.Join(dir, "m"+strconv.Itoa(i)+".log"),
		}
		c.members = append(c.members, m)
		peers = append(peers, fmt.Sprintf("%s=http://127.0.0.1:%d", m.name, m.peerPort))
	}
	token := randomToken(t)
	for _, m := range c.members {
		clientURL := fmt.Sprintf("https://127.0.0.1:%d", m.clientPort)
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", m.peerPort)
		m.args = []string{
			"--name=" + m.name,
			"--data-dir=" + m.dataDir,
			"--listen-client-urls=" + clientURL, "--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=" + strings.Join(peers, ","),
			"--initial-cluster-state=new", "--initial-cluster-token=" + token,
			"--client-cert-auth", "--trusted-ca-file=" + c.pki.CAFile,
			"--cert-file=" + c.pki.ServerCert, "--key-file=" + c.pki.ServerKey,
			"--unsafe-no-fsync", "--log-level=warn",
		}
		c.start(m)
	}
}

// portTaken reports whether a member's log says one of its ports was
// taken.
func (c *Cluster) portTaken() bool {
	for _, m := range c.members {
		if b, err := os.ReadFile(m.logPath); err == nil && strings.Contains(string(b), "address already in use") {
			return true
		}
	}
	return false
}

// resetClient drops the cluster client of an abandoned start.
func (c *Cluster) resetClient() {
	if c.client != nil {
		c.client.Close()
	}
	c.client, c.clientOnce = nil, sync.Once{}
}

// Endpoints are the members' client addresses, 127.0.0.1:PORT, in member
// order (TLS with a client certificate: see ClientTLS).
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i := range c.members {
		out[i] = c.Endpoint(i)
	}
	return out
}

// Endpoint is member i's client address.
func (c *Cluster) Endpoint(i int) string {
	return "127.0.0.1:" + strconv.Itoa(c.members[i].clientPort)
}

// ClientTLS is a new client TLS configuration the members accept: the
// client certificate, and the test CA as the only root.
func (c *Cluster) ClientTLS() *tls.Config { return c.pki.ClientTLS(c.t) }

// Kill stops member i with SIGKILL and waits for it to exit.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	m := c.members[i]
	if m.proc == nil {
		c.t.Fatalf("etcdtest: Kill(%d): member is not running", i)
	}
	_ = m.proc.cmd.Process.Kill()
	<-m.proc.done
	m.proc.log.Close()
	m.proc = nil
}

// Restart starts a killed member i again on its data dir and waits until
// it is healthy: it answers and knows a leader, which needs a quorum.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.members[i]
	if m.proc != nil {
		c.t.Fatalf("etcdtest: Restart(%d): member is running", i)
	}
	c.start(m)
	c.waitHealthy(i)
}

// StartMember starts a killed member i again without waiting for it, for
// restarting several members of a cluster that lost its quorum; WaitHealthy
// then waits for them.
func (c *Cluster) StartMember(i int) {
	c.t.Helper()
	if c.members[i].proc != nil {
		c.t.Fatalf("etcdtest: StartMember(%d): member is running", i)
	}
	c.start(c.members[i])
}

// WaitHealthy waits until every running member answers and knows a leader.
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	for i, m := range c.members {
		if m.proc != nil {
			c.waitHealthy(i)
		}
	}
}

// Leader is the index of the member that is the leader as the running
// members see it, or -1 when none is.
func (c *Cluster) Leader() int {
	c.t.Helper()
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ids := map[uint64]int{}
	var leader uint64
	for i, m := range c.members {
		if m.proc == nil {
			continue
		}
		st, err := cl.Status(ctx, c.Endpoint(i))
		if err != nil {
			continue
		}
		ids[st.Header.MemberId] = i
		if st.Leader != 0 {
			leader = st.Leader
		}
	}
	if i, ok := ids[leader]; ok && leader != 0 {
		return i
	}
	return -1
}

// Client is an etcd client of the whole cluster, made on first use and
// closed when the test ends, for what the store does not do (compaction,
// member status).
func (c *Cluster) Client() *clientv3.Client {
	c.t.Helper()
	c.clientOnce.Do(func() {
		eps := make([]string, len(c.members))
		for i := range c.members {
			eps[i] = "https://" + c.Endpoint(i)
		}
		cl, err := clientv3.New(clientv3.Config{
			Endpoints: eps, TLS: c.ClientTLS(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		})
		if err != nil {
			c.t.Fatalf("etcdtest: client: %v", err)
		}
		c.client = cl
		c.t.Cleanup(func() { cl.Close() })
	})
	return c.client
}

// AutoCompact compacts the cluster's history every interval until the test
// ends, keeping the last keep revisions, as etcd's own revision-based
// --auto-compaction-mode does but quicker: its period is 5 minutes.
func (c *Cluster) AutoCompact(keep int64, interval time.Duration) {
	c.t.Helper()
	cl := c.Client()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		var compacted int64
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			resp, err := cl.Get(ctx, "compact-probe", clientv3.WithCountOnly())
			if err != nil {
				continue
			}
			if rev := resp.Header.Revision - keep; rev > compacted {
				if _, err := cl.Compact(ctx, rev); err == nil {
					compacted = rev
				}
			}
		}
	}()
}

func (c *Cluster) start(m *member) {
	c.t.Helper()
	f, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, m.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatalf("etcdtest: start %s: %v", m.name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), log: f}
	go func() { _ = cmd.Wait(); close(p.done) }()
	m.proc = p
}

// stopAll kills every running member: the data dirs are thrown away, and
// a graceful stop of a three-member cluster takes seconds (leadership
// transfer).
func (c *Cluster) stopAll() {
	for _, m := range c.members {
		if m.proc == nil {
			continue
		}
		_ = m.proc.cmd.Process.Kill()
		<-m.proc.done
		m.proc.log.Close()
		m.proc = nil
	}
}

// waitHealthy waits until member i answers Status, knows a leader and
// reports no alarm.
func (c *Cluster) waitHealthy(i int) {
	c.t.Helper()
	if err := c.awaitHealthy(i); err != nil {
		c.t.Fatalf("etcdtest: %v (its log is shown below)", err)
	}
}

// awaitHealthy is waitHealthy returning what went wrong.
func (c *Cluster) awaitHealthy(i int) error {
	m := c.members[i]
	cl := c.Client()
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-m.proc.done:
			return fmt.Errorf("%s exited: %v", m.name, m.proc.cmd.ProcessState)
		default:
		}
		// gRPC waits a second before it dials again: dial first.
		conn, err := net.DialTimeout("tcp", c.Endpoint(i), time.Second)
		if err != nil {
			last = err
			time.Sleep(20 * time.Millisecond)
			continue
		}
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cl.Status(ctx, c.Endpoint(i))
		cancel()
		switch {
		case err != nil:
			last = err
		case st.Leader == 0:
			last = errors.New("no leader")
		case len(st.Errors) > 0:
			last = fmt.Errorf("errors %q", st.Errors)
		default:
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not healthy after %v: %v", m.name, startTimeout, last)
}

func (c *Cluster) dumpLogs() {
	for _, m := range c.members {
		b, err := os.ReadFile(m.logPath)
		if err != nil {
			continue
		}
		if len(b) > 8<<10 {
			b = b[len(b)-8<<10:]
		}
		c.t.Logf("etcdtest: last of %s's log:\n%s", m.name, b)
	}
}

func randomToken(t testing.TB) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("etcdtest-%x", b)
}
