package adminview

import (
	"bytes"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/testutil"
)

// The status table during a rotation: roots, issuer, progress and what
// each pending proxy lacks.
func TestCAStatusTable(t *testing.T) {
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	notAfter := t0.Add(12 * time.Hour)
	st := adminapi.CAStatus{
		Rotating: true,
		Roots: []adminapi.CARoot{
			{ID: "1111111111111111aaaa", Subject: "CN=Trellis root CA trellis.local,O=Trellis", NotAfter: t0.AddDate(9, 0, 0)},
			{ID: "2222222222222222bbbb", Subject: "CN=Trellis root CA trellis.local generation 2,O=Trellis", NotAfter: t0.AddDate(10, 0, 0), Active: true},
		},
		Issuer: adminapi.CAIssuer{ID: "3333333333333333cccc", Subject: "CN=Trellis intermediate CA trellis.local generation 2,O=Trellis", NotAfter: t0.AddDate(1, 0, 0)},
		Proxies: adminapi.CAProgress{
			Connected: 3, Done: 1, PendingTotal: 3, Blocking: 2,
			Pending: []adminapi.CAProxy{
				{Instance: "a1", Service: "frontend", Namespace: "shop", Connected: true, CertIssuer: "4444444444444444", CertNotAfter: &notAfter,
					Lacks: []string{"certificate from intermediate 444444444444, not the active 333333333333"}, BlocksRetire: true},
				{Instance: "b2", Service: "catalog", Namespace: "shop", Lacks: []string{"no certificate report yet"}, BlocksRetire: true},
			},
		},
	}
	var out bytes.Buffer
	WriteCAStatus(&out, st)
	testutil.Golden(t, "ca-status-rotating.golden", out.String())
}
