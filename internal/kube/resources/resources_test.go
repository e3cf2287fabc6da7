package resources_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/trellismesh/trellis/internal/kube/crd"
	"github.com/trellismesh/trellis/internal/kube/resources"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// With no validating webhook in the way (bypassed), objects reach the API
// server whatever they hold: a valid one is accepted (Accepted=True,
// observedGeneration), an invalid one gets Accepted=False with the
// validator's message and stays out of the mesh, and an object made
// invalid keeps its last accepted version until a valid one replaces it.
func TestAcceptedOnARealAPIServer(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.InstallCRDs(t)
	c.Namespace(t, "shop", nil)
	dyn := c.Dynamic(t)
	policies := c.Trellis(t, "authorizationpolicies", "shop")
	create := func(doc string) {
		t.Helper()
		if _, err := policies.Create(ctx, kubetest.Object(t, doc), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// One valid policy before the source starts, one invalid.
	create(policy("readers", "{selector: {service: catalog}, rules: [{to: [{methods: [GET]}]}]}"))
	create(policy("typo", "{action: PERMIT}"))

	src := resources.New(dyn, testutil.Logger(t))
	if err := src.Start(ctx, 2); err != nil {
		t.Fatal(err)
	}
	accepted := func() []string {
		objs, _ := src.Accepted()
		var out []string
		for _, o := range objs {
			out = append(out, o.Metadata.Name+"="+string(o.Spec))
		}
		return out
	}
	if got := accepted(); len(got) != 1 || !strings.HasPrefix(got[0], "readers=") {
		t.Fatalf("accepted at start: %v, want only readers", got)
	}
	condition := func(name string) (*metav1.Condition, int64) {
		u, err := policies.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var conds []metav1.Condition
		raw, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, r := range raw {
			m := r.(map[string]any)
			conds = append(conds, metav1.Condition{Type: m["type"].(string), Status: metav1.ConditionStatus(m["status"].(string)),
				Reason: m["reason"].(string), Message: m["message"].(string)})
		}
		og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		if og != u.GetGeneration() {
			return nil, og
		}
		return meta.FindStatusCondition(conds, crd.ConditionAccepted), og
	}
	testutil.Eventually(t, "both judged in status", func() bool {
		r, _ := condition("readers")
		ty, _ := condition("typo")
		return r != nil && r.Status == metav1.ConditionTrue && ty != nil && ty.Status == metav1.ConditionFalse
	})
	ty, _ := condition("typo")
	objs, err := resource.Decode([]byte(policy("typo", "{action: PERMIT}")), "")
	if err != nil {
		t.Fatal(err)
	}
	objs[0].Source = ""
	verr := resource.Validate(&objs[0])
	if verr == nil {
		t.Fatal("the validator accepts action PERMIT")
	}
	want := verr.Error() // what trellis apply says, without a file name
	if !strings.HasPrefix(ty.Message, want) || ty.Reason != resources.ReasonInvalid {
		t.Errorf("typo's condition %+v, want reason Invalid and the validator's %q", ty, want)
	}

	// Made invalid: status says so, the mesh keeps the last accepted spec.
	before := accepted()
	u, err := policies.Get(ctx, "readers", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(u.Object, "MAYBE", "spec", "enforcement")
	if _, err := policies.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "readers judged invalid at generation 2", func() bool {
		r, og := condition("readers")
		return r != nil && og == 2 && r.Status == metav1.ConditionFalse
	})
	if got := accepted(); strings.Join(got, ",") != strings.Join(before, ",") {
		t.Errorf("accepted after an invalid update: %v, want the last accepted %v", got, before)
	}

	// A valid update replaces it; the typo fixed is accepted; a delete
	// leaves.
	_ = unstructured.SetNestedField(u.Object, "audit", "spec", "enforcement")
	u.SetResourceVersion("")
	if _, err := policies.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		// A conflict with the status write: take the newest and retry.
		u2, _ := policies.Get(ctx, "readers", metav1.GetOptions{})
		_ = unstructured.SetNestedField(u2.Object, "audit", "spec", "enforcement")
		if _, err := policies.Update(ctx, u2, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := policies.Delete(ctx, "typo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	create(policy("writers", "{selector: {service: catalog}, rules: [{to: [{methods: [POST]}]}]}"))
	testutil.Eventually(t, "readers in audit mode and writers accepted", func() bool {
		got := accepted()
		return len(got) == 2 && strings.Contains(got[0], `"enforcement":"audit"`) && strings.HasPrefix(got[1], "writers=")
	})
	_, gen := src.Accepted()
	if gen == 0 {
		t.Error("generation 0 after changes")
	}
	// Each accepted object is what trellis apply would store.
	objs, _ = src.Accepted()
	for _, o := range objs {
		if err := resource.Validate(&o); err != nil {
			t.Errorf("an accepted object does not validate: %v", err)
		}
	}
}

func policy(name, spec string) string {
	return "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: " + name + ", namespace: shop}\nspec: " + spec + "\n"
}
