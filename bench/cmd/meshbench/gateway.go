package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The gateway topologies, beside nginx as a reverse proxy: the load
// generator's requests arrive at `trellis gateway` over plain HTTP (as at
// nginx's client side), and a GatewayRoute for their host sends them over
// mTLS to a sidecar in front of the app (as nginx's pair does).
// trellis-gateway-jwt adds a JWTAuthentication on the gateway and a
// bearer token on every request (one token, as a client reuses it): the
// difference to trellis-gateway is what verifying end users costs.

// gatewayRoute sends every path of the load generator's Host
// (upstream.bench) and of the front's to SERVICE, on gateway GATEWAY only.
const gatewayRoute = `apiVersion: trellis.dev/v1alpha1
kind: GatewayRoute
metadata: {name: {{gateway}}, namespace: bench}
spec:
  hosts: [upstream.bench, 127.0.0.1, localhost]
  gateways: [{{gateway}}.bench]
  rules:
  - service: {{service}}
`

// gatewayJWT makes gateway GATEWAY verify tokens of the bench issuer.
const gatewayJWT = `apiVersion: trellis.dev/v1alpha1
kind: JWTAuthentication
metadata: {name: bench-users, namespace: bench}
spec:
  selector: {service: {{gateway}}}
  issuers:
  - issuer: https://id.bench.example
    audiences: [bench]
    jwks: '{{jwks}}'
`

// startGateway starts a sidecar in front of app and a gateway whose
// plain-HTTP listener is the front; withJWT adds end-user tokens.
func (e *env) startGateway(ctx context.Context, app string, withJWT bool) (*topology, error) {
	tp, err := e.control(ctx)
	if err != nil {
		return nil, err
	}
	name, gateway, service := "trellis-gateway", "gateway", "gw-upstream"
	if withJWT {
		name, gateway, service = "trellis-gateway-jwt", "gateway-jwt", "gwj-upstream"
	}
	vars := map[string]string{"gateway": gateway, "service": service}
	if _, err := e.runCLI(tp.cli, expand(gatewayRoute, vars), "apply", "-f", "-"); err != nil {
		return nil, err
	}
	var header string
	if withJWT {
		jwks, token, err := benchToken()
		if err != nil {
			return nil, err
		}
		vars["jwks"] = jwks
		if _, err := e.runCLI(tp.cli, expand(gatewayJWT, vars), "apply", "-f", "-"); err != nil {
			return nil, err
		}
		header = "Authorization: Bearer " + token
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	srvIn, srvAdmin, gwAdmin, front := ports[0], ports[1], ports[2], ports[3]
	srvTok, err := tp.token(service)
	if err != nil {
		return nil, err
	}
	gwTok, err := tp.token(gateway)
	if err != nil {
		return nil, err
	}
	ca := filepath.Join(tp.data, "ca.crt")
	srv, err := e.start(name+"-server", proxyCPU, []string{e.trellis, "proxy", "--control", tp.control, "--ca-file", ca,
		"--namespace", "bench", "--http-proxy-addr", "off", "--log-level", "warn", "--service", service, "--token-file", srvTok,
		"--app-addr", app, "--inbound-addr", srvIn, "--admin-addr", srvAdmin}, nil)
	if err != nil {
		return nil, err
	}
	gw, err := e.start(name, proxyCPU, []string{e.trellis, "gateway", "--control", tp.control, "--ca-file", ca,
		"--namespace", "bench", "--log-level", "warn", "--service", gateway, "--token-file", gwTok,
		"--listen-http", front, "--admin-addr", gwAdmin}, nil)
	if err != nil {
		return nil, err
	}
	for _, a := range []string{srvAdmin, gwAdmin} {
		if err := awaitStatus(ctx, "http://"+a+"/ready", 20*time.Second, srv, gw); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if withJWT {
		// A bad token must get 401 (the JWTAuthentication is in force)
		// and the load's token 200, before the runs start.
		for _, c := range []struct {
			header string
			code   int
		}{{"Bearer x.y.z", http.StatusUnauthorized}, {strings.TrimPrefix(header, "Authorization: "), http.StatusOK}} {
			if err := awaitStatusCode(ctx, "http://"+front+"/", c.header, c.code, 20*time.Second, srv, gw, tp.cp); err != nil {
				return nil, fmt.Errorf("%s: %w\n%s", name, err, gw.logTail())
			}
		}
	} else if err := awaitOK(ctx, front, 1024, 20*time.Second, srv, gw, tp.cp); err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", name, err, gw.logTail())
	}
	return &topology{name: name, front: front, proxies: []*proc{gw, srv}, header: header}, nil
}

// awaitStatusCode waits until GET url with Authorization auth answers
// code.
func awaitStatusCode(ctx context.Context, url, auth string, code int, timeout time.Duration, ps ...*proc) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	return await(ctx, timeout, ps, func() error {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return err
		}
		req.Host = "upstream.bench"
		req.Header.Set("Authorization", auth)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}, func(last error) error {
		return fmt.Errorf("%s not %d after %s: %v", url, code, timeout, last)
	})
}

// benchToken makes an issuer key and one ES256 token valid a day: the
// inline JWKS and the token.
func benchToken() (jwks, token string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "bench", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		return "", "", err
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "bench"}}, nil)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	token, err = jwt.Signed(sig).Claims(jwt.Claims{Issuer: "https://id.bench.example", Subject: "load", Audience: []string{"bench"},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(24 * time.Hour))}).Serialize()
	return string(set), token, err
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
