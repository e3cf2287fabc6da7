package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The gateway topology, beside nginx as a reverse proxy: the load
// generator's requests arrive at `trellis gateway` over plain HTTP (as at
// nginx's client side), a GatewayRoute for the front's host sends them
// over mTLS to a sidecar in front of the app (as nginx's pair does).

// gatewayRoute sends every path of the load generator's Host
// (upstream.bench) and of the front's to gw-upstream.
const gatewayRoute = `apiVersion: trellis.dev/v1alpha1
kind: GatewayRoute
metadata: {name: bench, namespace: bench}
spec:
  hosts: [upstream.bench, 127.0.0.1, localhost]
  rules:
  - service: gw-upstream
`

// startGateway starts a sidecar for gw-upstream in front of app and a
// gateway whose plain-HTTP listener is the front.
func (e *env) startGateway(ctx context.Context, app string) (*topology, error) {
	tp, err := e.control(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := e.runCLI(tp.cli, gatewayRoute, "apply", "-f", "-"); err != nil {
		return nil, err
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	srvIn, srvAdmin, gwAdmin, front := ports[0], ports[1], ports[2], ports[3]
	srvTok, err := tp.token("gw-upstream")
	if err != nil {
		return nil, err
	}
	gwTok, err := tp.token("gateway")
	if err != nil {
		return nil, err
	}
	ca := filepath.Join(tp.data, "ca.crt")
	srv, err := e.start("gateway-server", proxyCPU, []string{e.trellis, "proxy", "--control", tp.control, "--ca-file", ca,
		"--namespace", "bench", "--http-proxy-addr", "off", "--log-level", "warn", "--service", "gw-upstream", "--token-file", srvTok,
		"--app-addr", app, "--inbound-addr", srvIn, "--admin-addr", srvAdmin}, nil)
	if err != nil {
		return nil, err
	}
	gw, err := e.start("gateway", proxyCPU, []string{e.trellis, "gateway", "--control", tp.control, "--ca-file", ca,
		"--namespace", "bench", "--log-level", "warn", "--service", "gateway", "--token-file", gwTok,
		"--listen-http", front, "--admin-addr", gwAdmin}, nil)
	if err != nil {
		return nil, err
	}
	for _, a := range []string{srvAdmin, gwAdmin} {
		if err := awaitStatus(ctx, "http://"+a+"/ready", 20*time.Second, srv, gw); err != nil {
			return nil, fmt.Errorf("trellis-gateway: %w", err)
		}
	}
	if err := awaitOK(ctx, front, 1024, 20*time.Second, srv, gw, tp.cp); err != nil {
		return nil, fmt.Errorf("trellis-gateway: %w\n%s", err, gw.logTail())
	}
	return &topology{name: "trellis-gateway", front: front, proxies: []*proc{gw, srv}}, nil
}

// token writes a join token for service in namespace bench and returns
// its file.
func (tp *trellisPairs) token(service string) (string, error) {
	tok, err := tp.e.runCLI(tp.cli, "", "token", "create", "--service", service, "--namespace", "bench")
	if err != nil {
		return "", err
	}
	path := filepath.Join(tp.e.dir, service+".token")
	return path, os.WriteFile(path, []byte(tok), 0o600)
}
