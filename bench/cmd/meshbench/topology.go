package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Which CPU each side runs on when pinning is possible.
const (
	proxyCPU = "0"
	loadCPU  = "1"
)

// env is the run-wide setup: where files go and how processes are pinned.
type env struct {
	dir     string
	self    string // this binary, re-executed for `load` and `upstream`
	trellis string
	fortio  string // the fortio binary, for the gRPC part
	pin     bool
	procs   []*proc
	tp      *trellisPairs // the control plane, once started
}

// proc is one started process; its output goes to dir/NAME.log.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs argv pinned to cpu (when pinning) with output to a log file.
func (e *env) start(name, cpu string, argv []string, environ []string) (*proc, error) {
	if e.pin && cpu != "" {
		argv = append([]string{"taskset", "-c", cpu}, argv...)
	}
	logPath := filepath.Join(e.dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), environ...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); lf.Close(); close(p.done) }()
	e.procs = append(e.procs, p)
	return p, nil
}

// pid is the process's own id (taskset execs in place, so it is the
// program's).
func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// stopAll ends every started process, newest first: SIGTERM, then SIGKILL
// after 3 s.
func (e *env) stopAll() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		p := e.procs[i]
		if p.exited() {
			continue
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	e.procs = nil
}

// freePort returns a loopback address whose port is free now, taken
// below Linux's ephemeral range (32768-60999 by default): a port from
// that range can be handed to some process's outgoing connection between
// this check and the server's bind ("address already in use"). Ports
// already handed out by this process are not reused.
func freePort() (string, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if portsUsed[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		l.Close()
		portsUsed[port] = true
		return addr, nil
	}
	return "", errors.New("no free port in 20000-31999")
}

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
)

func freePorts(n int) ([]string, error) {
	var out []string
	for range n {
		a, err := freePort()
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// awaitOK waits until GET http://addr/ answers 200 with a body of size
// bytes, or p (any of them) exits.
func awaitOK(ctx context.Context, addr string, size int, timeout time.Duration, ps ...*proc) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	return await(ctx, timeout, ps, func() error {
		resp, err := hc.Get("http://" + addr + "/")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && len(b) == size {
			return nil
		}
		return fmt.Errorf("status %d, %d bytes", resp.StatusCode, len(b))
	}, func(last error) error {
		return fmt.Errorf("%s not serving after %s: %v", addr, timeout, last)
	})
}

// await calls try every 100 ms until it returns nil, and then returns
// nil. It gives up when one of ps exits or ctx ends, and once timeout has
// passed with expired(try's last error).
func await(ctx context.Context, timeout time.Duration, ps []*proc, try func() error, expired func(last error) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		for _, p := range ps {
			if p.exited() {
				return fmt.Errorf("%s exited: %s", p.name, p.logTail())
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if last = try(); last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return expired(last)
}

// topology is one path from the load generator to the upstream.
type topology struct {
	name    string
	front   string  // where the load generator connects
	proxies []*proc // the proxy pair (client side first); none for direct
	grpc    bool    // gRPC unary load instead of HTTP/1.1
	header  string  // an extra request header line for HTTP/1.1 load
}

// startUpstream runs `meshbench upstream` (with -grpc: the gRPC one)
// pinned with the load generator.
func (e *env) startUpstream(useGRPC bool) (string, error) {
	name := "upstream"
	if useGRPC {
		name = "upstream-grpc"
	}
	return e.startUpstreamNamed(name, useGRPC)
}

// startUpstreamNamed is startUpstream with the process (and its log)
// called name.
func (e *env) startUpstreamNamed(name string, useGRPC bool) (string, error) {
	addr, err := freePort()
	if err != nil {
		return "", err
	}
	argv := []string{e.self, "upstream", "-addr", addr}
	if useGRPC {
		argv = append(argv, "-grpc")
	}
	p, err := e.start(name, loadCPU, argv, []string{"GOMAXPROCS=1"})
	if err != nil {
		return "", err
	}
	if useGRPC {
		return addr, awaitGRPC(context.Background(), addr, 1024, 10*time.Second, p)
	}
	return addr, awaitOK(context.Background(), addr, 1024, 10*time.Second, p)
}

// startTrellis starts the proxy pairs asked for against the control plane:
// "trellis" (HTTP service "upstream" in front of upstream, called by
// service "client") and "trellis-grpc" (service "upstream-grpc" with
// protocol grpc in front of grpcUpstream, called by "client-grpc").
func (e *env) startTrellis(ctx context.Context, upstream, grpcUpstream string, wantHTTP, wantGRPC bool) ([]*topology, error) {
	tp, err := e.control(ctx)
	if err != nil {
		return nil, err
	}
	var out []*topology
	if wantHTTP {
		t, err := tp.start(ctx, "trellis", "upstream", "client", "http", upstream, func(front string, ps ...*proc) error {
			return awaitOK(ctx, front, 1024, 20*time.Second, ps...)
		})
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if wantGRPC {
		t, err := tp.start(ctx, "trellis-grpc", "upstream-grpc", "client-grpc", "grpc", grpcUpstream, func(front string, ps ...*proc) error {
			return awaitGRPC(ctx, front, 1024, 20*time.Second, ps...)
		})
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// control runs a control plane (pinned with the load generator) and
// applies a Mesh with default allow, the first time it is called; the
// rounds and the gRPC part share it.
func (e *env) control(ctx context.Context) (*trellisPairs, error) {
	if e.tp != nil {
		return e.tp, nil
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	grpcAddr, apiAddr := ports[0], ports[1]
	data := filepath.Join(e.dir, "trellis-control")
	cp, err := e.start("trellis-control", loadCPU, []string{e.trellis, "control", "--data-dir", data,
		"--grpc-addr", grpcAddr, "--api-addr", apiAddr, "--log-level", "warn"}, nil)
	if err != nil {
		return nil, err
	}
	if err := awaitStatus(ctx, "http://"+apiAddr+"/readyz", 15*time.Second, cp); err != nil {
		return nil, fmt.Errorf("trellis control: %w", err)
	}
	cli := []string{"TRELLIS_API=http://" + apiAddr, "TRELLIS_TOKEN_FILE=" + filepath.Join(data, "admin.token")}
	mesh := "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {mtls: {mode: STRICT}, authorization: {default: allow}}\n"
	if _, err := e.runCLI(cli, mesh, "apply", "-f", "-"); err != nil {
		return nil, err
	}
	e.tp = &trellisPairs{e: e, cp: cp, cli: cli, data: data, control: grpcAddr}
	return e.tp, nil
}

// trellisPairs starts proxy pairs against one control plane.
type trellisPairs struct {
	e       *env
	cp      *proc
	cli     []string // environment for the CLI
	data    string   // the control plane's data directory
	control string   // its gRPC address
}

// start registers service (with protocol) through a server proxy in front
// of app, and a client proxy for service client with an explicit
// --upstream listener for it, the load generator's front; ready waits
// until a call through front succeeds, or one of ps exits.
func (tp *trellisPairs) start(ctx context.Context, name, service, client, protocol, app string,
	ready func(front string, ps ...*proc) error) (*topology, error) {
	e := tp.e
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	srvIn, srvAdmin, cliIn, cliAdmin, front := ports[0], ports[1], ports[2], ports[3], ports[4]
	srvTok, err := tp.token(service)
	if err != nil {
		return nil, err
	}
	cliTok, err := tp.token(client)
	if err != nil {
		return nil, err
	}
	common := []string{e.trellis, "proxy", "--control", tp.control, "--ca-file", filepath.Join(tp.data, "ca.crt"),
		"--namespace", "bench", "--http-proxy-addr", "off", "--log-level", "warn"}
	srvArgs := append(slices.Clone(common), "--service", service, "--token-file", srvTok,
		"--app-addr", app, "--inbound-addr", srvIn, "--admin-addr", srvAdmin)
	if protocol != "http" {
		srvArgs = append(srvArgs, "--protocol", protocol)
	}
	srv, err := e.start(name+"-server", proxyCPU, srvArgs, nil)
	if err != nil {
		return nil, err
	}
	cl, err := e.start(name+"-client", proxyCPU, append(slices.Clone(common), "--service", client, "--token-file", cliTok,
		"--inbound-addr", cliIn, "--admin-addr", cliAdmin, "--upstream", service+".bench="+front), nil)
	if err != nil {
		return nil, err
	}
	for _, a := range []string{srvAdmin, cliAdmin} {
		if err := awaitStatus(ctx, "http://"+a+"/ready", 20*time.Second, srv, cl); err != nil {
			return nil, fmt.Errorf("%s proxy: %w", name, err)
		}
	}
	if err := ready(front, srv, cl, tp.cp); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &topology{name: name, front: front, proxies: []*proc{cl, srv}, grpc: protocol == "grpc"}, nil
}

func (e *env) runCLI(environ []string, stdin string, args ...string) (string, error) {
	cmd := exec.Command(e.trellis, args...)
	cmd.Env = append(os.Environ(), environ...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("trellis %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

func awaitStatus(ctx context.Context, url string, timeout time.Duration, ps ...*proc) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	return await(ctx, timeout, ps, func() error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}, func(error) error {
		return fmt.Errorf("%s not 200 after %s", url, timeout)
	})
}

// nginxHead opens every nginx configuration: one worker in the
// foreground, with its pid, error log and temporary files under dir,
// named after the process ({{name}}).
const nginxHead = `worker_processes 1;
daemon off;
user root;
pid {{dir}}/{{name}}.pid;
error_log {{dir}}/{{name}}.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path {{dir}}/{{name}}-tmp;
`

// nginxServerTLS is the server side's mutual TLS: TLS 1.3, the client's
// certificate verified against the CA.
const nginxServerTLS = `    ssl_certificate {{cert}};
    ssl_certificate_key {{key}};
    ssl_protocols TLSv1.3;
    ssl_client_certificate {{ca}};
    ssl_verify_client on;
`

const nginxClientConf = nginxHead + `  proxy_temp_path {{dir}}/{{name}}-tmp;
  upstream peer {
    server {{peer}};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen {{listen}};
    keepalive_requests 1000000;
    location / {
      proxy_pass https://peer;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate {{cert}};
      proxy_ssl_certificate_key {{key}};
      proxy_ssl_trusted_certificate {{ca}};
      proxy_ssl_verify on;
      proxy_ssl_name {{servername}};
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }
}
`

const nginxServerConf = nginxHead + `  proxy_temp_path {{dir}}/{{name}}-tmp;
  upstream app {
    server {{upstream}};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen {{listen}} ssl;
    keepalive_requests 1000000;
` + nginxServerTLS + `    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`

// haproxyHead opens every HAProxy configuration: one thread, HTTP mode,
// server connections shared between client connections.
const haproxyHead = `global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
`

const haproxyClientConf = haproxyHead + `frontend plain
  bind {{listen}}
  default_backend peer
backend peer
  server b {{peer}} ssl verify required ca-file {{ca}} crt {{pem}} ssl-min-ver TLSv1.3
`

const haproxyServerConf = haproxyHead + `frontend mtls
  bind {{listen}} ssl crt {{pem}} ca-file {{ca}} verify required ssl-min-ver TLSv1.3
  default_backend app
backend app
  server u {{upstream}}
`

func expand(tmpl string, vars map[string]string) string {
	for k, v := range vars {
		tmpl = strings.ReplaceAll(tmpl, "{{"+k+"}}", v)
	}
	return tmpl
}

func (e *env) writeConf(name, text string) (string, error) {
	path := filepath.Join(e.dir, name)
	return path, os.WriteFile(path, []byte(text), 0o644)
}

// proxyPair is one nginx or HAProxy pair: a server-side proxy that
// terminates mutual TLS in front of the app, and a client-side one that
// takes the load generator's connections (the front) and passes them to
// the server side.
type proxyPair struct {
	// name names the processes NAME-server and NAME-client and their
	// configurations NAME-server.EXT and NAME-client.EXT in dir.
	name, ext string
	// The configuration templates and what to expand in them besides
	// name (the process's), listen (the server side's port, the front)
	// and, for the client side, peer (the server side's port).
	srvTmpl, cliTmpl string
	srvVars, cliVars map[string]string
	tmpDirs          bool                       // make NAME-client-tmp and NAME-server-tmp in dir first
	argv             func(conf string) []string // runs the program on a configuration
}

// nginxPair is the nginx pair name in front of app, with the given
// templates.
func (e *env) nginxPair(name, srvTmpl, cliTmpl, app string, pc *peerCerts) proxyPair {
	return proxyPair{name: name, ext: ".conf", srvTmpl: srvTmpl, cliTmpl: cliTmpl, tmpDirs: true,
		srvVars: map[string]string{"dir": e.dir, "upstream": app, "cert": pc.ServerCert, "key": pc.ServerKey, "ca": pc.CA},
		cliVars: map[string]string{"dir": e.dir, "cert": pc.ClientCert, "key": pc.ClientKey, "ca": pc.CA, "servername": pc.ServerName},
		argv:    func(conf string) []string { return []string{"nginx", "-p", e.dir, "-c", conf} }}
}

// haproxyPair is the HAProxy pair name in front of app, with the given
// templates.
func haproxyPair(name, srvTmpl, cliTmpl, app string, pc *peerCerts) proxyPair {
	return proxyPair{name: name, ext: ".cfg", srvTmpl: srvTmpl, cliTmpl: cliTmpl,
		srvVars: map[string]string{"upstream": app, "pem": pc.ServerPEM, "ca": pc.CA},
		cliVars: map[string]string{"pem": pc.ClientPEM, "ca": pc.CA},
		argv:    func(conf string) []string { return []string{"haproxy", "-db", "-f", conf} }}
}

// startPair writes the pair's configurations and starts its server side,
// then its client side, on proxyCPU. It returns the front and both
// processes; the caller waits until they serve.
func (e *env) startPair(pp proxyPair) (front string, srv, cl *proc, err error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", nil, nil, err
	}
	front, peer := ports[0], ports[1]
	if pp.tmpDirs {
		for _, d := range []string{pp.name + "-client-tmp", pp.name + "-server-tmp"} {
			if err := os.MkdirAll(filepath.Join(e.dir, d), 0o755); err != nil {
				return "", nil, nil, err
			}
		}
	}
	srvVars, cliVars := maps.Clone(pp.srvVars), maps.Clone(pp.cliVars)
	srvVars["name"], srvVars["listen"] = pp.name+"-server", peer
	cliVars["name"], cliVars["listen"], cliVars["peer"] = pp.name+"-client", front, peer
	srvConf, err := e.writeConf(pp.name+"-server"+pp.ext, expand(pp.srvTmpl, srvVars))
	if err != nil {
		return "", nil, nil, err
	}
	cliConf, err := e.writeConf(pp.name+"-client"+pp.ext, expand(pp.cliTmpl, cliVars))
	if err != nil {
		return "", nil, nil, err
	}
	if srv, err = e.start(pp.name+"-server", proxyCPU, pp.argv(srvConf), nil); err != nil {
		return "", nil, nil, err
	}
	if cl, err = e.start(pp.name+"-client", proxyCPU, pp.argv(cliConf), nil); err != nil {
		return "", nil, nil, err
	}
	return front, srv, cl, nil
}

// nginxErrorLog is what the nginx process name wrote to its error log.
func (e *env) nginxErrorLog(name string) []byte {
	b, _ := os.ReadFile(filepath.Join(e.dir, name+".error.log"))
	return b
}

func (e *env) startNginx(ctx context.Context, upstream string, pc *peerCerts) (*topology, error) {
	front, srv, cl, err := e.startPair(e.nginxPair("nginx", nginxServerConf, nginxClientConf, upstream, pc))
	if err != nil {
		return nil, err
	}
	if err := awaitOK(ctx, front, 1024, 10*time.Second, srv, cl); err != nil {
		return nil, fmt.Errorf("nginx: %w\n%s", err, e.nginxErrorLog("nginx-client"))
	}
	return &topology{name: "nginx", front: front, proxies: []*proc{cl, srv}}, nil
}

func (e *env) startHAProxy(ctx context.Context, upstream string, pc *peerCerts) (*topology, error) {
	front, srv, cl, err := e.startPair(haproxyPair("haproxy", haproxyServerConf, haproxyClientConf, upstream, pc))
	if err != nil {
		return nil, err
	}
	if err := awaitOK(ctx, front, 1024, 10*time.Second, srv, cl); err != nil {
		return nil, fmt.Errorf("haproxy: %w", err)
	}
	return &topology{name: "haproxy", front: front, proxies: []*proc{cl, srv}}, nil
}

// ensureTools installs nginx and HAProxy from Debian when missing (as
// root), and stops any instance the package started as a service.
func ensureTools() error {
	var missing []string
	for _, t := range []string{"nginx", "haproxy"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("install: %s missing; run as root or apt-get install %s", strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	fmt.Fprintf(os.Stderr, "meshbench: installing %s\n", strings.Join(missing, " "))
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, missing...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("install: apt-get %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, t := range missing {
		if _, err := exec.LookPath(t); err != nil {
			return errors.New("install: " + t + " still missing after apt-get")
		}
	}
	return nil
}
