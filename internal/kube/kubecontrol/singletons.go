package kubecontrol

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/kube/cabundle"
	"github.com/trellismesh/trellis/internal/kube/casecret"
	"github.com/trellismesh/trellis/internal/kube/resources"
	"github.com/trellismesh/trellis/internal/meshca"
)

// collectEvery is how often the Lease holder deletes gone replicas'
// proxy certificate reports.
const collectEvery = time.Minute

// mode is what Kubernetes mode keeps beside the control plane: the CA the
// webhooks are served with (a second instance over the same data dir), the
// CA bundle ConfigMaps, the resources' status, and the CA's share.
type mode struct {
	client  kubernetes.Interface
	res     *resources.Source
	ca      *meshca.CA
	bs      *cabundle.Syncer
	share   *casecret.Share // nil with a given intermediate
	serving atomic.Pointer[meshca.ServingCert]
	leading atomic.Bool
	log     *slog.Logger
}

// bundle is the trust bundle in PEM.
func (m *mode) bundle() []byte { return identity.EncodeCertsPEM(m.ca.Roots()...) }

// lead runs the singletons on the Lease holder only, until lead ends: the
// resources' status, the CA bundle ConfigMaps, the webhook configurations'
// caBundle, and deleting gone replicas' certificate reports. Everything
// else runs on every replica: config streams and Certify, root rotation
// (serialized by the CA Secret's resourceVersion, casecret.Share), and
// each replica's registry expiry and drift repair of the proxies
// connected to it (the registry itself is the EndpointSlices).
func (m *mode) lead(lead context.Context) {
	m.leading.Store(true)
	defer m.leading.Store(false)
	setCABundles(lead, m.client, m.bundle(), m.log)
	if err := m.bs.Run(lead); err != nil && lead.Err() == nil {
		m.log.Error("CA bundle ConfigMaps not kept", "err", err)
	}
	go m.res.Lead(lead)
	t := time.NewTicker(collectEvery)
	defer t.Stop()
	for {
		select {
		case <-lead.Done():
			return
		case <-t.C:
			if m.share != nil {
				m.share.CollectReports(lead)
			}
		}
	}
}

// caChanged follows a new version of the shared CA (a rotation or
// retirement, here or on another replica): the webhooks' certificate is
// reissued, the bundle for injected pods and, on the Lease holder, the
// webhook configurations' caBundle carry the new roots.
func (m *mode) caChanged() {
	changed, err := m.ca.Reload()
	if err != nil {
		m.log.Error("webhooks: reload of the shared CA failed", "err", err)
		return
	}
	if !changed {
		return
	}
	if sc := m.serving.Load(); sc != nil {
		sc.Invalidate()
	}
	bundle := m.bundle()
	m.bs.SetBundle(bundle)
	if m.leading.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		setCABundles(ctx, m.client, bundle, m.log)
	}
}

// caShare is the CA Secret's share as the control plane takes it
// (controlplane.CAShare): casecret stores the proxies' certificate reports
// as opaque JSON, as it must not depend on the signer's types.
type caShare struct{ *casecret.Share }

var _ controlplane.CAShare = caShare{}

func (c caShare) Report(ctx context.Context, certs []meshca.ProxyCert) error {
	if certs == nil {
		certs = []meshca.ProxyCert{}
	}
	b, err := json.Marshal(certs)
	if err != nil {
		return err
	}
	return c.Share.Report(ctx, b)
}

func (c caShare) Others() []meshca.ProxyCert {
	var out []meshca.ProxyCert
	for _, b := range c.Share.Others() {
		var certs []meshca.ProxyCert
		if err := json.Unmarshal(b, &certs); err != nil {
			// A report this replica cannot read blocks retiring a root
			// (a proxy with no certificate reported), as a safe default.
			certs = []meshca.ProxyCert{{Instance: "unreadable report of another replica", Connected: true}}
		}
		out = append(out, certs...)
	}
	return out
}
