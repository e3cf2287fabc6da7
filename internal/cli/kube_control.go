//go:build !trellis_nokube

package cli

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/kube/cabundle"
	"github.com/trellismesh/trellis/internal/kube/casecret"
	"github.com/trellismesh/trellis/internal/kube/crd"
	"github.com/trellismesh/trellis/internal/kube/inject"
	"github.com/trellismesh/trellis/internal/kube/resources"
	"github.com/trellismesh/trellis/internal/kube/satoken"
	"github.com/trellismesh/trellis/internal/kube/webhook"
	"github.com/trellismesh/trellis/internal/kube/workloads"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/version"
)

// Names of Kubernetes mode's objects (trellis install kubernetes makes
// them).
const (
	kubeCASecret         = "trellis-ca"
	kubeValidatingConfig = "trellis-validate"
	kubeMutatingConfig   = "trellis-inject"
)

// kubeFlags are trellis control's Kubernetes mode flags.
type kubeFlags struct {
	enabled                   bool
	kubeconfig, namespace     string
	webhookAddr, proxyImage   string
	proxyControl, caConfigMap string
}

func (k *kubeFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&k.enabled, "kubernetes", false, "Kubernetes mode: resources from the trellis.dev custom resources, workloads from EndpointSlices and Pods, identity from ServiceAccount tokens, the CA in a Secret, the admission webhooks served (docs/kubernetes.md)")
	f.StringVar(&k.kubeconfig, "kubeconfig", "", "with --kubernetes: kubeconfig file (default: the in-cluster config)")
	f.StringVar(&k.namespace, "kube-namespace", envOr("POD_NAMESPACE", "trellis-system"), "with --kubernetes: the control plane's namespace, holding the CA Secret (env POD_NAMESPACE)")
	f.StringVar(&k.webhookAddr, "webhook-addr", "0.0.0.0:15017", "with --kubernetes: where the validating (/validate) and injecting (/inject) webhooks are served, over TLS with a certificate of the mesh CA")
	f.StringVar(&k.proxyImage, "proxy-image", "ghcr.io/trellismesh/trellis-proxy:"+version.Version, "with --kubernetes: the image the injecting webhook gives the sidecar")
	f.StringVar(&k.proxyControl, "proxy-control-addr", "trellis-control.trellis-system.svc:15012", "with --kubernetes: the control plane's gRPC address as injected proxies dial it")
	f.StringVar(&k.caConfigMap, "ca-configmap", "trellis-ca-bundle", "with --kubernetes: the ConfigMap injected pods mount the mesh CA bundle from")
}

// kubeMode prepares cfg for Kubernetes mode before the control plane
// starts, and returns what to run once it is up.
func kubeMode(ctx context.Context, cfg *controlplane.Config, k kubeFlags, log *slog.Logger) (start func() (stop func(), err error), err error) {
	if !k.enabled {
		return func() (func(), error) { return func() {}, nil }, nil
	}
	rc, err := restConfig(k.kubeconfig)
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
	if cfg.CACertFile == "" {
		created, err := casecret.Ensure(ctx, client, k.namespace, kubeCASecret, cfg.DataDir, func(dir string) error {
			_, _, err := meshca.LoadOrCreate(dir, td, meshca.Options{})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("--kubernetes: %w", err)
		}
		log.Info("mesh CA from its Secret", "secret", k.namespace+"/"+kubeCASecret, "created", created)
	}
	res := resources.New(dyn, log)
	if err := res.Start(ctx, 2); err != nil {
		return nil, fmt.Errorf("--kubernetes: %w", err)
	}
	wl := workloads.New(client, td)
	if err := wl.Start(ctx); err != nil {
		return nil, fmt.Errorf("--kubernetes: %w", err)
	}
	cfg.Resources, cfg.Workloads = res, wl
	cfg.WorkloadTokens = &satoken.Reviewer{Client: client, TrustDomain: td}
	if pemBundle, err := os.ReadFile(filepath.Join(cfg.DataDir, "ca.crt")); err == nil {
		// The bundle injected pods mount, in every opted-in namespace.
		bs := cabundle.New(client, k.caConfigMap, log)
		bs.SetBundle(pemBundle)
		if err := bs.Run(ctx); err != nil {
			return nil, fmt.Errorf("--kubernetes: %w", err)
		}
	}
	return func() (func(), error) {
		return serveWebhooks(ctx, client, cfg, k, td, log)
	}, nil
}

// serveWebhooks serves the admission webhooks with a certificate of the
// mesh CA and sets that CA as their configurations' caBundle.
func serveWebhooks(ctx context.Context, client kubernetes.Interface, cfg *controlplane.Config, k kubeFlags, td spiffeid.TrustDomain, log *slog.Logger) (func(), error) {
	ca, _, err := meshca.LoadOrCreate(cfg.DataDir, td, meshca.Options{})
	if err != nil {
		return nil, fmt.Errorf("--kubernetes: %w", err)
	}
	l, err := net.Listen("tcp", k.webhookAddr)
	if err != nil {
		return nil, fmt.Errorf("--webhook-addr %s: %w", k.webhookAddr, err)
	}
	sc, err := meshca.NewServingCert(ca, time.Now, l.Addr().String(), "trellis-control."+k.namespace+".svc:443")
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("--kubernetes: webhook certificate: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(webhook.ValidatePath, webhook.Validator{})
	mux.Handle(webhook.InjectPath, webhook.Injector{Config: inject.Config{
		Image: k.proxyImage, ControlAddr: k.proxyControl, CAConfigMap: k.caConfigMap, Audience: satoken.DefaultAudience,
		TrustDomain: td.Name(), Version: version.Version,
	}})
	srv := &http.Server{Handler: mux, TLSConfig: sc.TLSConfig(false), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("webhook server", "err", err)
		}
	}()
	var bundle strings.Builder
	for _, r := range ca.Roots() {
		_ = pem.Encode(&bundle, &pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})
	}
	setCABundles(ctx, client, []byte(bundle.String()), log)
	log.Info("admission webhooks served", "addr", l.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
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
	if v, err := ar.ValidatingWebhookConfigurations().Get(ctx, kubeValidatingConfig, metav1.GetOptions{}); err == nil {
		if _, err := ar.ValidatingWebhookConfigurations().Patch(ctx, kubeValidatingConfig, types.JSONPatchType, patch(len(v.Webhooks)), metav1.PatchOptions{}); err != nil {
			log.Warn("set the validating webhook's caBundle", "err", err)
		}
	}
	if m, err := ar.MutatingWebhookConfigurations().Get(ctx, kubeMutatingConfig, metav1.GetOptions{}); err == nil {
		if _, err := ar.MutatingWebhookConfigurations().Patch(ctx, kubeMutatingConfig, types.JSONPatchType, patch(len(m.Webhooks)), metav1.PatchOptions{}); err != nil {
			log.Warn("set the injecting webhook's caBundle", "err", err)
		}
	}
}

// restConfig is the kubeconfig's, or the in-cluster config.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		if _, err := os.Stat(kubeconfig); err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("--kubernetes: not in a cluster (%v): pass --kubeconfig", err)
	}
	return rc, nil
}
