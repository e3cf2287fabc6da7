package dataplane_test

import (
	"strings"
	"testing"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

func TestCompileSnapshotIssuer(t *testing.T) {
	ca, _ := testutil.NewCA(t, testTrustDomain)
	issuer := identity.CertID(ca.Intermediates()[0])
	for _, tc := range []struct {
		issuer  string
		wantErr string
	}{
		{"", ""},
		{issuer, ""},
		{"not hex", "is not a hex SHA-256"},
		{issuer[:20], "is not a hex SHA-256"},
	} {
		s, err := meshconfig.Compile(&pb.Snapshot{Version: "1", Mesh: &pb.MeshConfig{MtlsMode: "STRICT", AuthorizationDefault: "deny"},
			TrustBundle: [][]byte{ca.Roots()[0].Raw}, Issuer: tc.issuer})
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("issuer %q: %v", tc.issuer, err)
		case tc.wantErr == "" && s.Issuer != tc.issuer:
			t.Errorf("issuer %q compiled as %q", tc.issuer, s.Issuer)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("issuer %q: %v, want an error containing %q", tc.issuer, err, tc.wantErr)
		}
	}
}
