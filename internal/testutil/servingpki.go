package testutil

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// ServingPKI is an operator's web PKI for tests: a CA (CAFile, Pool) that
// issues server certificates for DNS names, as a gateway's --tls-cert.
type ServingPKI struct {
	CAFile string
	Pool   *x509.CertPool
	dir    string
	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	serial atomic.Int64
}

// NewServingPKI writes a fresh CA into dir.
func NewServingPKI(t testing.TB, dir string) *ServingPKI {
	t.Helper()
	key := newECKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Web CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &ServingPKI{CAFile: filepath.Join(dir, "web-ca.pem"), Pool: x509.NewCertPool(), dir: dir, ca: ca, key: key}
	p.Pool.AddCert(ca)
	p.serial.Store(1)
	writePEM(t, p.CAFile, "CERTIFICATE", der)
	return p
}

// Issue writes a certificate for names (the first is its common name) and
// its key as base.pem and base-key.pem (0600), replacing them if they
// exist, and returns the paths and the certificate's serial.
func (p *ServingPKI) Issue(t testing.TB, base string, names ...string) (certFile, keyFile string, serial int64) {
	t.Helper()
	key := newECKey(t)
	serial = p.serial.Add(1)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(12 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, base+".pem"), filepath.Join(p.dir, base+"-key.pem")
	// Key first, then the certificate: a reader polling between the two
	// sees a pair that does not match, and keeps the old one.
	writeAtomic(t, keyFile, "PRIVATE KEY", keyDER)
	writeAtomic(t, certFile, "CERTIFICATE", der)
	return certFile, keyFile, serial
}

func writeAtomic(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	tmp := path + ".tmp"
	writePEM(t, tmp, typ, der)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
