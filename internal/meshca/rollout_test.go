package meshca_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/trellismesh/trellis/internal/meshca"
)

// TestRollout walks a rotation through the proxies' reports: retire-old is
// refused, naming the proxies that lack the active intermediate or root,
// until every one reports both; changed follows each switch.
func TestRollout(t *testing.T) {
	ca, _, _ := newClockCA(t)
	var mu sync.Mutex
	var proxies []meshca.ProxyCert
	report := func(instance, issuer string, connected bool, roots ...string) {
		mu.Lock()
		defer mu.Unlock()
		for i := range proxies {
			if proxies[i].Instance == instance {
				proxies[i].CertIssuer, proxies[i].TrustRoots, proxies[i].Connected = issuer, roots, connected
				return
			}
		}
		proxies = append(proxies, meshca.ProxyCert{Instance: instance, Service: "web", Namespace: "shop", SPIFFEID: webID.String(),
			Connected: connected, CertIssuer: issuer, TrustRoots: roots})
	}
	list := func() []meshca.ProxyCert {
		mu.Lock()
		defer mu.Unlock()
		return append([]meshca.ProxyCert(nil), proxies...)
	}
	changed := 0
	r := meshca.NewRollout(ca, list, func() { changed++ })

	oldIssuer, oldRoot := ca.IssuerID(), ca.RootIDs()[0]
	report("a", oldIssuer, true, oldRoot)
	if st := r.Status(); st.Rotating || st.CanRetire || st.Proxies.Connected != 1 || st.Proxies.Done != 1 || len(st.Proxies.Pending) != 0 {
		t.Fatalf("before a rotation: %+v", st)
	}
	if _, err := r.RetireOld(nil); !errors.Is(err, meshca.ErrNotRotating) {
		t.Fatalf("RetireOld without a rotation: %v, want ErrNotRotating", err)
	}

	var done meshca.Change
	ch, err := r.Rotate(func(c meshca.Change) { done = c })
	if err != nil {
		t.Fatal(err)
	}
	newIssuer, newRoot := ca.IssuerID(), ca.RootIDs()[1]
	if changed != 1 || len(ch.Added) != 1 || ch.Added[0].ID != newRoot || !ch.Added[0].Active || ch.PrevIssuer != oldIssuer ||
		len(ch.PrevRoots) != 1 || ch.PrevRoots[0] != oldRoot || done.PrevIssuer != oldIssuer {
		t.Fatalf("Rotate: changed %d, change %+v, done got %+v", changed, ch, done)
	}
	st := ch.Status
	if !st.Rotating || st.CanRetire || st.Proxies.Blocking != 1 || st.Proxies.Done != 0 || len(st.Proxies.Pending) != 1 || !st.Proxies.Pending[0].BlocksRetire {
		t.Fatalf("status after Rotate: %+v", st)
	}

	// b has the new certificate but not the new root; a, disconnected,
	// has nothing new: both block.
	report("b", newIssuer, true, oldRoot)
	report("a", oldIssuer, false, oldRoot)
	_, err = r.RetireOld(nil)
	if !errors.Is(err, meshca.ErrRetireRefused) || !strings.Contains(err.Error(), "2 registered proxies") ||
		!strings.Contains(err.Error(), "web.shop/a (certificate from intermediate") || !strings.Contains(err.Error(), "web.shop/b (the active root") {
		t.Fatalf("RetireOld while proxies lack the new CA: %v", err)
	}
	if changed != 1 || len(ca.Roots()) != 2 {
		t.Fatalf("a refused retirement changed the CA (%d changes, %d roots)", changed, len(ca.Roots()))
	}

	// Trusting the old root still is not a blocker: only lacking it is
	// pending.
	report("a", newIssuer, true, newRoot)
	report("b", newIssuer, true, oldRoot, newRoot)
	if st := r.Status(); !st.CanRetire || st.Proxies.Done != 1 || len(st.Proxies.Pending) != 1 || st.Proxies.Pending[0].Instance != "a" || st.Proxies.Pending[0].BlocksRetire {
		t.Fatalf("status once every proxy has the new CA: %+v", st)
	}
	ch, err = r.RetireOld(nil)
	if err != nil {
		t.Fatal(err)
	}
	if changed != 2 || len(ch.Retired) != 1 || ch.Retired[0].ID != oldRoot || ch.Status.Rotating || len(ca.Roots()) != 1 {
		t.Fatalf("RetireOld: changed %d, change %+v", changed, ch)
	}
}
