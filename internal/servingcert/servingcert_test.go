package servingcert_test

import (
	"crypto/tls"
	"os"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/servingcert"
	"github.com/trellismesh/trellis/internal/testutil"
)

func serialFor(t *testing.T, s *servingcert.Store, sni string) int64 {
	t.Helper()
	c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: sni, SupportedVersions: []uint16{tls.VersionTLS13},
		SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256}, SupportedCurves: []tls.CurveID{tls.CurveP256}})
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.Int64()
}

// Certificates are chosen by SNI, the first is the default, a pair that
// changes and loads replaces the old one, and one that does not load
// (a key for another certificate, garbage) keeps the last good one.
func TestStoreBySNIAndReload(t *testing.T) {
	pki := testutil.NewServingPKI(t, t.TempDir())
	aCert, aKey, aSerial := pki.Issue(t, "a", "a.example.com")
	bCert, bKey, bSerial := pki.Issue(t, "b", "b.example.com", "*.b.example.com")
	s, err := servingcert.Load([]servingcert.Pair{{CertFile: aCert, KeyFile: aKey}, {CertFile: bCert, KeyFile: bKey}}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	for sni, want := range map[string]int64{"a.example.com": aSerial, "b.example.com": bSerial, "x.b.example.com": bSerial, "other.test": aSerial, "": aSerial} {
		if got := serialFor(t, s, sni); got != want {
			t.Errorf("SNI %q: serial %d, want %d", sni, got, want)
		}
	}
	if s.Reload() {
		t.Error("Reload reported a change with the files unchanged")
	}
	_, _, a2 := pki.Issue(t, "a", "a.example.com")
	if !s.Reload() || serialFor(t, s, "a.example.com") != a2 || s.Reloads() != 1 {
		t.Errorf("after replacing a: serial %d, want %d (reloads %d)", serialFor(t, s, "a.example.com"), a2, s.Reloads())
	}
	// b's key replaced by a's: does not load, b stays.
	keyA, _ := os.ReadFile(aKey)
	if err := os.WriteFile(bKey, keyA, 0o600); err != nil {
		t.Fatal(err)
	}
	if s.Reload() || serialFor(t, s, "b.example.com") != bSerial {
		t.Errorf("a mismatched pair replaced b: serial %d", serialFor(t, s, "b.example.com"))
	}
	if err := os.WriteFile(bCert, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.Reload() || serialFor(t, s, "b.example.com") != bSerial {
		t.Error("garbage replaced b")
	}
	// Load itself refuses what does not load, naming the file.
	if _, err := servingcert.Load([]servingcert.Pair{{CertFile: bCert, KeyFile: bKey}}, nil); err == nil || !strings.Contains(err.Error(), bCert) {
		t.Errorf("Load of garbage: %v", err)
	}
	if _, err := servingcert.Load(nil, nil); err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Errorf("Load of nothing: %v", err)
	}
	if c := s.TLSConfig(); c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x", c.MinVersion)
	}
}
