// Package kubecheck is trellis check --kubernetes: the findings about a
// Kubernetes install, as OK, WARN or FAIL (internal/meshhealth's levels):
// the API server's version (native sidecars need 1.29), the CRDs
// established, the webhook configurations present with a caBundle and the
// validating webhook answering, the control plane's RBAC sufficient
// (SubjectAccessReview of every rule trellis install kubernetes grants),
// the control plane's replicas ready, and the singletons' Lease held.
//
// It must not depend on the control plane's server, the store, the proxy or
// the data plane: it reads the API.
package kubecheck

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/trellismesh/trellis/internal/kube/crd"
	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/meshhealth"
)

// MinVersion is the oldest API server with native sidecars (init
// containers with restartPolicy Always) on by default.
const MinVersion = 29 // 1.29

// Clients are what Run reads with.
type Clients struct {
	Kube       kubernetes.Interface
	Extensions apiextensionsclient.Interface
	Dynamic    dynamic.Interface
}

// Run gathers the findings about the install in namespace ns (usually
// trellis-system).
func Run(ctx context.Context, c Clients, ns string) meshhealth.Report {
	var findings []meshhealth.Finding
	add := func(level meshhealth.Level, check, subject, format string, args ...any) {
		findings = append(findings, meshhealth.Finding{Level: level, Check: check, Subject: subject, Message: fmt.Sprintf(format, args...)})
	}
	checkVersion(c.Kube, add)
	checkCRDs(ctx, c.Extensions, add)
	checkWebhooks(ctx, c, ns, add)
	checkRBAC(ctx, c.Kube, ns, add)
	checkReplicas(ctx, c.Kube, ns, add)
	checkLease(ctx, c.Kube, ns, time.Now(), add)
	return meshhealth.NewReport(findings)
}

type addFunc func(level meshhealth.Level, check, subject, format string, args ...any)

func checkVersion(k kubernetes.Interface, add addFunc) {
	v, err := k.Discovery().ServerVersion()
	if err != nil {
		add(meshhealth.Fail, "kubernetes", "version", "the API server does not say its version: %v", err)
		return
	}
	minor, err := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
	if v.Major != "1" || err != nil {
		add(meshhealth.Warn, "kubernetes", "version", "unrecognized version %s.%s", v.Major, v.Minor)
		return
	}
	if minor < MinVersion {
		add(meshhealth.Fail, "kubernetes", "version", "%s: native sidecars need 1.%d or later", v.GitVersion, MinVersion)
		return
	}
	add(meshhealth.OK, "kubernetes", "version", "%s (native sidecars need 1.%d)", v.GitVersion, MinVersion)
}

func checkCRDs(ctx context.Context, ext apiextensionsclient.Interface, add addFunc) {
	crds, err := crd.All()
	if err != nil {
		add(meshhealth.Fail, "crds", "", "%v", err)
		return
	}
	for _, d := range crds {
		got, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, d.Name, metav1.GetOptions{})
		if err != nil {
			add(meshhealth.Fail, "crds", d.Name, "not installed (trellis install kubernetes): %v", err)
			continue
		}
		established := false
		for _, cond := range got.Status.Conditions {
			established = established || cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue
		}
		if !established {
			add(meshhealth.Fail, "crds", d.Name, "not established yet")
			continue
		}
		add(meshhealth.OK, "crds", d.Name, "established")
	}
}

func checkWebhooks(ctx context.Context, c Clients, ns string, add addFunc) {
	ar := c.Kube.AdmissionregistrationV1()
	if v, err := ar.ValidatingWebhookConfigurations().Get(ctx, install.ValidatingConfig, metav1.GetOptions{}); err != nil {
		add(meshhealth.Fail, "webhooks", install.ValidatingConfig, "missing: %v", err)
	} else if len(v.Webhooks) == 0 || len(v.Webhooks[0].ClientConfig.CABundle) == 0 {
		add(meshhealth.Fail, "webhooks", install.ValidatingConfig, "no caBundle: the control plane sets it when it starts; is it running?")
	} else {
		add(meshhealth.OK, "webhooks", install.ValidatingConfig, "configured")
	}
	if m, err := ar.MutatingWebhookConfigurations().Get(ctx, install.MutatingConfig, metav1.GetOptions{}); err != nil {
		add(meshhealth.Fail, "webhooks", install.MutatingConfig, "missing: %v", err)
	} else if len(m.Webhooks) == 0 || len(m.Webhooks[0].ClientConfig.CABundle) == 0 {
		add(meshhealth.Fail, "webhooks", install.MutatingConfig, "no caBundle: the control plane sets it when it starts; is it running?")
	} else {
		add(meshhealth.OK, "webhooks", install.MutatingConfig, "configured")
	}
	// Reachable: a server-side dry run of a bad policy must come back
	// refused by the validator.
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crd.Group + "/" + crd.Version, "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "trellis-check", "namespace": ns},
		"spec":     map[string]any{"rules": []any{map[string]any{"to": []any{map[string]any{"methods": []any{"GTE"}}}}}},
	}}
	gvr := schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "authorizationpolicies"}
	_, err := c.Dynamic.Resource(gvr).Namespace(ns).Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	switch {
	case err == nil:
		add(meshhealth.Fail, "webhooks", "validate", "a bad policy was accepted: the validating webhook did not answer for it")
	case strings.Contains(err.Error(), `"GTE" is not`):
		add(meshhealth.OK, "webhooks", "validate", "answers (a bad policy refused with the validator's message)")
	default:
		add(meshhealth.Fail, "webhooks", "validate", "a dry run got no answer from the validator: %v", err)
	}
}

func checkRBAC(ctx context.Context, k kubernetes.Interface, ns string, add addFunc) {
	user := "system:serviceaccount:" + ns + ":" + install.Name
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	cluster, namespaced := install.RBACRules()
	var missing []string
	check := func(rules []rbacv1.PolicyRule, namespace string) {
		for _, r := range rules {
			for _, res := range r.Resources {
				resource, sub, _ := strings.Cut(res, "/")
				names := r.ResourceNames
				if len(names) == 0 {
					names = []string{""}
				}
				for _, name := range names {
					for _, verb := range r.Verbs {
						sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
							User: user, Groups: groups,
							ResourceAttributes: &authorizationv1.ResourceAttributes{
								Namespace: namespace, Verb: verb, Group: r.APIGroups[0], Resource: resource, Subresource: sub, Name: name,
							},
						}}
						got, err := k.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
						if err != nil || !got.Status.Allowed {
							what := verb + " " + res
							if name != "" {
								what += " " + name
							}
							missing = append(missing, what)
						}
					}
				}
			}
		}
	}
	check(cluster, "")
	check(namespaced, ns)
	if len(missing) > 0 {
		add(meshhealth.Fail, "rbac", user, "missing: %s", strings.Join(missing, ", "))
		return
	}
	add(meshhealth.OK, "rbac", user, "every permission the control plane needs is granted")
}

func checkReplicas(ctx context.Context, k kubernetes.Interface, ns string, add addFunc) {
	d, err := k.AppsV1().Deployments(ns).Get(ctx, install.Name, metav1.GetOptions{})
	if err != nil {
		add(meshhealth.Fail, "replicas", ns+"/"+install.Name, "no Deployment: %v", err)
		return
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	switch ready := d.Status.ReadyReplicas; {
	case ready == 0:
		add(meshhealth.Fail, "replicas", ns+"/"+install.Name, "0 of %d replicas ready", want)
	case ready < want || want < 2:
		add(meshhealth.Warn, "replicas", ns+"/"+install.Name, "%d of %d replicas ready (2 or more keep the control plane up through a node drain)", ready, want)
	default:
		add(meshhealth.OK, "replicas", ns+"/"+install.Name, "%d of %d replicas ready", ready, want)
	}
}

// checkLease: a replica holds the singletons' Lease and renewed it within
// its duration (internal/kube/leader).
func checkLease(ctx context.Context, k kubernetes.Interface, ns string, now time.Time, add addFunc) {
	subject := ns + "/" + install.Name
	l, err := k.CoordinationV1().Leases(ns).Get(ctx, install.Name, metav1.GetOptions{})
	if err != nil {
		add(meshhealth.Fail, "lease", subject, "no Lease (%v): no replica runs the singletons (resource status, CA bundles); is trellis control running?", err)
		return
	}
	holder := ""
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if holder == "" || l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		add(meshhealth.Fail, "lease", subject, "not held: no replica runs the singletons (resource status, CA bundles)")
		return
	}
	age := now.Sub(l.Spec.RenewTime.Time).Round(time.Second)
	if d := time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second; age > d {
		add(meshhealth.Fail, "lease", subject, "held by %s but not renewed for %v (its term is %v): that replica is gone or cut off, and no other took over", holder, age, d)
		return
	}
	add(meshhealth.OK, "lease", subject, "held by %s, renewed %v ago", holder, age)
}
