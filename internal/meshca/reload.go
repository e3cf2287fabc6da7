package meshca

import (
	"fmt"
	"slices"
)

// Reload loads the CA's state from its data dir again, after another
// process (a control-plane replica sharing the CA) wrote a rotation or a
// retirement there. It reports whether the issuer or the trust bundle
// changed. An external CA never changes this way.
func (ca *CA) Reload() (changed bool, err error) {
	if ca.external {
		return false, nil
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	gen, err := readCurrentGeneration(ca.dataDir)
	if err != nil {
		return false, err
	}
	var st *caState
	if gen != "" {
		st, err = loadGeneration(ca.dataDir, gen, ca.now())
	} else {
		st, err = loadFlat(ca.dataDir, ca.now())
	}
	if err != nil {
		return false, fmt.Errorf("reload ca: %w", err)
	}
	cur := ca.current()
	if cur.issuerID == st.issuerID && slices.Equal(cur.rootIDs, st.rootIDs) {
		return false, nil
	}
	if err := writeBundleIfChanged(ca.dataDir, st.roots); err != nil {
		return false, fmt.Errorf("reload ca: %w", err)
	}
	ca.state.Store(st)
	return true, nil
}

// Reload reloads the CA (CA.Reload) under the rollout's lock, so it never
// interleaves with a rotation or retirement here, and calls the rollout's
// changed func when the issuer or the bundle changed.
func (r *Rollout) Reload() (Change, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prevIssuer, prevRoots := r.ca.IssuerID(), r.ca.RootIDs()
	changed, err := r.ca.Reload()
	if err != nil || !changed {
		return Change{}, false, err
	}
	r.changed()
	return Change{Status: r.statusLocked(), PrevIssuer: prevIssuer, PrevRoots: prevRoots}, true, nil
}
