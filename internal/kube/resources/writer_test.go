package resources_test

import (
	"context"
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/kube/resources"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// The admin API's writes through to the custom resources: an apply whose
// second object the API server refuses (its namespace does not exist)
// writes nothing, not even the first; a good apply is in Accepted when it
// returns; a dry run writes nothing; a delete is gone from Accepted when
// it returns.
func TestWritesThroughToCustomResources(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.InstallCRDs(t)
	c.Namespace(t, "shop", nil)
	policies := c.Trellis(t, "authorizationpolicies", "shop")
	src := resources.New(c.Dynamic(t), testutil.Logger(t))
	if err := src.Start(ctx, 2); err != nil {
		t.Fatal(err)
	}
	obj := func(ns, name string) resource.Object {
		objs, err := resource.Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: "+name+", namespace: "+ns+"}\nspec: {selector: {service: catalog}, rules: [{to: [{methods: [GET]}]}]}\n"), "test")
		if err != nil || len(objs) != 1 {
			t.Fatal(objs, err)
		}
		o := objs[0]
		if err := resource.Validate(&o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	accepted := func(name string) bool {
		objs, _ := src.Accepted()
		for _, o := range objs {
			if o.Metadata.Name == name {
				return true
			}
		}
		return false
	}

	_, err := src.Apply(ctx, []resource.Object{obj("shop", "first"), obj("nosuch", "second")}, false)
	var oe *adminapi.ObjectError
	if !errors.As(err, &oe) || oe.Index != 1 || len(oe.Applied) != 0 {
		t.Fatalf("apply with a refused second object: %v, want an error at object 1 with nothing applied", err)
	}
	if _, err := policies.Get(ctx, "first", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the first object was written although the second was refused: %v", err)
	}

	if _, err := src.Apply(ctx, []resource.Object{obj("shop", "first")}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := policies.Get(ctx, "first", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a dry run wrote: %v", err)
	}

	res, err := src.Apply(ctx, []resource.Object{obj("shop", "first"), obj("shop", "second")}, false)
	if err != nil || len(res) != 2 || res[0].Result != adminapi.ResultCreated || res[0].ResourceVersion == "" {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	if !accepted("first") || !accepted("second") {
		t.Error("an applied object is not in Accepted when Apply returns")
	}
	kind, _ := resource.LookupKind(resource.KindAuthorizationPolicy)
	if err := src.Delete(ctx, kind, "shop", "first"); err != nil {
		t.Fatal(err)
	}
	if accepted("first") {
		t.Error("a deleted object is still in Accepted when Delete returns")
	}
	if err := src.Delete(ctx, kind, "shop", "first"); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("delete of a missing object: %v", err)
	}
}
