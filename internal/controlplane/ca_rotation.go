package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshca"
)

// Root rotation runs in meshca.Rollout (the steps: internal/meshca,
// rollout.go); the server gives it the registry's certificate reports,
// follows its changes and logs and audits them. With a shared CA
// (Config.CAShare), a change made here is published before it is logged
// and audited, and other replicas' changes are reloaded.

// CAShare shares the CA with other control-plane replicas
// (Config.CAShare; internal/kube/casecret's Share).
type CAShare interface {
	// Where names it for messages.
	Where() string
	// Follow follows the other replicas' changes until ctx ends: after
	// each it has written the data dir and calls reload. It returns once
	// it is in step.
	Follow(ctx context.Context, reload func()) error
	// Publish stores the data dir's CA after a change made here; an error
	// wrapping adminapi.ErrConflict means another replica's came first
	// (the data dir then holds that one: reload).
	Publish(ctx context.Context) error
	// Report stores this replica's proxies' certificate reports, and
	// Others returns the other replicas'.
	Report(ctx context.Context, certs []meshca.ProxyCert) error
	Others() []meshca.ProxyCert
}

// caReportEvery is how often a replica sharing the CA stores its proxies'
// certificate reports (the share writes only changes, and a heartbeat).
const caReportEvery = 5 * time.Second

// proxyCerts is every registered proxy's last certificate report, with
// the other replicas' proxies when the CA is shared.
func (s *Server) proxyCerts() []meshca.ProxyCert {
	out := s.ownProxyCerts()
	if s.cfg.CAShare != nil {
		out = append(out, s.cfg.CAShare.Others()...)
	}
	return out
}

func (s *Server) ownProxyCerts() []meshca.ProxyCert {
	states := s.push.reg.CertStates()
	out := make([]meshca.ProxyCert, len(states))
	for i, c := range states {
		out[i] = meshca.ProxyCert(c)
	}
	return out
}

// followCAShare keeps this replica on the shared CA and the share on this
// replica's proxies' reports, until ctx ends.
func (s *Server) followCAShare(ctx context.Context) error {
	sh := s.cfg.CAShare
	if err := sh.Follow(ctx, func() { _ = s.reloadCA() }); err != nil {
		return err
	}
	s.wg.Go(func() {
		t := time.NewTicker(caReportEvery)
		defer t.Stop()
		for {
			if err := sh.Report(ctx, s.ownProxyCerts()); err != nil && ctx.Err() == nil {
				s.log.Warn("proxies' certificate reports not shared", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return nil
}

// reloadCA takes a change another replica made to the shared CA.
func (s *Server) reloadCA() error {
	ch, changed, err := s.rollout.Reload()
	if err != nil {
		s.log.Error("ca: reload of the shared CA failed; signing with the previous one", "from", s.cfg.CAShare.Where(), "err", err)
		return err
	}
	if changed {
		s.log.Info("ca: took another replica's change", "from", s.cfg.CAShare.Where(), "issuer", s.ca.IssuerID(),
			"previous_issuer", ch.PrevIssuer, "roots", strings.Join(s.ca.RootIDs(), ","), "previous_roots", strings.Join(ch.PrevRoots, ","))
	}
	return nil
}

// publishCA stores a change made here in the share, if any; on a conflict
// the change is undone (the share put the winner's CA in the data dir).
// It runs inside the rollout's done callback, so the change is not logged
// or audited when it does not stand.
func (s *Server) publishCA(ctx context.Context) error {
	if s.cfg.CAShare == nil {
		return nil
	}
	return s.cfg.CAShare.Publish(ctx)
}

// afterPublish undoes a change the share refused.
func (s *Server) afterPublish(ch meshca.Change, err, pubErr error) (meshca.Change, error) {
	if err == nil && pubErr != nil {
		_ = s.reloadCA()
		return meshca.Change{}, fmt.Errorf("ca: %w", pubErr)
	}
	return ch, err
}

// rotateCA starts a root rotation and pushes its result; r is the admin
// request, for the audit event.
func (s *Server) rotateCA(r *http.Request) (meshca.Change, error) {
	var pubErr error
	ch, err := s.rollout.Rotate(func(ch meshca.Change) {
		if pubErr = s.publishCA(r.Context()); pubErr != nil {
			return
		}
		added := s.ca.ActiveRoot()
		s.log.Info("ca rotated: signing with a new intermediate; proxies renew now", "new_root", identity.CertID(added),
			"issuer", s.ca.IssuerID(), "previous_issuer", ch.PrevIssuer, "roots", len(s.ca.Roots()))
		s.audit.record(adminEvent(r, "ca.rotated", map[string]string{
			"new_root": identity.CertID(added), "issuer": s.ca.IssuerID(), "previous_issuer": ch.PrevIssuer,
			"roots": strings.Join(s.ca.RootIDs(), ","), "previous_roots": strings.Join(ch.PrevRoots, ","),
		}))
	})
	return s.afterPublish(ch, err, pubErr)
}

// retireOldCA drops every root but the active one, unless a registered
// proxy still depends on another.
func (s *Server) retireOldCA(r *http.Request) (meshca.Change, error) {
	var pubErr error
	ch, err := s.rollout.RetireOld(func(ch meshca.Change) {
		if pubErr = s.publishCA(r.Context()); pubErr != nil {
			return
		}
		ids := make([]string, len(ch.Retired))
		for i, c := range ch.Retired {
			ids[i] = c.ID
		}
		s.log.Info("ca: old roots retired", "retired", ids, "root", identity.CertID(s.ca.ActiveRoot()))
		s.audit.record(adminEvent(r, "ca.retired", map[string]string{
			"retired_roots": strings.Join(ids, ","), "root": identity.CertID(s.ca.ActiveRoot()), "issuer": s.ca.IssuerID(),
		}))
	})
	return s.afterPublish(ch, err, pubErr)
}

// caChanged follows a change of the CA's issuer or bundle: snapshots
// carry the new bundle and issuer, the serving certificate comes from the
// current intermediate.
func (s *Server) caChanged() {
	s.serving.Invalidate()
	s.metrics.intermediateExp.Set(float64(s.ca.IntermediateExpiry().Unix()))
	s.push.kick()
}
