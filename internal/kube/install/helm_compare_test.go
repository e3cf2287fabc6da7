package install_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// types are the Go API types of the install's objects, by apiVersion and
// kind.
var types = map[string]func() any{
	"v1/Namespace":      func() any { return new(corev1.Namespace) },
	"v1/ServiceAccount": func() any { return new(corev1.ServiceAccount) },
	"v1/ConfigMap":      func() any { return new(corev1.ConfigMap) },
	"v1/Service":        func() any { return new(corev1.Service) },
	"apiextensions.k8s.io/v1/CustomResourceDefinition":               func() any { return new(apiextensionsv1.CustomResourceDefinition) },
	"rbac.authorization.k8s.io/v1/ClusterRole":                       func() any { return new(rbacv1.ClusterRole) },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding":                func() any { return new(rbacv1.ClusterRoleBinding) },
	"rbac.authorization.k8s.io/v1/Role":                              func() any { return new(rbacv1.Role) },
	"rbac.authorization.k8s.io/v1/RoleBinding":                       func() any { return new(rbacv1.RoleBinding) },
	"apps/v1/Deployment":                                             func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget":                                  func() any { return new(policyv1.PodDisruptionBudget) },
	"admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration": func() any { return new(admissionregistrationv1.ValidatingWebhookConfiguration) },
	"admissionregistration.k8s.io/v1/MutatingWebhookConfiguration":   func() any { return new(admissionregistrationv1.MutatingWebhookConfiguration) },
}

// objectKey names an object: apiVersion/kind/namespace/name.
func objectKey(apiVersion, kind, namespace, name string) string {
	return apiVersion + "/" + kind + "/" + namespace + "/" + name
}

// parseObjects splits a multi-document YAML stream (from is "chart" or
// "install", for messages) into its objects by key, each in canonical
// form. Empty and comment-only documents are skipped; a key seen twice
// fails the test.
func parseObjects(t *testing.T, from string, stream []byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", from, i, err)
		}
		m := parseYAML(t, doc)
		if m == nil {
			continue
		}
		key, c, err := canonical(m, doc)
		if err != nil {
			t.Fatalf("%s: document %d: %v\n%s", from, i, err, doc)
		}
		if _, dup := out[key]; dup {
			t.Fatalf("%s: %s twice", from, key)
		}
		out[key] = c
	}
	return out
}

// canonical decodes an object strictly (an unknown or duplicate field is
// an error) into its Go API type and back into a map. Both sides of the
// comparison go through it, so they agree on what the types' encoding
// adds (status: {}, strategy: {}) and on how values are written (100m,
// intstr), and the chart need not copy those.
func canonical(m map[string]any, doc []byte) (string, map[string]any, error) {
	apiVersion, _ := m["apiVersion"].(string)
	kind, _ := m["kind"].(string)
	meta, _ := m["metadata"].(map[string]any)
	namespace, _ := meta["namespace"].(string)
	name, _ := meta["name"].(string)
	key := objectKey(apiVersion, kind, namespace, name)
	newObj, ok := types[apiVersion+"/"+kind]
	if !ok {
		return "", nil, fmt.Errorf("%s: not a kind of the install (add its Go type to types if it now is)", key)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return "", nil, fmt.Errorf("%s: %w", key, err)
	}
	y, err := yaml.Marshal(obj)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", key, err)
	}
	var c map[string]any
	if err := yaml.Unmarshal(y, &c); err != nil {
		return "", nil, fmt.Errorf("%s: %w", key, err)
	}
	return key, c, nil
}

func parseYAML(t *testing.T, doc []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(doc, &m); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	return m
}

// compareObjects requires the chart's objects to be the install's, and
// shows each difference by field path with both objects' YAML.
func compareObjects(t *testing.T, chart, install map[string]map[string]any) {
	t.Helper()
	for _, key := range slices.Sorted(maps.Keys(install)) {
		got, ok := chart[key]
		if !ok {
			t.Errorf("%s: in the install, not in the chart", key)
			continue
		}
		want := install[key]
		if reflect.DeepEqual(got, want) {
			continue
		}
		hint := ""
		if got["kind"] == "CustomResourceDefinition" {
			hint = " (" + regenerate + " rewrites the chart's CRDs)"
		}
		t.Errorf("%s: the chart's differs from the install's%s:\n%s\n--- chart:\n%s--- install:\n%s",
			key, hint, strings.Join(diffPaths("", got, want), "\n"), toYAML(got), toYAML(want))
	}
	for _, key := range slices.Sorted(maps.Keys(chart)) {
		if _, ok := install[key]; !ok {
			t.Errorf("%s: in the chart, not in the install:\n%s", key, toYAML(chart[key]))
		}
	}
}

// diffPaths lists where got and want differ, one line per field path.
func diffPaths(path string, got, want any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			break
		}
		var out []string
		keys := slices.Sorted(maps.Keys(w))
		for k := range g {
			if _, ok := w[k]; !ok {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			p := path + "." + k
			gv, gok := g[k]
			wv, wok := w[k]
			switch {
			case !gok:
				out = append(out, fmt.Sprintf("  %s: only in the install: %s", p, compact(wv)))
			case !wok:
				out = append(out, fmt.Sprintf("  %s: only in the chart: %s", p, compact(gv)))
			default:
				out = append(out, diffPaths(p, gv, wv)...)
			}
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			break
		}
		var out []string
		for i := range w {
			out = append(out, diffPaths(fmt.Sprintf("%s[%d]", path, i), g[i], w[i])...)
		}
		return out
	}
	if reflect.DeepEqual(got, want) {
		return nil
	}
	return []string{fmt.Sprintf("  %s: chart %s, install %s", path, compact(got), compact(want))}
}

func compact(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func toYAML(m map[string]any) string {
	y, err := yaml.Marshal(m)
	if err != nil {
		return err.Error()
	}
	return string(y)
}
