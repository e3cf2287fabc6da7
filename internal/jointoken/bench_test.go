package jointoken_test

import (
	"crypto/elliptic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/jointoken"
)

func BenchmarkVerifyToken(b *testing.B) {
	a := jointoken.New(mustECDSA(b, elliptic.P256()), td, jointoken.Options{})
	tok, _, err := a.Issue("web", "shop", "web", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
