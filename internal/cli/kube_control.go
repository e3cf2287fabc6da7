//go:build !trellis_nokube

package cli

import (
	"context"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/kube/kubecontrol"
	"github.com/trellismesh/trellis/internal/version"
)

// kubeFlags are trellis control's Kubernetes mode flags.
type kubeFlags struct {
	enabled                   bool
	kubeconfig, namespace     string
	webhookAddr, proxyImage   string
	proxyControl, caConfigMap string
	identity                  string
	leaseDuration             time.Duration
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
	f.StringVar(&k.identity, "kube-identity", envOr("POD_NAME", ""), "with --kubernetes: this replica's name in the Lease (env POD_NAME; default: the host name and a random suffix)")
	f.DurationVar(&k.leaseDuration, "lease-duration", 15*time.Second, "with --kubernetes: how long the Lease holder's term lasts unrenewed: another replica takes over the singletons this long after it dies")
}

// kubeMode prepares cfg for Kubernetes mode (internal/kube/kubecontrol)
// when --kubernetes is set, and returns what to run once the control plane
// is up.
func kubeMode(ctx context.Context, cfg *controlplane.Config, k kubeFlags, log *slog.Logger) (func() (func(), error), error) {
	if !k.enabled {
		return func() (func(), error) { return func() {}, nil }, nil
	}
	return kubecontrol.Prepare(ctx, cfg, kubecontrol.Options{
		Kubeconfig: k.kubeconfig, Namespace: k.namespace, WebhookAddr: k.webhookAddr,
		ProxyImage: k.proxyImage, ProxyControl: k.proxyControl, CAConfigMap: k.caConfigMap,
		Identity: k.identity, LeaseDuration: k.leaseDuration,
	}, log)
}

// restConfig is the kubeconfig's, or the in-cluster config.
func restConfig(kubeconfig string) (*rest.Config, error) { return kubecontrol.RESTConfig(kubeconfig) }
