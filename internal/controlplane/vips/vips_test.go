package vips

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/bolt"
	"github.com/trellismesh/trellis/internal/testutil"
)

func openVIPStore(t *testing.T, path string) store.Store {
	t.Helper()
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mustLoadVIPs(t *testing.T, st store.Store, prefix string) *Allocator {
	t.Helper()
	a, err := Load(context.Background(), st, netip.MustParsePrefix(prefix), testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func svcKeys(n int) []serviceKey {
	var out []serviceKey
	for i := range n {
		out = append(out, serviceKey{Namespace: fmt.Sprintf("ns%d", i%3), Name: fmt.Sprintf("svc%d", i)})
	}
	return out
}

// checkVIPs checks that got holds distinct, usable addresses of prefix.
func checkVIPs(t *testing.T, got map[serviceKey]string, prefix string) {
	t.Helper()
	p := netip.MustParsePrefix(prefix)
	seen := map[string]serviceKey{}
	for k, s := range got {
		ip, err := netip.ParseAddr(s)
		if err != nil || !p.Contains(ip) {
			t.Errorf("%s got %q, want an address in %s", k, s, p)
		}
		if ip == p.Addr() {
			t.Errorf("%s got the network address %s", k, ip)
		}
		if other, dup := seen[s]; dup {
			t.Errorf("%s and %s both got %s", other, k, s)
		}
		seen[s] = k
	}
}

// VIPs are distinct, inside the range, and stay the same across a
// restart on the same store and across services coming and going.
func TestVIPsStableAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := openVIPStore(t, path)
	keys := svcKeys(200)
	first := mustLoadVIPs(t, st, "240.240.0.0/16").Assign(keys)
	if len(first) != len(keys) {
		t.Fatalf("assigned %d VIPs, want %d", len(first), len(keys))
	}
	checkVIPs(t, first, "240.240.0.0/16")
	st.Close()

	st = openVIPStore(t, path)
	t.Cleanup(func() { st.Close() })
	a := mustLoadVIPs(t, st, "240.240.0.0/16")
	// Half the services are gone, then come back in another order, after
	// new ones took addresses.
	later := a.Assign(append(svcKeys(300)[200:], keys[:100]...))
	back := a.Assign([]serviceKey{keys[150], keys[199]})
	for _, k := range keys[:100] {
		if later[k] != first[k] {
			t.Errorf("%s: got %s after a restart, want %s", k, later[k], first[k])
		}
	}
	for _, k := range []serviceKey{keys[150], keys[199]} {
		if back[k] != first[k] {
			t.Errorf("%s came back with %s, want its old %s", k, back[k], first[k])
		}
	}
	all := map[serviceKey]string{}
	for _, m := range []map[serviceKey]string{first, later} {
		for k, v := range m {
			all[k] = v
		}
	}
	checkVIPs(t, all, "240.240.0.0/16")

	kv, err := st.Get(context.Background(), vipPrefix+"ns0/svc0")
	if err != nil || string(kv.Value) != first[keys[0]] {
		t.Errorf("stored %s%s = %q, %v; want %s", vipPrefix, "ns0/svc0", kv.Value, err, first[keys[0]])
	}
}

// A /30 has two usable addresses: the third service gets none, the push
// goes on, and the first two keep theirs.
func TestVIPRangeExhausted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := openVIPStore(t, path)
	a := mustLoadVIPs(t, st, "198.18.0.0/30")
	keys := svcKeys(3)
	got := a.Assign(keys[:2])
	checkVIPs(t, got, "198.18.0.0/30")
	for _, s := range got {
		if s != "198.18.0.1" && s != "198.18.0.2" {
			t.Errorf("got %s; a /30 may only hand out .1 and .2", s)
		}
	}
	again := a.Assign(keys)
	if _, ok := again[keys[2]]; ok || len(again) != 2 {
		t.Errorf("Assign with the range full: %v; want the first two only", again)
	}
	st.Close()

	st = openVIPStore(t, path)
	t.Cleanup(func() { st.Close() })
	after := mustLoadVIPs(t, st, "198.18.0.0/30").Assign([]serviceKey{keys[2], keys[1], keys[0]})
	if len(after) != 2 || after[keys[0]] != got[keys[0]] || after[keys[1]] != got[keys[1]] {
		t.Errorf("after a restart: %v, want %v", after, got)
	}
}

// Two control planes sharing a store never give one address to two
// services, and agree on each service's address.
func TestVIPsTwoWriters(t *testing.T) {
	st := openVIPStore(t, filepath.Join(t.TempDir(), "state.db"))
	t.Cleanup(func() { st.Close() })
	a1 := mustLoadVIPs(t, st, "198.18.0.0/29")
	a2 := mustLoadVIPs(t, st, "198.18.0.0/29") // loaded before a1 writes
	keys := svcKeys(6)
	got1 := a1.Assign(keys[:3])
	got2 := a2.Assign(keys[3:])
	all := map[serviceKey]string{}
	for _, m := range []map[serviceKey]string{got1, got2} {
		for k, v := range m {
			all[k] = v
		}
	}
	if len(all) != 6 {
		t.Fatalf("assigned %d of 6 (the /29 holds 6): %v", len(all), all)
	}
	checkVIPs(t, all, "198.18.0.0/29")
	if got := a2.Assign(keys[:1]); got[keys[0]] != got1[keys[0]] {
		t.Errorf("second writer: %s got %s, want the first writer's %s", keys[0], got[keys[0]], got1[keys[0]])
	}

	// In a /30 (two addresses), the second writer must find the one the
	// first took in the store, and then has room for one service only.
	st30 := openVIPStore(t, filepath.Join(t.TempDir(), "state30.db"))
	t.Cleanup(func() { st30.Close() })
	b1 := mustLoadVIPs(t, st30, "198.18.0.0/30")
	b2 := mustLoadVIPs(t, st30, "198.18.0.0/30")
	first := b1.Assign(keys[:1])
	second := b2.Assign(keys[1:3])
	if len(first) != 1 || len(second) != 1 {
		t.Fatalf("first writer %v, second %v; want one address each", first, second)
	}
	for _, ip := range second {
		if ip == first[keys[0]] {
			t.Errorf("both writers handed out %s", ip)
		}
	}
}

// After --vip-range changes, services whose address lies outside it get
// a new one inside it.
func TestVIPRangeChanged(t *testing.T) {
	st := openVIPStore(t, filepath.Join(t.TempDir(), "state.db"))
	t.Cleanup(func() { st.Close() })
	keys := svcKeys(5)
	old := mustLoadVIPs(t, st, "198.18.0.0/24").Assign(keys)
	got := mustLoadVIPs(t, st, "198.19.0.0/24").Assign(keys)
	if len(got) != 5 {
		t.Fatalf("assigned %d, want 5", len(got))
	}
	checkVIPs(t, got, "198.19.0.0/24")
	again := mustLoadVIPs(t, st, "198.19.0.0/24").Assign(keys)
	for _, k := range keys {
		if again[k] != got[k] || got[k] == old[k] {
			t.Errorf("%s: old %s, new %s, after reload %s", k, old[k], got[k], again[k])
		}
	}
}

func TestVIPsIPv6(t *testing.T) {
	st := openVIPStore(t, filepath.Join(t.TempDir(), "state.db"))
	t.Cleanup(func() { st.Close() })
	got := mustLoadVIPs(t, st, "fd00:7472::/64").Assign(svcKeys(20))
	if len(got) != 20 {
		t.Fatalf("assigned %d, want 20", len(got))
	}
	checkVIPs(t, got, "fd00:7472::/64")
}

func TestValidateRange(t *testing.T) {
	for _, tc := range []struct {
		in, err string
	}{
		{"240.240.0.0/16", ""},
		{"198.18.0.0/30", ""},
		{"fd00::/64", ""},
		{"fd00::/126", ""},
		{"240.240.1.0/16", "did you mean 240.240.0.0/16"},
		{"198.18.0.0/31", "leaves no address"},
		{"198.18.0.1/32", "leaves no address"},
		{"fd00::/127", "leaves no address"},
		{"::ffff:240.240.0.0/112", "plain IPv4 or IPv6"},
	} {
		err := ValidateRange(netip.MustParsePrefix(tc.in))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v, want valid", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "--vip-range")):
			t.Errorf("%s: got %v, want an error naming --vip-range and saying %q", tc.in, err, tc.err)
		}
	}
}
