package meshca_test

import (
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/testutil"
)

// BenchmarkSignCSR measures one Certify's CA work: parse the CSR, check its
// signature and SANs, sign and parse the leaf.
func BenchmarkSignCSR(b *testing.B) {
	ca, _ := testutil.NewCA(b, "example.org")
	csr, _ := testutil.NewCSR(b, webID.String())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.SignCSR(csr, webID, 24*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignCSRParallel(b *testing.B) {
	ca, _ := testutil.NewCA(b, "example.org")
	csr, _ := testutil.NewCSR(b, webID.String())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ca.SignCSR(csr, webID, 24*time.Hour); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
