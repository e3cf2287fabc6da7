package main

import (
	"context"
	"fmt"
)

// The nginx and HAProxy pairs of the gRPC part: h2c from the load
// generator, HTTP/2 over mutual TLS (TLS 1.3, the peer verified both
// ways) between the two proxies, h2c to the app.

// nginxGRPCClientConf takes h2c (listen ... http2 without ssl: prior
// knowledge, as gRPC clients speak it) and passes each call to the peer
// over a keep-alive pool of TLS connections. nginx sends one call at a
// time on an upstream connection: the pool grows to the calls in flight.
const nginxGRPCClientConf = nginxHead + `  client_body_buffer_size 128k;
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
const nginxGRPCServerConf = nginxHead + `  client_body_buffer_size 128k;
  upstream app {
    server {{upstream}};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen {{listen}} ssl http2;
    keepalive_requests 1000000;
` + nginxServerTLS + `    location / {
      grpc_pass grpc://app;
    }
  }
}
`

// haproxyGRPCClientConf takes h2c and multiplexes the calls over HTTP/2
// connections to the peer (http-reuse always).
const haproxyGRPCClientConf = haproxyHead + `frontend h2c
  bind {{listen}} proto h2
  default_backend peer
backend peer
  server s {{peer}} ssl crt {{pem}} ca-file {{ca}} verify required alpn h2 ssl-min-ver TLSv1.3
`

const haproxyGRPCServerConf = haproxyHead + `frontend mtls
  bind {{listen}} ssl crt {{pem}} ca-file {{ca}} verify required alpn h2 ssl-min-ver TLSv1.3
  default_backend app
backend app
  server app {{upstream}} proto h2
`

// startNginxGRPC starts a gRPC nginx pair called name in front of app
// and waits until ready says it serves.
func (e *env) startNginxGRPC(ctx context.Context, name, app string, pc *peerCerts, ready func(front string, ps ...*proc) error) (*topology, error) {
	front, srv, cl, err := e.startPair(e.nginxPair(name, nginxGRPCServerConf, nginxGRPCClientConf, app, pc))
	if err != nil {
		return nil, err
	}
	if err := ready(front, srv, cl); err != nil {
		return nil, fmt.Errorf("nginx gRPC pair: %w\n%s", err, e.nginxErrorLog(name+"-client"))
	}
	return &topology{name: "nginx", front: front, proxies: []*proc{cl, srv}}, nil
}

// startHAProxyGRPC starts a gRPC HAProxy pair called name in front of
// app and waits until ready says it serves.
func (e *env) startHAProxyGRPC(ctx context.Context, name, app string, pc *peerCerts, ready func(front string, ps ...*proc) error) (*topology, error) {
	front, srv, cl, err := e.startPair(haproxyPair(name, haproxyGRPCServerConf, haproxyGRPCClientConf, app, pc))
	if err != nil {
		return nil, err
	}
	if err := ready(front, srv, cl); err != nil {
		return nil, fmt.Errorf("haproxy gRPC pair: %w", err)
	}
	return &topology{name: "haproxy", front: front, proxies: []*proc{cl, srv}}, nil
}
