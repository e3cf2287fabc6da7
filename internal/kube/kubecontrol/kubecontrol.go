// Package kubecontrol is the Kubernetes mode of trellis control: it
// prepares a controlplane.Config whose CA comes from its Secret
// (internal/kube/casecret), whose resources are the custom resources'
// accepted versions (internal/kube/resources), whose registry is
// EndpointSlices and Pods (internal/kube/workloads) and whose Certify
// reviews ServiceAccount tokens (internal/kube/satoken); then it serves the
// admission webhooks with a certificate of the mesh CA. The singletons
// (resource status, the webhooks' caBundle, the CA bundle ConfigMap in
// opted-in namespaces) run on the holder of a Lease (internal/kube/leader).
//
// It must not be linked into the sidecar build (internal/deptest keeps it
// out), and the data plane must not depend on it.
package kubecontrol

import (
	"cmp"
	"sync"

	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/trellismesh/trellis/internal/adminhttp"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/jointoken"
	"github.com/trellismesh/trellis/internal/kube/admintokenrecords"
	"github.com/trellismesh/trellis/internal/kube/cabundle"
	"github.com/trellismesh/trellis/internal/kube/casecret"
	"github.com/trellismesh/trellis/internal/kube/crd"
	"github.com/trellismesh/trellis/internal/kube/inject"
	"github.com/trellismesh/trellis/internal/kube/leader"
	"github.com/trellismesh/trellis/internal/kube/resources"
	"github.com/trellismesh/trellis/internal/kube/satoken"
	"github.com/trellismesh/trellis/internal/kube/tokenrecords"
	"github.com/trellismesh/trellis/internal/kube/webhook"
	"github.com/trellismesh/trellis/internal/kube/workloads"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/version"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// Names of Kubernetes mode's objects (trellis install kubernetes makes
// them; the Lease is made by the first replica to campaign).
const (
	CASecret         = "trellis-ca"
	ValidatingConfig = "trellis-validate"
	MutatingConfig   = "trellis-inject"
	Lease            = "trellis-control"
)

// klogOnce sets klog's logger once per process.
var klogOnce sync.Once

// The admin API's writes go through to the custom resources.
var _ controlplane.ResourceWriter = (*resources.Source)(nil)

// Options are trellis control's Kubernetes mode flags.
type Options struct {
	Kubeconfig   string // --kubeconfig; empty: the in-cluster config
	Namespace    string // --kube-namespace: the control plane's, holding the CA Secret
	WebhookAddr  string // --webhook-addr
	ProxyImage   string // --proxy-image, for injection
	ProxyControl string // --proxy-control-addr, for injection
	CAConfigMap  string // --ca-configmap
	// Identity names this replica in the Lease (env POD_NAME); empty:
	// the host name and a random suffix.
	Identity string
	// LeaseDuration is --lease-duration: how soon another replica takes
	// over the singletons from one that died (zero: 15 s).
	LeaseDuration time.Duration
}

// Prepare sets cfg up for Kubernetes mode before the control plane starts
// (CA from its Secret, resources, workloads, token review), and returns
// what to run once it is up (the webhooks).
func Prepare(ctx context.Context, cfg *controlplane.Config, k Options, log *slog.Logger) (start func() (stop func(), err error), err error) {
	// client-go (leader election, informers) logs through klog: into
	// this process's logger and format, not klog's own on stderr. klog's
	// logger is the process's: the first control plane's (tests run
	// several in one process).
	klogOnce.Do(func() { klog.SetSlogLogger(log) })
	rc, err := RESTConfig(k.Kubeconfig)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("--kubernetes: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("--kubernetes: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(cmp.Or(cfg.TrustDomain, controlplane.DefaultTrustDomain))
	if err != nil {
		return nil, fmt.Errorf("--trust-domain: %w", err)
	}
	// The CRDs must be there: without them the informers never sync.
	if _, err := dyn.Resource(schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "authorizationpolicies"}).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, errors.New("--kubernetes: the trellis.dev custom resources are not installed: apply the CRDs first (docs/kubernetes.md)")
		}
		return nil, fmt.Errorf("--kubernetes: list authorizationpolicies.trellis.dev: %w", err)
	}
	// The Secret holds the CA, made by the first replica, unless the
	// intermediate is given (--ca-cert/--ca-key, from a mounted Secret);
	// it always holds the admin token, so every replica answers the same.
	external := cfg.CACertFile != ""
	created, err := casecret.Ensure(ctx, client, k.Namespace, CASecret, cfg.DataDir, func(dir string) error {
		if !external {
			if _, _, err := meshca.LoadOrCreate(dir, td, meshca.Options{}); err != nil {
				return err
			}
		}
		// The join tokens' signing key (ca/): a VM's token made by one
		// replica must verify on every other.
		if _, err := jointoken.LoadOrCreate(dir, td, jointoken.Options{}); err != nil {
			return err
		}
		_, err := adminhttp.LoadOrCreate(dir)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("--kubernetes: %w", err)
	}
	log.Info("mesh CA and admin token from their Secret", "secret", k.Namespace+"/"+CASecret, "created", created, "ca_from_files", external)
	res := resources.New(dyn, log)
	// The Gateway API's mesh routes, when their CRDs are installed (read
	// at start: installing them later needs a restart).
	if err := watchGatewayAPI(ctx, client, res, log); err != nil {
		return nil, fmt.Errorf("--kubernetes: %w", err)
	}
	if err := res.Start(ctx, 2); err != nil {
		return nil, fmt.Errorf("--kubernetes: %w", err)
	}
	wl := workloads.New(client, td)
	if err := wl.Start(ctx); err != nil {
		return nil, fmt.Errorf("--kubernetes: %w", err)
	}
	cfg.Resources, cfg.Workloads = res, wl
	cfg.WorkloadTokens = &satoken.Reviewer{Client: client, TrustDomain: td}
	// Join tokens' records in ConfigMaps, shared by every replica.
	cfg.TokenRecords = tokenrecords.New(client, k.Namespace)
	// Admin tokens' records in Secrets (they hold the tokens' digests),
	// shared by every replica.
	cfg.AdminTokenRecords = admintokenrecords.New(client, k.Namespace)
	res.FollowLease()
	ca, err := loadCA(cfg, td)
	if err != nil {
		return nil, fmt.Errorf("--kubernetes: %w", err)
	}
	lc, err := leaseConfig(client, k, log)
	if err != nil {
		return nil, err
	}
	m := &mode{client: client, res: res, ca: ca, log: log, bs: cabundle.New(client, k.CAConfigMap, log)}
	m.bs.SetBundle(m.bundle())
	if !external {
		m.share = casecret.NewShare(client, k.Namespace, CASecret, cfg.DataDir, lc.Identity, log)
		m.share.Subscribe(m.caChanged)
		cfg.CAShare = caShare{m.share}
	}
	return func() (func(), error) {
		stopHooks, sc, err := serveWebhooks(ca, k, td, log)
		if err != nil {
			return nil, err
		}
		m.serving.Store(sc)
		lctx, stopLeading := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = leader.Run(lctx, lc, m.lead)
		}()
		return func() {
			stopLeading() // releases a held Lease, so another replica takes over at once
			<-done
			stopHooks()
		}, nil
	}, nil
}

// leaseConfig is this replica's leader election: durations scaled from
// --lease-duration as client-go's defaults are (15 s, 10 s, 2 s).
func leaseConfig(client kubernetes.Interface, k Options, log *slog.Logger) (leader.Config, error) {
	d := cmp.Or(k.LeaseDuration, leader.DefaultLeaseDuration)
	if d < time.Second {
		return leader.Config{}, fmt.Errorf("--lease-duration %v: give 1s or more (15s is usual)", d)
	}
	id := k.Identity
	if id == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		id = cmp.Or(host, "trellis-control") + "_" + hex.EncodeToString(b)
	}
	return leader.Config{Client: client, Namespace: k.Namespace, Name: Lease, Identity: id,
		LeaseDuration: d, RenewDeadline: d * 2 / 3, RetryPeriod: d * 2 / 15, Log: log}, nil
}

// serveWebhooks serves the admission webhooks with a certificate of the
// mesh CA (the Lease holder sets that CA as their configurations'
// caBundle).
func serveWebhooks(ca *meshca.CA, k Options, td spiffeid.TrustDomain, log *slog.Logger) (func(), *meshca.ServingCert, error) {
	l, err := net.Listen("tcp", k.WebhookAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("--webhook-addr %s: %w", k.WebhookAddr, err)
	}
	sc, err := meshca.NewServingCert(ca, time.Now, l.Addr().String(), "trellis-control."+k.Namespace+".svc:443")
	if err != nil {
		l.Close()
		return nil, nil, fmt.Errorf("--kubernetes: webhook certificate: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(webhook.ValidatePath, webhook.Validator{})
	mux.Handle(webhook.InjectPath, webhook.Injector{Config: inject.Config{
		Image: k.ProxyImage, ControlAddr: k.ProxyControl, CAConfigMap: k.CAConfigMap, Audience: satoken.DefaultAudience,
		TrustDomain: td.Name(), Version: version.Version,
	}})
	srv := &http.Server{Handler: mux, TLSConfig: sc.TLSConfig(false), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("webhook server", "err", err)
		}
	}()
	log.Info("admission webhooks served", "addr", l.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, sc, nil
}

// loadCA loads the mesh CA as the control plane will: the given
// intermediate (--ca-cert/--ca-key), or the one in the data dir (from the
// Secret).
func loadCA(cfg *controlplane.Config, td spiffeid.TrustDomain) (*meshca.CA, error) {
	if cfg.CACertFile != "" {
		return meshca.LoadExternal(cfg.CACertFile, cfg.CAKeyFile, td, meshca.Options{})
	}
	ca, _, err := meshca.LoadOrCreate(cfg.DataDir, td, meshca.Options{})
	return ca, err
}

// setCABundles puts the mesh CA into the webhook configurations' caBundle,
// where they exist (trellis install kubernetes makes them).
func setCABundles(ctx context.Context, client kubernetes.Interface, bundle []byte, log *slog.Logger) {
	b64 := base64.StdEncoding.EncodeToString(bundle)
	patch := func(n int) []byte {
		var ops []string
		for i := range n {
			ops = append(ops, fmt.Sprintf(`{"op":"replace","path":"/webhooks/%d/clientConfig/caBundle","value":%q}`, i, b64))
		}
		return []byte("[" + strings.Join(ops, ",") + "]")
	}
	ar := client.AdmissionregistrationV1()
	if v, err := ar.ValidatingWebhookConfigurations().Get(ctx, ValidatingConfig, metav1.GetOptions{}); err == nil {
		if _, err := ar.ValidatingWebhookConfigurations().Patch(ctx, ValidatingConfig, types.JSONPatchType, patch(len(v.Webhooks)), metav1.PatchOptions{}); err != nil {
			log.Warn("set the validating webhook's caBundle", "err", err)
		}
	}
	if m, err := ar.MutatingWebhookConfigurations().Get(ctx, MutatingConfig, metav1.GetOptions{}); err == nil {
		if _, err := ar.MutatingWebhookConfigurations().Patch(ctx, MutatingConfig, types.JSONPatchType, patch(len(m.Webhooks)), metav1.PatchOptions{}); err != nil {
			log.Warn("set the injecting webhook's caBundle", "err", err)
		}
	}
}

// RESTConfig is the kubeconfig's, or the in-cluster config.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		if _, err := os.Stat(kubeconfig); err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return withRate(rc), nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("--kubernetes: not in a cluster (%v): pass --kubeconfig", err)
	}
	return withRate(rc), nil
}

// withRate raises client-go's default client-side rate limit (5 requests a
// second, bursts of 10): token reviews and join-token records are API
// calls, and many proxies reconnect at once after a replica goes.
func withRate(rc *rest.Config) *rest.Config {
	rc.QPS, rc.Burst = 50, 100
	return rc
}
