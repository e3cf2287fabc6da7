package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// TestInconsistentSnapshotNotSent: on a real control plane, a stored policy
// no proxy could compile (written behind the admin API's back) is logged
// with what is wrong and counted, and the snapshot carrying it is never
// sent; the proxy's next snapshot is the first consistent one.
func TestInconsistentSnapshotNotSent(t *testing.T) {
	var logs lockedBuffer
	cp := cptest.StartControlPlane(t, controlplane.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log:\n%s", logs.String())
		}
	})
	catalog, first := connect(t, cp, workloadCert(t, cp, "shop", "catalog"), &pb.Hello{Instance: "catalog-1", Service: "catalog", Namespace: "shop"})
	catalog.ack(t, first)

	const badKey = "/resources/authorizationpolicies/shop/Not_A_Name"
	bad, err := json.Marshal(resource.Object{
		APIVersion: resource.APIVersion,
		Kind:       resource.KindAuthorizationPolicy,
		Metadata:   resource.Metadata{Name: "Not_A_Name", Namespace: "shop"},
		Spec:       json.RawMessage(`{"selector": {"service": "catalog"}, "rules": [{"to": [{"methods": ["GET"]}]}]}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cp.Store.Txn(ctx, store.Op{Type: store.OpPut, Key: badKey, Value: bad, IfModRevision: 0}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "trellis_control_inconsistent_snapshots_total", func() (bool, string) {
		n := controlMetric(t, cp, "trellis_control_inconsistent_snapshots_total")
		return n >= 1, fmt.Sprint(n)
	})
	for _, want := range []string{"failed the consistency check and is not sent", "instance=catalog-1", "policy shop/Not_A_Name: ", "metadata.name"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("control plane log lacks %q", want)
		}
	}

	// Barrier: the stream is ordered, so had the inconsistent snapshot been
	// sent, next would return it (and fail to compile it) before this one.
	if _, err := cp.Store.Txn(ctx, store.Op{Type: store.OpDelete, Key: badKey, IfModRevision: store.AnyRevision}); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client(t).Apply(ctx, decode(t, policyYAML), false); err != nil {
		t.Fatal(err)
	}
	snap := catalog.next(t)
	if got := string(bytes.Join(snap.GetPolicies(), nil)); !strings.Contains(got, "frontend-reads-catalog") || strings.Contains(got, "Not_A_Name") {
		t.Errorf("next snapshot's policies %s, want frontend-reads-catalog only", got)
	}
}

// lockedBuffer is a log destination tests read while servers write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
