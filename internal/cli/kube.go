//go:build !trellis_nokube

package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/discovery"
	memory "k8s.io/client-go/discovery/cached"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/kube/inject"
	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/kube/kubecheck"
	"github.com/trellismesh/trellis/internal/meshhealth"
	"github.com/trellismesh/trellis/internal/version"
)

// Kubernetes mode's commands. A build with -tags trellis_nokube (the
// sidecar image's, make build-proxy) leaves them and the Kubernetes
// libraries out (kube_off.go): client-go and the API types add 5-15 MB to
// every process's resident memory.

func newKubeCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{newInjectCmd(g), newInstallCmd(), newUninstallCmd()}
}

func newUninstallCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove an install of Trellis",
		Args:  noArgs,
	}
	var (
		kubeconfig string
		purge      bool
	)
	k := &cobra.Command{
		Use:   "kubernetes",
		Short: "Delete the objects trellis install kubernetes made",
		Long: `Delete the objects of a Trellis install from the cluster, the webhook
configurations first, so that no pod creation waits on a webhook going away.
The CRDs (and with them every Mesh and AuthorizationPolicy), the CA Secret
and the trellis-system namespace stay unless --purge is given. Injected pods
keep their sidecars until they are made again.`,
		Example: `  trellis uninstall kubernetes
  trellis uninstall kubernetes --purge --kubeconfig ~/.kube/config`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			rc, err := restConfig(kubeconfig)
			if err != nil {
				return userError("uninstall kubernetes: %v", err)
			}
			dyn, err := dynamic.NewForConfig(rc)
			if err != nil {
				return userError("uninstall kubernetes: %v", err)
			}
			dc, err := discovery.NewDiscoveryClientForConfig(rc)
			if err != nil {
				return userError("uninstall kubernetes: %v", err)
			}
			mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
			deleted, err := install.Uninstall(cmd.Context(), dyn, mapper, install.Options{}, purge)
			for _, d := range deleted {
				fmt.Fprintln(cmd.OutOrStdout(), "deleted", d)
			}
			if err != nil {
				return err
			}
			if !purge {
				fmt.Fprintln(cmd.ErrOrStderr(), "kept the CRDs, their resources, the CA Secret and the trellis-system namespace (--purge deletes them)")
			}
			return nil
		}),
	}
	k.Flags().StringVar(&kubeconfig, "kubeconfig", envOr("KUBECONFIG", ""), "kubeconfig file (env KUBECONFIG; default: the in-cluster config)")
	k.Flags().BoolVar(&purge, "purge", false, "also delete the CRDs with every Mesh and AuthorizationPolicy, the CA Secret and the namespace")
	cmd.AddCommand(k)
	return cmd
}

func newInstallCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print the manifests that install Trellis",
		Args:  noArgs,
	}
	var o install.Options
	k := &cobra.Command{
		Use:   "kubernetes",
		Short: "Print the Kubernetes manifests of a Trellis install (apply them with kubectl apply -f -)",
		Long: `Print the objects of a Trellis install in Kubernetes mode as YAML: the
trellis-system Namespace, the CRDs, the control plane's ServiceAccount with
least-privilege RBAC (docs/kubernetes.md lists every verb and why), its
Deployment (2 replicas), PodDisruptionBudget and Service, the validating and
injecting webhook configurations (the control plane sets their caBundle at
start) and the CA bundle ConfigMap.`,
		Example: "  trellis install kubernetes | kubectl apply -f -",
		Args:    noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if o.Replicas < 1 {
				return userError("install kubernetes: --replicas %d: want at least 1 (2 or more keeps the control plane up through a node drain)", o.Replicas)
			}
			objs, err := install.Objects(o)
			if err != nil {
				return err
			}
			y, err := install.YAML(objs)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(y)
			return err
		}),
	}
	f := k.Flags()
	f.StringVar(&o.Image, "image", "ghcr.io/trellismesh/trellis:"+version.Version, "image of the control plane (the full trellis binary)")
	f.StringVar(&o.ProxyImage, "proxy-image", "ghcr.io/trellismesh/trellis-proxy:"+version.Version, "image of the sidecar (make build-proxy)")
	f.Int32Var(&o.Replicas, "replicas", 2, "control plane replicas")
	f.StringVar(&o.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "the mesh's SPIFFE trust domain")
	cmd.AddCommand(k)
	return cmd
}

const injectHelp = `Add the Trellis sidecar to the workloads of Kubernetes YAML, as the
injecting webhook does, for GitOps pipelines: Pods, Deployments,
StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs are injected,
other objects pass through unchanged, and the documents keep their order.

Each pod template gets the capture init step (trellis iptables apply, with
NET_ADMIN and NET_RAW only), the proxy as a native sidecar (an init
container with restartPolicy Always and a startup probe on /ready), a
projected ServiceAccount token for the audience trellis and the mesh CA
bundle. Annotations on the pod template tune it (trellis.dev/service,
app-port, protocol, exclude-inbound-ports, exclude-outbound-ports,
exclude-outbound-cidrs, proxy-cpu-request, ...); a pod template annotated
trellis.dev/inject: "false" is left alone. Injecting twice gives the same
result. See docs/kubernetes.md.`

func newInjectCmd(g *globals) *cobra.Command {
	var (
		file string
		cfg  = inject.Config{Audience: "trellis", Version: version.Version}
	)
	cmd := &cobra.Command{
		Use:     "inject -f FILE|-",
		Short:   "Add the sidecar to the workloads of Kubernetes YAML (offline injection)",
		Long:    injectHelp,
		Example: "  trellis inject -f deploy.yaml | kubectl apply -f -\n  kustomize build . | trellis inject -f - > injected.yaml",
		Args:    noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			const op = "inject"
			if file == "" {
				return userError("%s: -f is required: a YAML file, or - for stdin", op)
			}
			name := file
			var (
				data []byte
				err  error
			)
			if file == "-" {
				name = "<stdin>"
				data, err = io.ReadAll(g.stdin)
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return userError("%s: %v", op, err)
			}
			out, err := inject.Documents(data, name, cfg)
			if err != nil {
				return userError("%s: nothing written: %v", op, err)
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", "YAML file of Kubernetes objects, or - (stdin)")
	f.StringVar(&cfg.Image, "image", "ghcr.io/trellismesh/trellis:"+version.Version, "image of the proxy and the capture step")
	f.StringVar(&cfg.ControlAddr, "control", "trellis-control.trellis-system.svc:15012", "the control plane's gRPC address, as the proxies dial it")
	f.StringVar(&cfg.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "the mesh's trust domain, passed to the proxies")
	f.StringVar(&cfg.CAConfigMap, "ca-configmap", "trellis-ca-bundle", "ConfigMap in each namespace holding the mesh CA bundle (key ca.crt)")
	return cmd
}

// checkKubernetes is trellis check --kubernetes.
func checkKubernetes(ctx context.Context, kubeconfig, ns string) (meshhealth.Report, error) {
	rc, err := restConfig(kubeconfig)
	if err != nil {
		return meshhealth.Report{}, err
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return meshhealth.Report{}, err
	}
	ext, err := apiextensionsclient.NewForConfig(rc)
	if err != nil {
		return meshhealth.Report{}, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return meshhealth.Report{}, err
	}
	return kubecheck.Run(ctx, kubecheck.Clients{Kube: kc, Extensions: ext, Dynamic: dyn}, ns), nil
}
