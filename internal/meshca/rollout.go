package meshca

import (
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/identity"
)

// Root rotation with overlap across the mesh (docs/identity.md):
//
//  1. rotate: the CA makes a new root and intermediate and signs with them
//     from now on; the bundle holds the old and the new root. Every
//     snapshot carries both roots and Snapshot.issuer = the new
//     intermediate, so each proxy renews at once; the control plane's own
//     serving certificate is reissued. New leaves also carry the new root
//     cross-signed by the old one, so a peer that has not applied the new
//     bundle yet still verifies them: no handshake fails in between.
//  2. proxies report their certificate's issuer and their trust roots
//     (Report); GET /api/v1/ca shows the progress (Rollout.Status).
//  3. retire-old: refused while any registered proxy lacks a certificate
//     from the active intermediate or the active root; then the bundle
//     shrinks to the active root and is pushed again.

// ErrRetireRefused: some proxy still depends on an old root.
var ErrRetireRefused = errors.New("ca retire-old refused")

// maxRetireBlockersNamed bounds the proxies a refusal names.
const maxRetireBlockersNamed = 10

// ProxyCert is what one registered proxy last reported about its
// certificate and trust anchors: what a rotation waits on. Its fields are
// those of the control plane registry's CertState, which converts to it.
type ProxyCert struct {
	Instance  string
	SPIFFEID  string
	Service   string
	Namespace string
	// Connected is false for a proxy within its grace period after its
	// stream ended; its last report still stands.
	Connected bool
	// CertIssuer is the hex SHA-256 of the DER of the CA certificate that
	// issued the proxy's certificate ("" before the first report).
	CertIssuer string
	// TrustRoots are the hex SHA-256 of the DER of each trust anchor the
	// proxy verifies peers with.
	TrustRoots []string
	// CertNotAfter is the certificate's expiry (zero before a report).
	CertNotAfter time.Time
}

// Rollout runs the root rotations of one CA across the proxies that
// trust it: it serializes Rotate and RetireOld with the check of what
// every registered proxy reports. Safe for concurrent use.
type Rollout struct {
	ca      *CA
	proxies func() []ProxyCert
	changed func()

	mu sync.Mutex // serializes rotation and retirement with their checks
}

// NewRollout returns the rollout of ca. proxies lists every registered
// proxy (connected or within its grace period) with its last report; the
// result is the rollout's. changed is called, with the rollout's lock
// held, after the CA's issuer or trust bundle changed: the caller pushes
// the new bundle and issuer and reissues what it serves.
func NewRollout(ca *CA, proxies func() []ProxyCert, changed func()) *Rollout {
	return &Rollout{ca: ca, proxies: proxies, changed: changed}
}

// Change is what a rotation or retirement did.
type Change struct {
	Added, Retired []adminapi.CARoot
	// Status is the status right after the change.
	Status adminapi.CAStatus
	// PrevIssuer and PrevRoots are the issuer and the root IDs before it.
	PrevIssuer string
	PrevRoots  []string
}

// Rotate starts a root rotation (CA.Rotate). done, when not nil, is
// called with what it did before the lock is released (the CA cannot
// change meanwhile), so that logs and audit records of concurrent changes
// keep their order.
func (r *Rollout) Rotate(done func(Change)) (Change, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prevIssuer, prevRoots := r.ca.IssuerID(), r.ca.RootIDs()
	err := r.ca.Rotate()
	// A late error (writing ca.crt) comes after the CA switched: act on
	// what the CA now uses either way.
	if r.ca.IssuerID() != prevIssuer {
		r.changed()
	}
	if err != nil {
		return Change{}, err
	}
	added := r.ca.ActiveRoot()
	ch := Change{Added: rootsInfo([]*x509.Certificate{added}, added), Status: r.statusLocked(), PrevIssuer: prevIssuer, PrevRoots: prevRoots}
	if done != nil {
		done(ch)
	}
	return ch, nil
}

// RetireOld drops every root but the active one (CA.RetireOld), unless a
// registered proxy still depends on another (ErrRetireRefused, naming
// them). done is as for Rotate.
func (r *Rollout) RetireOld(done func(Change)) (Change, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ca.External() {
		_, err := r.ca.RetireOld() // refuses, saying what to do
		return Change{}, err
	}
	if len(r.ca.Roots()) < 2 {
		return Change{}, fmt.Errorf("ca retire-old: %w", ErrNotRotating)
	}
	prevIssuer, prevRoots := r.ca.IssuerID(), r.ca.RootIDs()
	st := r.statusLocked()
	if !st.CanRetire {
		return Change{}, retireRefusal(st.Proxies)
	}
	retired, err := r.ca.RetireOld()
	if len(r.ca.Roots()) != len(st.Roots) {
		r.changed()
	}
	if err != nil {
		return Change{}, err
	}
	ch := Change{Retired: rootsInfo(retired, r.ca.ActiveRoot()), Status: r.statusLocked(), PrevIssuer: prevIssuer, PrevRoots: prevRoots}
	if done != nil {
		done(ch)
	}
	return ch, nil
}

// retireRefusal names up to maxRetireBlockersNamed proxies that block the
// retirement and what each lacks.
func retireRefusal(p adminapi.CAProgress) error {
	var names []string
	for _, px := range p.Pending {
		if px.BlocksRetire && len(names) < maxRetireBlockersNamed {
			names = append(names, fmt.Sprintf("%s.%s/%s (%s)", px.Service, px.Namespace, px.Instance, strings.Join(px.Lacks, "; ")))
		}
	}
	msg := strings.Join(names, ", ")
	if p.Blocking > len(names) {
		msg += fmt.Sprintf(", and %d more", p.Blocking-len(names))
	}
	return fmt.Errorf("%w: %d registered proxies still depend on an old root: %s; proxies renew at once after a rotation and report right after: wait until `trellis ca status` shows them done, or stop proxies that are gone (they leave after the endpoint grace period)",
		ErrRetireRefused, p.Blocking, msg)
}

// Status reads the CA's roots and issuer and how far every registered
// proxy is with them (GET /api/v1/ca).
func (r *Rollout) Status() adminapi.CAStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statusLocked()
}

// statusLocked reads the CA (r.mu held, so it does not change midway)
// and every registered proxy's last report.
func (r *Rollout) statusLocked() adminapi.CAStatus {
	issuer, active := r.ca.Intermediates()[0], r.ca.ActiveRoot()
	issuerID, activeID := r.ca.IssuerID(), identity.CertID(active)
	rootIDs := r.ca.RootIDs()
	st := adminapi.CAStatus{
		External: r.ca.External(),
		Rotating: len(rootIDs) > 1,
		Issuer:   adminapi.CAIssuer{ID: issuerID, Subject: issuer.Subject.String(), NotAfter: issuer.NotAfter},
	}
	for i, root := range r.ca.Roots() {
		st.Roots = append(st.Roots, adminapi.CARoot{ID: rootIDs[i], Subject: root.Subject.String(), NotBefore: root.NotBefore, NotAfter: root.NotAfter, Active: rootIDs[i] == activeID})
	}
	var pending []adminapi.CAProxy
	for _, c := range r.proxies() {
		lacks, blocks := certLacks(c, issuerID, activeID, rootIDs)
		if blocks {
			st.Proxies.Blocking++
		}
		if c.Connected {
			st.Proxies.Connected++
			if len(lacks) == 0 {
				st.Proxies.Done++
			}
		}
		if len(lacks) == 0 {
			continue
		}
		px := adminapi.CAProxy{Instance: c.Instance, Service: c.Service, Namespace: c.Namespace, SPIFFEID: c.SPIFFEID,
			Connected: c.Connected, CertIssuer: c.CertIssuer, Lacks: lacks, BlocksRetire: blocks}
		if !c.CertNotAfter.IsZero() {
			t := c.CertNotAfter
			px.CertNotAfter = &t
		}
		pending = append(pending, px)
	}
	slices.SortFunc(pending, func(a, b adminapi.CAProxy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Instance, b.Instance))
	})
	st.Proxies.PendingTotal = len(pending)
	// Blockers first within the cap, so a refusal can name them.
	slices.SortStableFunc(pending, func(a, b adminapi.CAProxy) int {
		switch {
		case a.BlocksRetire == b.BlocksRetire:
			return 0
		case a.BlocksRetire:
			return -1
		}
		return 1
	})
	if len(pending) > adminapi.MaxCAPending {
		pending = pending[:adminapi.MaxCAPending]
	}
	st.Proxies.Pending = pending
	st.CanRetire = st.Rotating && st.Proxies.Blocking == 0 && !st.External
	return st
}

// certLacks says what a proxy does not have yet: a certificate from the
// active intermediate, each root of the bundle. blocks: it lacks the
// certificate or the active root, which retiring the others would cut off.
func certLacks(c ProxyCert, issuerID, activeID string, rootIDs []string) (lacks []string, blocks bool) {
	switch c.CertIssuer {
	case issuerID:
	case "":
		lacks, blocks = append(lacks, "no certificate report yet"), true
	default:
		lacks, blocks = append(lacks, fmt.Sprintf("certificate from intermediate %s, not the active %s", shortID(c.CertIssuer), shortID(issuerID))), true
	}
	for _, id := range rootIDs {
		if slices.Contains(c.TrustRoots, id) {
			continue
		}
		if id == activeID {
			lacks, blocks = append(lacks, "the active root "+shortID(id)+" in its trust bundle"), true
		} else {
			lacks = append(lacks, "root "+shortID(id)+" in its trust bundle")
		}
	}
	return lacks, blocks
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// rootsInfo renders certificates as CARoots.
func rootsInfo(certs []*x509.Certificate, active *x509.Certificate) []adminapi.CARoot {
	out := make([]adminapi.CARoot, len(certs))
	for i, c := range certs {
		out[i] = adminapi.CARoot{ID: identity.CertID(c), Subject: c.Subject.String(), NotBefore: c.NotBefore, NotAfter: c.NotAfter, Active: c.Equal(active)}
	}
	return out
}
