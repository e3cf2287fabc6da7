package jointoken_test

import (
	"crypto/elliptic"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/jointoken"
)

var webID = spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")

// FuzzVerifyToken feeds arbitrary strings to Verify. It must never panic,
// must fail only with one of its typed errors, and may accept only a token
// for a workload in its trust domain.
func FuzzVerifyToken(f *testing.F) {
	key := mustECDSA(f, elliptic.P256())
	a := jointoken.New(key, td, jointoken.Options{Now: clock.NewFake(t0).Now})
	tok, _, err := a.Issue("web", "shop", "web", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": webID.String()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		tok,
		parts[0] + "." + parts[1] + ".",
		parts[0] + "." + parts[1],
		none,
		"",
		"...",
		"a.b.c",
		"eyJhbGciOiJFUzI1NiJ9.bnVsbA.AAAA", // {"alg":"ES256"}.null
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, s string) {
		c, err := a.Verify(s)
		if err != nil {
			if !errors.Is(err, jointoken.ErrInvalid) && !errors.Is(err, jointoken.ErrExpired) {
				t.Errorf("err = %v, not one of the typed token errors", err)
			}
			if !c.SPIFFEID.IsZero() {
				t.Errorf("claims %+v returned alongside error %v", c, err)
			}
			return
		}
		if !c.SPIFFEID.MemberOf(td) || c.ID == "" || c.Service == "" {
			t.Errorf("accepted token with claims %+v", c)
		}
	})
}
