package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// peerCerts are the files the nginx and HAProxy pairs use: one CA and two
// ECDSA P-256 leaves with SPIFFE URI SANs, as a mesh would issue them.
type peerCerts struct {
	CA                         string // ca.crt
	ClientCert, ClientKey      string // the client-side proxy's leaf
	ServerCert, ServerKey      string // the server-side proxy's leaf
	ClientPEM, ServerPEM       string // cert followed by key, for HAProxy's crt
	ServerName                 string // DNS SAN of the server leaf, for nginx's proxy_ssl_name
	ClientSPIFFE, ServerSPIFFE string
}

// writePeerCerts generates the CA and leaves into dir.
func writePeerCerts(dir string) (*peerCerts, error) {
	pc := &peerCerts{
		CA:           filepath.Join(dir, "ca.crt"),
		ClientCert:   filepath.Join(dir, "client.crt"),
		ClientKey:    filepath.Join(dir, "client.key"),
		ServerCert:   filepath.Join(dir, "server.crt"),
		ServerKey:    filepath.Join(dir, "server.key"),
		ClientPEM:    filepath.Join(dir, "client.pem"),
		ServerPEM:    filepath.Join(dir, "server.pem"),
		ServerName:   "upstream.bench",
		ClientSPIFFE: "spiffe://bench.local/ns/bench/sa/client",
		ServerSPIFFE: "spiffe://bench.local/ns/bench/sa/upstream",
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	td, _ := url.Parse("spiffe://bench.local")
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"meshbench"}, CommonName: "meshbench CA"},
		URIs:                  []*url.URL{td},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	if err := writePEM(pc.CA, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	leaf := func(serial int64, id string, dns []string, certPath, keyPath, bundle string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		u, _ := url.Parse(id)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			URIs:         []*url.URL{u},
			DNSNames:     dns,
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
		for path, data := range map[string][]byte{certPath: certPEM, keyPath: keyPEM, bundle: append(certPEM, keyPEM...)} {
			if err := os.WriteFile(path, data, 0o600); err != nil {
				return fmt.Errorf("certs: %w", err)
			}
		}
		return nil
	}
	if err := leaf(2, pc.ClientSPIFFE, nil, pc.ClientCert, pc.ClientKey, pc.ClientPEM); err != nil {
		return nil, err
	}
	// nginx's proxy_ssl_verify always checks a host name, so the server
	// leaf also carries one DNS SAN besides its SPIFFE ID.
	if err := leaf(3, pc.ServerSPIFFE, []string{pc.ServerName}, pc.ServerCert, pc.ServerKey, pc.ServerPEM); err != nil {
		return nil, err
	}
	return pc, nil
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
