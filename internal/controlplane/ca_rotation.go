package controlplane

import (
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane/registry"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshca"
)

// Root rotation with overlap (docs/identity.md):
//
//  1. rotate: the CA makes a new root and intermediate and signs with them
//     from now on; the bundle holds the old and the new root. Every
//     snapshot carries both roots and Snapshot.issuer = the new
//     intermediate, so each proxy renews at once; the control plane's own
//     serving certificate is reissued. New leaves also carry the new root
//     cross-signed by the old one, so a peer that has not applied the new
//     bundle yet still verifies them: no handshake fails in between.
//  2. proxies report their certificate's issuer and their trust roots
//     (Report); GET /api/v1/ca shows the progress.
//  3. retire-old: refused while any registered proxy lacks a certificate
//     from the active intermediate or the active root; then the bundle
//     shrinks to the active root and is pushed again.

// errRetireRefused: some proxy still depends on an old root.
var errRetireRefused = errors.New("ca retire-old refused")

// maxRetireBlockersNamed bounds the proxies a refusal names.
const maxRetireBlockersNamed = 10

// caChange is what a rotation or retirement did.
type caChange struct {
	added, retired []adminapi.CARoot
	status         adminapi.CAStatus
}

// rotateCA starts a root rotation and pushes its result; r is the admin
// request, for the audit event.
func (s *Server) rotateCA(r *http.Request) (caChange, error) {
	s.caMu.Lock()
	defer s.caMu.Unlock()
	prevIssuer, prevRoots := s.ca.IssuerID(), s.ca.RootIDs()
	err := s.ca.Rotate()
	// A late error (writing ca.crt) comes after the CA switched: act on
	// what the CA now uses either way.
	if s.ca.IssuerID() != prevIssuer {
		s.caChanged()
	}
	if err != nil {
		return caChange{}, err
	}
	added := s.ca.ActiveRoot()
	s.log.Info("ca rotated: signing with a new intermediate; proxies renew now", "new_root", identity.CertID(added),
		"issuer", s.ca.IssuerID(), "previous_issuer", prevIssuer, "roots", len(s.ca.Roots()))
	s.audit.record(adminEvent(r, "ca.rotated", map[string]string{
		"new_root": identity.CertID(added), "issuer": s.ca.IssuerID(), "previous_issuer": prevIssuer,
		"roots": strings.Join(s.ca.RootIDs(), ","), "previous_roots": strings.Join(prevRoots, ","),
	}))
	return caChange{added: caRootsInfo([]*x509.Certificate{added}, added), status: s.caStatusLocked()}, nil
}

// retireOldCA drops every root but the active one, unless a registered
// proxy still depends on another.
func (s *Server) retireOldCA(r *http.Request) (caChange, error) {
	s.caMu.Lock()
	defer s.caMu.Unlock()
	if s.ca.External() {
		_, err := s.ca.RetireOld() // refuses, saying what to do
		return caChange{}, err
	}
	if len(s.ca.Roots()) < 2 {
		return caChange{}, fmt.Errorf("ca retire-old: %w", meshca.ErrNotRotating)
	}
	st := s.caStatusLocked()
	if !st.CanRetire {
		return caChange{}, retireRefusal(st.Proxies)
	}
	retired, err := s.ca.RetireOld()
	if len(s.ca.Roots()) != len(st.Roots) {
		s.caChanged()
	}
	if err != nil {
		return caChange{}, err
	}
	ids := make([]string, len(retired))
	for i, c := range retired {
		ids[i] = identity.CertID(c)
	}
	s.log.Info("ca: old roots retired", "retired", ids, "root", identity.CertID(s.ca.ActiveRoot()))
	s.audit.record(adminEvent(r, "ca.retired", map[string]string{
		"retired_roots": strings.Join(ids, ","), "root": identity.CertID(s.ca.ActiveRoot()), "issuer": s.ca.IssuerID(),
	}))
	return caChange{retired: caRootsInfo(retired, s.ca.ActiveRoot()), status: s.caStatusLocked()}, nil
}

// caChanged follows a change of the CA's issuer or bundle: snapshots
// carry the new bundle and issuer, the serving certificate comes from the
// current intermediate.
func (s *Server) caChanged() {
	s.serving.invalidate()
	s.metrics.intermediateExp.Set(float64(s.ca.IntermediateExpiry().Unix()))
	s.push.kick()
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
		errRetireRefused, p.Blocking, msg)
}

// caStatus is GET /api/v1/ca.
func (s *Server) caStatus() adminapi.CAStatus {
	s.caMu.Lock()
	defer s.caMu.Unlock()
	return s.caStatusLocked()
}

// caStatusLocked reads the CA (s.caMu held, so it does not change midway)
// and every registered proxy's last report.
func (s *Server) caStatusLocked() adminapi.CAStatus {
	issuer, active := s.ca.Intermediates()[0], s.ca.ActiveRoot()
	issuerID, activeID := s.ca.IssuerID(), identity.CertID(active)
	rootIDs := s.ca.RootIDs()
	st := adminapi.CAStatus{
		External: s.ca.External(),
		Rotating: len(rootIDs) > 1,
		Issuer:   adminapi.CAIssuer{ID: issuerID, Subject: issuer.Subject.String(), NotAfter: issuer.NotAfter},
	}
	for i, r := range s.ca.Roots() {
		st.Roots = append(st.Roots, adminapi.CARoot{ID: rootIDs[i], Subject: r.Subject.String(), NotBefore: r.NotBefore, NotAfter: r.NotAfter, Active: rootIDs[i] == activeID})
	}
	var pending []adminapi.CAProxy
	for _, c := range s.push.reg.CertStates() {
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
func certLacks(c registry.CertState, issuerID, activeID string, rootIDs []string) (lacks []string, blocks bool) {
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

// trust is the bundle and issuer snapshots are built with.
func (p *pusher) trust() ([][]byte, string) {
	var issuer string
	if p.issuer != nil {
		issuer = p.issuer()
	}
	return p.roots(), issuer
}

// caRootsInfo renders certificates as CARoots.
func caRootsInfo(certs []*x509.Certificate, active *x509.Certificate) []adminapi.CARoot {
	out := make([]adminapi.CARoot, len(certs))
	for i, c := range certs {
		out[i] = adminapi.CARoot{ID: identity.CertID(c), Subject: c.Subject.String(), NotBefore: c.NotBefore, NotAfter: c.NotAfter, Active: c.Equal(active)}
	}
	return out
}
