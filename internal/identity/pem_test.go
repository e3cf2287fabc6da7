package identity_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/testutil"
)

func TestReadKeyFile(t *testing.T) {
	ecKey := mustECDSA(t, elliptic.P256())
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k crypto.Signer) []byte {
		b, err := identity.EncodeKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519DER, err := x509.MarshalPKCS8PrivateKey(x25519)
	if err != nil {
		t.Fatal(err)
	}
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	for _, tc := range []struct {
		name    string
		data    []byte
		mode    os.FileMode
		want    crypto.Signer // nil means an error is wanted
		wantMsg string
	}{
		{name: "pkcs8 ecdsa", data: pkcs8(ecKey), mode: 0o600, want: ecKey},
		{name: "pkcs8 rsa", data: pkcs8(rsaKey), mode: 0o600, want: rsaKey},
		{name: "pkcs8 ed25519", data: pkcs8(edKey), mode: 0o600, want: edKey},
		{name: "sec1 ecdsa", data: block("EC PRIVATE KEY", sec1), mode: 0o600, want: ecKey},
		{name: "pkcs1 rsa", data: block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), mode: 0o600, want: rsaKey},
		{name: "mode 0400", data: pkcs8(ecKey), mode: 0o400, want: ecKey},
		{name: "mode 0700", data: pkcs8(ecKey), mode: 0o700, want: ecKey},
		{name: "mode 0644", data: pkcs8(ecKey), mode: 0o644, wantMsg: "chmod 600"},
		{name: "mode 0640", data: pkcs8(ecKey), mode: 0o640, wantMsg: "chmod 600"},
		{name: "mode 0604", data: pkcs8(ecKey), mode: 0o604, wantMsg: "chmod 600"},
		{name: "mode 0610", data: pkcs8(ecKey), mode: 0o610, wantMsg: "chmod 600"},
		{name: "mode 0601", data: pkcs8(ecKey), mode: 0o601, wantMsg: "chmod 600"},
		{name: "no PEM", data: []byte("not a key"), mode: 0o600, wantMsg: "no PEM block"},
		{name: "empty", data: nil, mode: 0o600, wantMsg: "no PEM block"},
		{name: "certificate block", data: block("CERTIFICATE", []byte{1, 2, 3}), mode: 0o600, wantMsg: "unsupported PEM block"},
		{name: "corrupt pkcs8", data: block("PRIVATE KEY", []byte{0x30, 0x03, 1, 2, 3}), mode: 0o600, wantMsg: "read key"},
		{name: "sec1 labelled pkcs1", data: block("RSA PRIVATE KEY", sec1), mode: 0o600, wantMsg: "read key"},
		{name: "x25519 cannot sign", data: block("PRIVATE KEY", x25519DER), mode: 0o600, wantMsg: "cannot sign"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k.pem")
			writeFile(t, path, tc.data, tc.mode)
			got, err := identity.ReadKeyFile(path)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("ReadKeyFile = %T, nil error; want error containing %q", got, tc.wantMsg)
				}
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("err = %q, want it to contain %q", err, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadKeyFile: %v", err)
			}
			type equaler interface{ Equal(crypto.PrivateKey) bool }
			if !tc.want.(equaler).Equal(got) {
				t.Errorf("ReadKeyFile returned a %T that differs from the %T written", got, tc.want)
			}
		})
	}

	_, err = identity.ReadKeyFile(filepath.Join(t.TempDir(), "missing.key"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadKeyFile(missing) err = %v, want errors.Is os.ErrNotExist", err)
	}
}

func TestCertsPEM(t *testing.T) {
	ca, _ := testutil.NewCA(t, "example.org")
	root, inter := ca.Roots()[0], ca.Intermediates()[0]
	pemKey, err := identity.EncodeKeyPEM(mustECDSA(t, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	both := identity.EncodeCertsPEM(inter, root)

	for _, tc := range []struct {
		name    string
		data    []byte
		want    []*x509.Certificate
		wantMsg string
	}{
		{name: "two certificates in order", data: both, want: []*x509.Certificate{inter, root}},
		{name: "reverse order", data: identity.EncodeCertsPEM(root, inter), want: []*x509.Certificate{root, inter}},
		{name: "other blocks skipped", data: append(append(bytes.Clone(pemKey), both...), pemKey...), want: []*x509.Certificate{inter, root}},
		{name: "text around blocks", data: append(append([]byte("# bundle\n"), both...), "trailer\n"...), want: []*x509.Certificate{inter, root}},
		{name: "empty", data: nil, wantMsg: "no CERTIFICATE"},
		{name: "only a key", data: pemKey, wantMsg: "no CERTIFICATE"},
		{name: "corrupt second certificate", data: append(identity.EncodeCertsPEM(root), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}})...), wantMsg: "parse certificate 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := identity.ParseCertsPEM(tc.data)
			if tc.wantMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("ParseCertsPEM = %d certs, err %v; want error containing %q", len(got), err, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCertsPEM: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("ParseCertsPEM = %d certs, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !got[i].Equal(tc.want[i]) {
					t.Errorf("cert %d = %q, want %q", i, got[i].Subject, tc.want[i].Subject)
				}
			}
		})
	}

	if got := identity.EncodeCertsPEM(); len(got) != 0 {
		t.Errorf("EncodeCertsPEM() = %q, want empty", got)
	}
	path := filepath.Join(t.TempDir(), "bundle.pem")
	writeFile(t, path, both, 0o644)
	if got, err := identity.ReadCertsFile(path); err != nil || len(got) != 2 {
		t.Errorf("ReadCertsFile = %d certs, %v; want 2, nil", len(got), err)
	}
	writeFile(t, path, []byte("nothing"), 0o644)
	if _, err := identity.ReadCertsFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadCertsFile(no certs) err = %v, want an error naming %s", err, path)
	}
}
