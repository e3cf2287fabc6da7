package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a test CA with a server certificate for 127.0.0.1 and localhost
// and a client certificate, as PEM files (keys 0600), valid for a day:
// for the real servers tests run over TLS (rsyslog, etcd).
type PKI struct {
	CAFile, ServerCert, ServerKey, ClientCert, ClientKey string
}

// PKIOptions name the certificates; ServerAlsoClient adds client auth to
// the server certificate (etcd presents it when it dials its peers).
type PKIOptions struct {
	CAName, ServerName, ClientName string
	ServerAlsoClient               bool
	// ServerDNSNames are more names for the server certificate, besides
	// localhost (external hosts in egress tests).
	ServerDNSNames []string
}

// NewPKI writes a fresh PKI into dir.
func NewPKI(t testing.TB, dir string, o PKIOptions) PKI {
	t.Helper()
	now := time.Now()
	caKey := newECKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: o.CAName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := PKI{CAFile: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.CAFile, "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, tmpl *x509.Certificate) (certFile, keyFile string) {
		key := newECKey(t)
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
	serverUse := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if o.ServerAlsoClient {
		serverUse = append(serverUse, x509.ExtKeyUsageClientAuth)
	}
	p.ServerCert, p.ServerKey = leaf("server", 2, &x509.Certificate{
		Subject: pkix.Name{CommonName: o.ServerName}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames: append([]string{"localhost"}, o.ServerDNSNames...), ExtKeyUsage: serverUse,
	})
	p.ClientCert, p.ClientKey = leaf("client", 3, &x509.Certificate{
		Subject: pkix.Name{CommonName: o.ClientName}, DNSNames: []string{o.ClientName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

// ClientTLS is a client configuration with the client certificate,
// trusting only the test CA.
func (p PKI) ClientTLS(t testing.TB) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("testutil: no certificate in %s", p.CAFile)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
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
