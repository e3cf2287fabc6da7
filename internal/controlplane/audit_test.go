package controlplane_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// TestControlPlaneEventsReachTheSink: applying a policy, issuing and
// revoking a token and issuing a certificate each become an audit event in
// the hash-chained log and arrive at a file sink; the chain verifies.
func TestControlPlaneEventsReachTheSink(t *testing.T) {
	out := filepath.Join(t.TempDir(), "audit.jsonl")
	cp := cptest.StartControlPlane(t, controlplane.Config{AuditSinks: []string{"file://" + out}})
	ctx := context.Background()
	c := cp.Client(t)
	if _, err := c.Apply(ctx, decode(t, policyYAML), false); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	certify(t, cp, tok.Token, tok.Info.SPIFFEID)
	if _, err := c.RevokeToken(ctx, tok.Info.ID); err != nil {
		t.Fatal(err)
	}
	want := []string{"resource.applied", "token.created", "cert.issued", "token.revoked"}
	var kinds []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		kinds = readKinds(t, out)
		if len(kinds) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Join(kinds, ",") != strings.Join(want, ",") {
		t.Errorf("sink got kinds %v, want %v", kinds, want)
	}
	data, _ := os.ReadFile(out)
	if strings.Contains(string(data), tok.Token) {
		t.Error("the join token itself reached the audit sink")
	}
	rep, err := eventlog.Verify(filepath.Join(cp.DataDir, eventlog.DirName))
	if err != nil || rep.Records != uint64(len(want)) {
		t.Errorf("verify: %+v, %v; want %d intact records", rep, err, len(want))
	}
}

func readKinds(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var kinds []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("sink line %q: %v", sc.Text(), err)
		}
		k, _ := ev["kind"].(string)
		kinds = append(kinds, k)
	}
	return kinds
}
