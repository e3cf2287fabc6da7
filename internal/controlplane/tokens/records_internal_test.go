package tokens

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/bolt"
)

// ForIdentity reads one identity's records through the index, and finds
// records a store held before the index existed.
func TestForIdentityIndex(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	old := adminapi.TokenInfo{ID: "old1", SPIFFEID: "spiffe://trellis.local/ns/shop/sa/catalog", Service: "catalog"}
	val, _ := json.Marshal(old)
	if _, err := st.Txn(ctx, store.Op{Type: store.OpPut, Key: tokenPrefix + old.ID, Value: val, IfModRevision: 0}); err != nil {
		t.Fatal(err)
	}
	r := storeRecords{st}
	for _, info := range []adminapi.TokenInfo{
		{ID: "new1", SPIFFEID: old.SPIFFEID, Service: "catalog"},
		{ID: "new2", SPIFFEID: "spiffe://trellis.local/ns/shop/sa/frontend", Service: "frontend"},
	} {
		if err := r.Create(ctx, info); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[string][]string{
		old.SPIFFEID: {"new1", "old1"},
		"spiffe://trellis.local/ns/shop/sa/frontend": {"new2"},
		"spiffe://trellis.local/ns/shop/sa/nobody":   nil,
	} {
		got, err := r.ForIdentity(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, g := range got {
			ids = append(ids, g.ID)
		}
		if len(ids) != len(want) || (len(ids) > 0 && (ids[0] != want[0] || ids[len(ids)-1] != want[len(want)-1])) {
			t.Errorf("ForIdentity(%s) = %v, want %v", id, ids, want)
		}
	}
}
