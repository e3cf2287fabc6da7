package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The nginx and HAProxy pairs of the gRPC part: h2c from the load
// generator, HTTP/2 over mutual TLS (TLS 1.3, the peer verified both
// ways) between the two proxies, h2c to the app.

// nginxGRPCClientConf takes h2c (listen ... http2 without ssl: prior
// knowledge, as gRPC clients speak it) and passes each call to the peer
// over a keep-alive pool of TLS connections. nginx sends one call at a
// time on an upstream connection: the pool grows to the calls in flight.
const nginxGRPCClientConf = `worker_processes 1;
daemon off;
user root;
pid {{dir}}/nginx-grpc-client.pid;
error_log {{dir}}/nginx-grpc-client.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path {{dir}}/nginx-grpc-client-tmp;
  client_body_buffer_size 128k;
  upstream peer {
    server {{peer}};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen {{listen}} http2;
    keepalive_requests 1000000;
    location / {
      grpc_pass grpcs://peer;
      grpc_ssl_certificate {{cert}};
      grpc_ssl_certificate_key {{key}};
      grpc_ssl_trusted_certificate {{ca}};
      grpc_ssl_verify on;
      grpc_ssl_name {{servername}};
      grpc_ssl_protocols TLSv1.3;
      grpc_ssl_session_reuse on;
    }
  }
}
`

// nginxGRPCServerConf terminates mutual TLS with HTTP/2 and passes calls to
// the app over h2c keep-alive connections.
const nginxGRPCServerConf = `worker_processes 1;
daemon off;
user root;
pid {{dir}}/nginx-grpc-server.pid;
error_log {{dir}}/nginx-grpc-server.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path {{dir}}/nginx-grpc-server-tmp;
  client_body_buffer_size 128k;
  upstream app {
    server {{upstream}};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen {{listen}} ssl http2;
    keepalive_requests 1000000;
    ssl_certificate {{cert}};
    ssl_certificate_key {{key}};
    ssl_protocols TLSv1.3;
    ssl_client_certificate {{ca}};
    ssl_verify_client on;
    location / {
      grpc_pass grpc://app;
    }
  }
}
`

// haproxyGRPCClientConf takes h2c and multiplexes the calls over HTTP/2
// connections to the peer (http-reuse always).
const haproxyGRPCClientConf = `global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend h2c
  bind {{listen}} proto h2
  default_backend peer
backend peer
  server s {{peer}} ssl crt {{pem}} ca-file {{ca}} verify required alpn h2 ssl-min-ver TLSv1.3
`

const haproxyGRPCServerConf = `global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend mtls
  bind {{listen}} ssl crt {{pem}} ca-file {{ca}} verify required alpn h2 ssl-min-ver TLSv1.3
  default_backend app
backend app
  server app {{upstream}} proto h2
`

// startNginxGRPC starts the gRPC nginx pair in front of app and waits
// until a ping with a size-byte payload goes through.
func (e *env) startNginxGRPC(ctx context.Context, app string, size int, pc *peerCerts) (*topology, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	front, peer := ports[0], ports[1]
	for _, d := range []string{"nginx-grpc-client-tmp", "nginx-grpc-server-tmp"} {
		if err := os.MkdirAll(filepath.Join(e.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	srvConf, err := e.writeConf("nginx-grpc-server.conf", expand(nginxGRPCServerConf, map[string]string{
		"dir": e.dir, "listen": peer, "upstream": app, "cert": pc.ServerCert, "key": pc.ServerKey, "ca": pc.CA}))
	if err != nil {
		return nil, err
	}
	cliConf, err := e.writeConf("nginx-grpc-client.conf", expand(nginxGRPCClientConf, map[string]string{
		"dir": e.dir, "listen": front, "peer": peer, "cert": pc.ClientCert, "key": pc.ClientKey, "ca": pc.CA,
		"servername": pc.ServerName}))
	if err != nil {
		return nil, err
	}
	srv, err := e.start("nginx-grpc-server", proxyCPU, []string{"nginx", "-p", e.dir, "-c", srvConf}, nil)
	if err != nil {
		return nil, err
	}
	cl, err := e.start("nginx-grpc-client", proxyCPU, []string{"nginx", "-p", e.dir, "-c", cliConf}, nil)
	if err != nil {
		return nil, err
	}
	if err := awaitPing(ctx, front, size, 10*time.Second, srv, cl); err != nil {
		b, _ := os.ReadFile(filepath.Join(e.dir, "nginx-grpc-client.error.log"))
		return nil, fmt.Errorf("nginx gRPC pair: %w\n%s", err, b)
	}
	return &topology{name: "nginx", front: front, proxies: []*proc{cl, srv}}, nil
}

// startHAProxyGRPC starts the gRPC HAProxy pair in front of app and waits
// until a ping with a size-byte payload goes through.
func (e *env) startHAProxyGRPC(ctx context.Context, app string, size int, pc *peerCerts) (*topology, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	front, peer := ports[0], ports[1]
	srvConf, err := e.writeConf("haproxy-grpc-server.cfg", expand(haproxyGRPCServerConf, map[string]string{
		"listen": peer, "upstream": app, "pem": pc.ServerPEM, "ca": pc.CA}))
	if err != nil {
		return nil, err
	}
	cliConf, err := e.writeConf("haproxy-grpc-client.cfg", expand(haproxyGRPCClientConf, map[string]string{
		"listen": front, "peer": peer, "pem": pc.ClientPEM, "ca": pc.CA}))
	if err != nil {
		return nil, err
	}
	srv, err := e.start("haproxy-grpc-server", proxyCPU, []string{"haproxy", "-db", "-f", srvConf}, nil)
	if err != nil {
		return nil, err
	}
	cl, err := e.start("haproxy-grpc-client", proxyCPU, []string{"haproxy", "-db", "-f", cliConf}, nil)
	if err != nil {
		return nil, err
	}
	if err := awaitPing(ctx, front, size, 10*time.Second, srv, cl); err != nil {
		return nil, fmt.Errorf("haproxy gRPC pair: %w", err)
	}
	return &topology{name: "haproxy", front: front, proxies: []*proc{cl, srv}}, nil
}
