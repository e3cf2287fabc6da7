package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/servingcert"
)

// The demo's edge: an ingress gateway (`public` in namespace ingress)
// serving https://shop.example.com at base+443 with a certificate from a
// demo web CA, a demo identity provider serving its JWKS over HTTPS at
// base+450, and two users' tokens. Frontend's policy lets only admins in
// through the gateway.

// DemoHost is the name the gateway serves.
const DemoHost = "shop.example.com"

// demoIssuer is the demo identity provider's issuer.
const demoIssuer = "https://id.shop.example.com"

// Edge is what a user needs to call the demo through its gateway.
type Edge struct {
	// URL is https://shop.example.com:PORT/.
	URL string
	// Addr is the gateway's HTTPS listener (curl --resolve).
	Addr string
	// CAFile is the demo web CA that signed the gateway's certificate.
	CAFile string
	// AdminToken and UserToken are files holding an admin's (alice,
	// groups admin) and a user's (bob, groups ops) JWT, valid a day.
	AdminToken, UserToken string
	Proxy                 *proxy.Proxy
}

func edgePolicies(jwksURL string) string {
	return fmt.Sprintf(`
apiVersion: trellis.dev/v1alpha1
kind: GatewayRoute
metadata: {name: shop-public, namespace: shop}
spec:
  hosts: [%[1]s]
  rules:
  - service: frontend
---
apiVersion: trellis.dev/v1alpha1
kind: JWTAuthentication
metadata: {name: shop-users, namespace: ingress}
spec:
  selector: {service: public}
  issuers:
  - {issuer: "%[2]s", audiences: [shop], jwksURI: "%[3]s", forwardOriginalToken: true}
---
apiVersion: trellis.dev/v1alpha1
kind: JWTAuthentication
metadata: {name: shop-users, namespace: shop}
spec:
  selector: {service: frontend}
  issuers:
  - {issuer: "%[2]s", audiences: [shop], jwksURI: "%[3]s", forwardClaims: {sub: x-user-id}}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: admins-via-gateway, namespace: shop}
spec:
  selector: {service: frontend}
  rules:
  - from: [{namespaces: [ingress], requestPrincipals: ["%[2]s/*"]}]
    when: [{key: "request.auth.claims[groups]", values: [admin]}]
`, DemoHost, demoIssuer, jwksURL)
}

// startEdge starts the identity provider and the gateway, and applies
// the route, the JWTAuthentications and frontend's policy.
func (m *Mesh) startEdge(ctx context.Context, client *adminapi.Client) error {
	dir := filepath.Join(m.DataDir, "edge")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	ca, caKey, err := newCA(filepath.Join(dir, "web-ca.pem"))
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(dir, "shop.pem"), filepath.Join(dir, "shop-key.pem")
	if err := issue(ca, caKey, []string{DemoHost, "id." + DemoHost, "localhost"}, certFile, keyFile); err != nil {
		return err
	}
	// The identity provider, over HTTPS with the same CA.
	idpCert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	signKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &signKey.PublicKey, KeyID: "demo-1", Algorithm: "ES256", Use: "sig"}}}
	idpAddr := m.port(450)
	l, err := net.Listen("tcp", idpAddr)
	if err != nil {
		return fmt.Errorf("demo: identity provider %s: %w (move the demo with --base-port)", idpAddr, err)
	}
	idp := &http.Server{ReadHeaderTimeout: 5 * time.Second, TLSConfig: &tls.Config{Certificates: []tls.Certificate{idpCert}, MinVersion: tls.VersionTLS12},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(jwks)
		})}
	m.servers = append(m.servers, idp)
	go idp.ServeTLS(l, "", "")
	_, idpPort, _ := net.SplitHostPort(idpAddr)
	// The proxies fetch it as localhost, which the certificate names.
	jwksURL := "https://localhost:" + idpPort + "/.well-known/jwks.json"

	m.Edge = &Edge{CAFile: filepath.Join(dir, "web-ca.pem"), AdminToken: filepath.Join(dir, "alice.jwt"), UserToken: filepath.Join(dir, "bob.jwt")}
	for file, who := range map[string]struct {
		sub    string
		groups []string
	}{m.Edge.AdminToken: {"alice", []string{"ops", "admin"}}, m.Edge.UserToken: {"bob", []string{"ops"}}} {
		tok, err := signToken(signKey, who.sub, who.groups)
		if err != nil {
			return err
		}
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	objs, err := resource.Decode([]byte(edgePolicies(jwksURL)), "demo-edge.yaml")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if _, err := client.Apply(ctx, objs, false); err != nil {
		return fmt.Errorf("demo: apply the edge's resources: %w", err)
	}

	tok, err := client.CreateToken(ctx, adminapi.CreateTokenRequest{Service: "public", Namespace: "ingress"})
	if err != nil {
		return fmt.Errorf("demo: token for the gateway: %w", err)
	}
	p, err := proxy.New(proxy.Config{
		ControlAddr: m.Control.GRPCAddr(), CAFile: filepath.Join(m.DataDir, identity.RootCertFile), Token: tok.Token,
		Service: "public", Namespace: "ingress", JWKSCAFile: m.Edge.CAFile,
		InboundAddr: m.port(406), AdminAddr: m.port(410), HTTPProxyAddr: "off", DrainTimeout: 3 * time.Second, StatsInterval: 2 * time.Second,
		Logger:  m.opts.Logger.With("component", "gateway"),
		Gateway: &proxy.GatewayConfig{ListenHTTPS: m.port(443), Certs: []servingcert.Pair{{CertFile: certFile, KeyFile: keyFile}}},
	})
	if err != nil {
		return fmt.Errorf("demo: gateway: %w", err)
	}
	if err := p.Start(ctx); err != nil {
		return fmt.Errorf("demo: gateway: %w", err)
	}
	m.Proxies["gateway"] = p
	m.Edge.Proxy, m.Edge.Addr = p, p.GatewayHTTPSAddr()
	_, port, _ := net.SplitHostPort(m.Edge.Addr)
	m.Edge.URL = "https://" + DemoHost + ":" + port + "/"
	return nil
}

func signToken(key *ecdsa.PrivateKey, sub string, groups []string) (string, error) {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "demo-1"}}, nil)
	if err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	now := time.Now()
	c := jwt.Claims{Issuer: demoIssuer, Subject: sub, Audience: []string{"shop"}, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(24 * time.Hour))}
	tok, err := jwt.Signed(sig).Claims(c).Claims(map[string]any{"groups": groups}).Serialize()
	if err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	return tok, nil
}

// newCA makes the demo's web CA and writes its certificate to file.
func newCA(file string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("demo: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Trellis demo web CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("demo: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("demo: %w", err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, fmt.Errorf("demo: %w", err)
	}
	return ca, key, nil
}

// issue writes a server certificate for names signed by ca, and its key
// (0600).
func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, names []string, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
