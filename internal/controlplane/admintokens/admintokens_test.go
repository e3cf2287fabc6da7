package admintokens_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/controlplane/admintokens"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/bolt"
	"github.com/trellismesh/trellis/internal/store/etcd"
	"github.com/trellismesh/trellis/internal/testutil/etcdtest"
)

// TestBackends: create, authenticate, list, revoke and expiry on each
// store backend (etcd when its binary is there: etcdtest), with two
// services on one store standing for two control-plane replicas.
func TestBackends(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) store.Store
	}{
		{"bolt", func(t *testing.T) store.Store {
			st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}},
		{"etcd", func(t *testing.T) store.Store {
			c := etcdtest.Start(t, 1)
			st, err := etcd.Open(t.Context(), etcd.Config{Endpoints: c.Endpoints(), TLS: c.ClientTLS()})
			if err != nil {
				t.Fatalf("etcd.Open: %v", err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.open(t)
			now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			clock := func() time.Time { return now }
			a, b := admintokens.New(admintokens.StoreRecords(st), clock), admintokens.New(admintokens.StoreRecords(st), clock)
			ctx := t.Context()
			resp, err := a.Create(ctx, adminapi.CreateAdminTokenRequest{Name: "ci", Role: "operator", Namespaces: []string{"shop,ops", "shop"}, TTL: "1h"}, adminauth.RootPrincipal())
			if err != nil {
				t.Fatal(err)
			}
			p, err := b.Authenticate(ctx, resp.Token)
			if err != nil || p.Name != "ci" || p.Role != adminauth.Operator || strings.Join(p.Namespaces, ",") != "ops,shop" {
				t.Fatalf("authenticate on the other service: %+v, %v", p, err)
			}
			for _, bad := range []string{"", "x", resp.Token + "0", resp.Token[:len(resp.Token)-1] + "x", "trellis-admin.nobody.00", "trellis-admin.ci."} {
				if _, err := b.Authenticate(ctx, bad); !errors.Is(err, admintokens.ErrUnauthenticated) {
					t.Errorf("authenticate %q: %v, want ErrUnauthenticated", bad, err)
				}
			}
			// The store holds the digest, not the token.
			kv, err := st.Get(ctx, admintokens.Prefix+"ci")
			if err != nil || strings.Contains(string(kv.Value), resp.Token[len("trellis-admin.ci."):]) {
				t.Errorf("stored record %s (%v) holds the token", kv.Value, err)
			}
			items, err := a.List(ctx)
			if err != nil || len(items) != 1 || items[0].CreatedBy != "root" {
				t.Errorf("list: %+v, %v", items, err)
			}
			if _, err := a.Revoke(ctx, "ci"); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Authenticate(ctx, resp.Token); !errors.Is(err, admintokens.ErrUnauthenticated) || !strings.Contains(err.Error(), "revoked") {
				t.Errorf("revoked token on the other service: %v", err)
			}
			short, err := a.Create(ctx, adminapi.CreateAdminTokenRequest{Name: "short", Role: "viewer", TTL: "1m"}, adminauth.RootPrincipal())
			if err != nil {
				t.Fatal(err)
			}
			now = now.Add(time.Minute)
			if _, err := b.Authenticate(ctx, short.Token); !errors.Is(err, admintokens.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
				t.Errorf("expired token: %v", err)
			}
		})
	}
}
