package collectord_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/collectord"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// TestServesAuditVerify: a standalone collector checks its own event log
// for `trellis audit verify --api`, with its admin token only.
func TestServesAuditVerify(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	dir := t.TempDir()
	s, err := collectord.New(context.Background(), collectord.Config{
		DataDir: dir, GRPCAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", ControlAddr: cp.GRPCAddr(),
		CAFile: filepath.Join(cp.DataDir, identity.RootCertFile), Token: token(t, cp, "collector", "trellis-system"),
		Logger: testutil.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Close(context.Background()) })

	for _, tc := range []struct {
		name, token string
		wantStatus  int // 0: success
	}{
		{"collector's token", readToken(t, filepath.Join(dir, "admin.token")), 0},
		{"control plane's token", cp.Token, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := adminapi.NewClient(s.APIURL(), tc.token, "")
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.AuditVerify(context.Background())
			var se *adminapi.StatusError
			switch {
			case tc.wantStatus == 0 && (err != nil || !res.Intact || res.Segments != 1 || res.Tampered != nil):
				t.Errorf("got %+v, %v; want an intact log of one segment", res, err)
			case tc.wantStatus != 0 && (!errors.As(err, &se) || se.Status != tc.wantStatus):
				t.Errorf("got %+v, %v; want status %d", res, err, tc.wantStatus)
			}
		})
	}
}
