// Package install makes the Kubernetes objects of a Trellis install (trellis
// install kubernetes): the trellis-system Namespace, the CRDs, the control
// plane's ServiceAccount with least-privilege RBAC, its Deployment (two
// replicas), PodDisruptionBudget and Service, the validating and injecting
// webhook configurations (their caBundle is set by the control plane at
// start) and the CA bundle ConfigMap. docs/kubernetes.md lists every RBAC
// verb and why.
//
// It must not depend on the control plane's server, the store, the proxy or
// the data plane. It makes objects; Uninstall deletes them through the
// client it is given.
package install

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/kube/crd"
	"github.com/trellismesh/trellis/internal/kube/inject"
	meshresource "github.com/trellismesh/trellis/internal/resource"
)

// Names of the installed objects.
const (
	Namespace        = "trellis-system"
	Name             = "trellis-control"
	CASecret         = "trellis-ca"
	CABundle         = "trellis-ca-bundle"
	ValidatingConfig = "trellis-validate"
	MutatingConfig   = "trellis-inject"
)

// Options are the install's choices.
type Options struct {
	// Image of the control plane (the full trellis binary) and ProxyImage
	// of the sidecar (the trellis_nokube build).
	Image, ProxyImage string
	// Replicas of the control plane; at least 2 keeps it up through a
	// node drain (the PodDisruptionBudget keeps one).
	Replicas int32
	// TrustDomain of the mesh.
	TrustDomain string
}

// Objects returns every object of the install, in the order to apply
// them.
func Objects(o Options) ([]runtime.Object, error) {
	if o.Replicas < 1 {
		o.Replicas = 2
	}
	crds, err := crd.All()
	if err != nil {
		return nil, err
	}
	labels := map[string]string{"app.kubernetes.io/name": Name, "app.kubernetes.io/part-of": "trellis"}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: Namespace, Labels: labels}
	}
	var out []runtime.Object
	out = append(out, &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: Namespace, Labels: labels},
	})
	for _, c := range crds {
		out = append(out, c)
	}
	out = append(out,
		&corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: meta(Name)},
		&rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
			ObjectMeta: metav1.ObjectMeta{Name: Name, Labels: labels},
			Rules:      clusterRules(),
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: Name, Labels: labels},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: Name},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: Name, Namespace: Namespace}},
		},
		&rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
			ObjectMeta: meta(Name),
			Rules:      namespaceRules(),
		},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: meta(Name),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: Name},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: Name, Namespace: Namespace}},
		},
		&corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: meta(CABundle)},
		deployment(o, labels, meta(Name)),
		&policyv1.PodDisruptionBudget{
			TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
			ObjectMeta: meta(Name),
			Spec: policyv1.PodDisruptionBudgetSpec{
				// One replica down at a time: with 2 or more, one keeps
				// serving; with 1, a drain still goes through.
				MaxUnavailable: ptr(intstr.FromInt32(1)),
				Selector:       &metav1.LabelSelector{MatchLabels: labels},
			},
		},
		&corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: meta(Name),
			Spec: corev1.ServiceSpec{
				Selector: labels,
				Ports: []corev1.ServicePort{
					{Name: "grpc", Port: 15012, TargetPort: intstr.FromInt32(15012), AppProtocol: ptr("grpc")},
					{Name: "admin", Port: 15014, TargetPort: intstr.FromInt32(15014)},
					{Name: "webhook", Port: 443, TargetPort: intstr.FromInt32(15017)},
				},
			},
		},
	)
	out = append(out, validatingConfig(labels), mutatingConfig(labels))
	return out, nil
}

// RBACRules are the control plane's rules: across the cluster, and in its
// own namespace (trellis check --kubernetes checks them).
func RBACRules() (cluster, namespaced []rbacv1.PolicyRule) {
	return clusterRules(), namespaceRules()
}

// clusterRules: what the control plane reads and writes across namespaces
// (docs/kubernetes.md explains each).
func clusterRules() []rbacv1.PolicyRule {
	var kinds, status []string
	for _, k := range meshresource.Kinds() {
		kinds, status = append(kinds, k.Plural), append(status, k.Plural+"/status")
	}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{crd.Group}, Resources: kinds, Verbs: []string{"get", "list", "watch", "create", "update", "delete"}},
		{APIGroups: []string{crd.Group}, Resources: status, Verbs: []string{"update"}},
		// The Gateway API's mesh routes (GAMMA), read when their CRDs are
		// installed, and their status.parents.
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"httproutes", "grpcroutes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"httproutes/status", "grpcroutes/status"}, Verbs: []string{"update"}},
		{APIGroups: []string{""}, Resources: []string{"pods", "services"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "create", "update"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"validatingwebhookconfigurations"}, ResourceNames: []string{ValidatingConfig}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{MutatingConfig}, Verbs: []string{"get", "patch"}},
	}
}

// namespaceRules: what the control plane needs in its own namespace: the
// CA Secret (read, created once by the first replica, followed, and
// updated by a root rotation), the admin tokens' records (Secrets, one per
// token, read, listed, created and updated by every replica; their names
// are the tokens', so neither rule can name them), the Lease of the
// singletons, listing the join tokens' records and following the
// replicas' proxy certificate reports (ConfigMaps, read and written by
// name under the cluster rules; gone replicas' reports deleted).
func namespaceRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{CASecret}, Verbs: []string{"get", "list", "watch", "update"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "create", "update"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{Name}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list", "watch", "delete"}},
	}
}

func deployment(o Options, labels map[string]string, meta metav1.ObjectMeta) *appsv1.Deployment {
	args := []string{
		"control", "--kubernetes", "--data-dir", "/var/lib/trellis",
		"--grpc-addr", "0.0.0.0:15012", "--api-addr", "0.0.0.0:15014", "--webhook-addr", "0.0.0.0:15017",
		"--proxy-image", o.ProxyImage, "--proxy-control-addr", Name + "." + Namespace + ".svc:15012",
		"--ca-configmap", CABundle, "--log-format", "json",
	}
	if o.TrustDomain != "" {
		args = append(args, "--trust-domain", o.TrustDomain)
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(o.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{inject.AnnotationInject: "false"}},
				Spec: corev1.PodSpec{
					ServiceAccountName: Name,
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(65532)), FSGroup: ptr(int64(65532)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					// Replicas on different nodes where there are several.
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway,
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{{
						Name:  "control",
						Image: o.Image,
						Args:  args,
						Env: []corev1.EnvVar{
							{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						},
						Ports: []corev1.ContainerPort{
							{Name: "grpc", ContainerPort: 15012}, {Name: "admin", ContainerPort: 15014}, {Name: "webhook", ContainerPort: 15017},
						},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: "/readyz", Port: intstr.FromInt32(15014), Scheme: corev1.URISchemeHTTPS}}, PeriodSeconds: 2},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
						SecurityContext: &corev1.SecurityContext{
							ReadOnlyRootFilesystem: ptr(true), AllowPrivilegeEscalation: ptr(false),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/trellis"}},
					}},
					Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}
}

func webhookClient(path string) admissionregistrationv1.WebhookClientConfig {
	return admissionregistrationv1.WebhookClientConfig{
		Service: &admissionregistrationv1.ServiceReference{Namespace: Namespace, Name: Name, Path: ptr(path), Port: ptr(int32(443))},
	}
}

func validatingConfig(labels map[string]string) *admissionregistrationv1.ValidatingWebhookConfiguration {
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: ValidatingConfig, Labels: labels},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "validate.trellis.dev",
			ClientConfig: webhookClient("/validate"),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{crd.Group}, APIVersions: []string{crd.Version}, Resources: []string{"*"}},
			}},
			FailurePolicy:           ptr(admissionregistrationv1.Fail),
			SideEffects:             ptr(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr(int32(5)),
		}},
	}
}

func mutatingConfig(labels map[string]string) *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: MutatingConfig, Labels: labels},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "inject.trellis.dev",
			ClientConfig: webhookClient("/inject"),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{inject.LabelNamespaceInject: "enabled"},
				MatchExpressions: []metav1.LabelSelectorRequirement{{
					Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", Namespace},
				}},
			},
			FailurePolicy:           ptr(admissionregistrationv1.Fail),
			SideEffects:             ptr(admissionregistrationv1.SideEffectClassNone),
			ReinvocationPolicy:      ptr(admissionregistrationv1.IfNeededReinvocationPolicy),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr(int32(5)),
		}},
	}
}

// YAML writes the objects as one multi-document YAML stream.
func YAML(objs []runtime.Object) ([]byte, error) {
	var b bytes.Buffer
	for i, o := range objs {
		y, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("install: object %d: %w", i, err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

func ptr[T any](v T) *T { return &v }

// Uninstall deletes the install's objects from the cluster, the webhook
// configurations first (so no pod creation waits on a webhook that is
// going away). The CRDs (and with them every Mesh and AuthorizationPolicy),
// the CA Secret and the namespace stay unless purge is set. It returns
// what it deleted; objects already gone are skipped.
func Uninstall(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, o Options, purge bool) ([]string, error) {
	objs, err := Objects(o)
	if err != nil {
		return nil, err
	}
	if purge {
		objs = append(objs, &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: CASecret, Namespace: Namespace}})
	}
	slices.Reverse(objs) // webhooks first, namespace last
	var deleted []string
	for _, obj := range objs {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return deleted, err
		}
		u := &unstructured.Unstructured{Object: m}
		gvk := u.GroupVersionKind()
		if !purge && (gvk.Kind == "CustomResourceDefinition" || gvk.Kind == "Namespace") {
			continue
		}
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return deleted, fmt.Errorf("uninstall: %s: %w", gvk.Kind, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if ns := u.GetNamespace(); ns != "" {
			ri = dyn.Resource(mapping.Resource).Namespace(ns)
		}
		ref := gvk.Kind + " " + u.GetName()
		if ns := u.GetNamespace(); ns != "" {
			ref = gvk.Kind + " " + ns + "/" + u.GetName()
		}
		switch err := ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{}); {
		case apierrors.IsNotFound(err):
		case err != nil:
			return deleted, fmt.Errorf("uninstall: delete %s: %w", ref, err)
		default:
			deleted = append(deleted, ref)
		}
	}
	return deleted, nil
}
