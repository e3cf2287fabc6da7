package resources

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/kube/crd"
	"github.com/trellismesh/trellis/internal/kube/webhook"
	"github.com/trellismesh/trellis/internal/resource"
)

// The admin API's writes (trellis apply, trellis delete) go through to the
// custom resources. The Kubernetes API has no transaction over several
// objects, so an apply is planned against the objects' current versions,
// then every write is tried as a server-side dry run (schema and
// admission webhooks included), and only then made. A write can still fail
// after the dry run passed (someone changed the object meanwhile): the
// error then names the objects already applied.

// seenWait bounds how long a write waits for the informer to judge it, so
// that a read right after a write shows it.
const seenWait = 5 * time.Second

// kubectlAnnotations are kept on objects the admin API updates: kubectl
// apply's record of its last apply.
const kubectlAnnotations = "kubectl.kubernetes.io/"

// write is one planned write of an apply.
type write struct {
	ri     dynamic.ResourceInterface
	obj    *unstructured.Unstructured
	create bool
	key    key
}

// Apply writes validated objects to their custom resources; see
// controlplane.ResourceWriter.
func (s *Source) Apply(ctx context.Context, objs []resource.Object, dryRun bool) ([]adminapi.ApplyResult, error) {
	results := make([]adminapi.ApplyResult, len(objs))
	writes := make([]*write, len(objs))
	seen := map[key]int{}
	for i := range objs {
		o := &objs[i]
		w, res, err := s.plan(ctx, o)
		if err != nil {
			return nil, &adminapi.ObjectError{Index: i, Resource: o.Ref(), Err: err}
		}
		if j, dup := seen[w.key]; dup {
			return nil, &adminapi.ObjectError{Index: i, Resource: o.Ref(), Err: fmt.Errorf("%w: the same resource appears twice in one apply (objects %d and %d)", adminapi.ErrConflict, j, i)}
		}
		seen[w.key] = i
		results[i] = res
		if res.Result != adminapi.ResultUnchanged {
			writes[i] = w
		}
	}
	for i, w := range writes {
		if w == nil {
			continue
		}
		if _, err := w.do(ctx, true); err != nil {
			return nil, &adminapi.ObjectError{Index: i, Resource: objs[i].Ref(), Err: apiError(err)}
		}
	}
	if dryRun {
		return results, nil
	}
	var applied []adminapi.ApplyResult
	for i, w := range writes {
		if w == nil {
			continue
		}
		out, err := w.do(ctx, false)
		if err != nil {
			return nil, &adminapi.ObjectError{Index: i, Resource: objs[i].Ref(), Err: apiError(err), Applied: applied}
		}
		results[i].ResourceVersion = out.GetResourceVersion()
		applied = append(applied, results[i])
		s.waitSeen(ctx, w.key, out.GetResourceVersion())
	}
	return results, nil
}

// Delete deletes one custom resource; see controlplane.ResourceWriter.
func (s *Source) Delete(ctx context.Context, kind resource.KindInfo, namespace, name string) error {
	ki, ok := s.kinds[kind.Plural]
	if !ok {
		return fmt.Errorf("%w: no custom resource for %s", adminapi.ErrNotFound, kind.Kind)
	}
	if !kind.Namespaced {
		namespace = ""
	}
	err := s.dyn.Resource(ki.gvr).Namespace(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		ref := kind.Kind + " " + strings.TrimPrefix(namespace+"/", "/") + name
		return fmt.Errorf("%w: %s", adminapi.ErrNotFound, ref)
	}
	if err != nil {
		return apiError(err)
	}
	s.waitSeen(ctx, key{kind.Plural, namespace, name}, "")
	return nil
}

// plan reads o's current version and says what applying o would do.
func (s *Source) plan(ctx context.Context, o *resource.Object) (*write, adminapi.ApplyResult, error) {
	kind, _ := resource.LookupKind(o.Kind)
	ki, ok := s.kinds[kind.Plural]
	if !ok {
		return nil, adminapi.ApplyResult{}, fmt.Errorf("no custom resource for kind %s", o.Kind)
	}
	ns := o.Metadata.Namespace
	if !kind.Namespaced {
		ns = ""
	}
	res := adminapi.ApplyResult{Kind: kind.Kind, Namespace: ns, Name: o.Metadata.Name}
	w := &write{ri: s.dyn.Resource(ki.gvr).Namespace(ns), key: key{kind.Plural, ns, o.Metadata.Name}}
	var spec map[string]any
	if len(o.Spec) > 0 {
		if err := json.Unmarshal(o.Spec, &spec); err != nil {
			return nil, res, fmt.Errorf("spec: %w", err)
		}
	}
	cur, err := w.ri.Get(ctx, o.Metadata.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if rv := o.Metadata.ResourceVersion; rv != "" {
			return nil, res, fmt.Errorf("%w: metadata.resourceVersion %s given but the resource does not exist; remove resourceVersion to create it", adminapi.ErrConflict, rv)
		}
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": crd.Group + "/" + crd.Version, "kind": kind.Kind}}
		u.SetName(o.Metadata.Name)
		u.SetNamespace(ns)
		u.SetLabels(o.Metadata.Labels)
		u.SetAnnotations(o.Metadata.Annotations)
		if spec != nil {
			u.Object["spec"] = spec
		}
		w.obj, w.create, res.Result = u, true, adminapi.ResultCreated
		return w, res, nil
	case err != nil:
		return nil, res, apiError(err)
	}
	if rv := o.Metadata.ResourceVersion; rv != "" && rv != cur.GetResourceVersion() {
		return nil, res, fmt.Errorf("%w: modified since you read it (resourceVersion %s, now %s); get it again and reapply", adminapi.ErrConflict, rv, cur.GetResourceVersion())
	}
	raw, err := json.Marshal(cur.Object)
	if err != nil {
		return nil, res, err
	}
	prev, err := webhook.Object(raw)
	if err != nil {
		return nil, res, err
	}
	curSpec, _, _ := unstructured.NestedMap(cur.Object, "spec")
	if equality.Semantic.DeepEqual(curSpec, spec) && maps.Equal(prev.Metadata.Labels, o.Metadata.Labels) &&
		maps.Equal(prev.Metadata.Annotations, o.Metadata.Annotations) {
		res.Result, res.ResourceVersion = adminapi.ResultUnchanged, cur.GetResourceVersion()
		return w, res, nil
	}
	res.Result = adminapi.ResultConfigured
	res.Changes, _ = resource.Diff(&prev, o) // a report only: both are valid
	u := cur.DeepCopy()
	u.SetLabels(o.Metadata.Labels)
	ann := maps.Clone(o.Metadata.Annotations)
	for k, v := range cur.GetAnnotations() {
		if strings.HasPrefix(k, kubectlAnnotations) {
			if ann == nil {
				ann = map[string]string{}
			}
			ann[k] = v
		}
	}
	u.SetAnnotations(ann)
	if spec != nil {
		u.Object["spec"] = spec
	} else {
		delete(u.Object, "spec")
	}
	w.obj = u
	return w, res, nil
}

// do makes the write, or with dryRun has the API server check it.
func (w *write) do(ctx context.Context, dryRun bool) (*unstructured.Unstructured, error) {
	var dr []string
	if dryRun {
		dr = []string{metav1.DryRunAll}
	}
	if w.create {
		return w.ri.Create(ctx, w.obj, metav1.CreateOptions{DryRun: dr, FieldManager: "trellis"})
	}
	return w.ri.Update(ctx, w.obj, metav1.UpdateOptions{DryRun: dr, FieldManager: "trellis"})
}

// apiError classes an API server's refusal for the admin API.
func apiError(err error) error {
	switch {
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		return fmt.Errorf("%w: changed in the Kubernetes API meanwhile; try again: %v", adminapi.ErrConflict, err)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: %v", adminapi.ErrNotFound, err)
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsForbidden(err):
		return fmt.Errorf("%w: the Kubernetes API refused it: %v", adminapi.ErrForbidden, err)
	}
	return fmt.Errorf("kubernetes api: %w", err)
}

func (s *Source) setSeen(k key, rv string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rv == "" {
		delete(s.seen, k)
		return
	}
	s.seen[k] = rv
}

// waitSeen waits (at most seenWait) until the object k has been judged at
// resourceVersion rv, or judged gone when rv is empty, so the admin API
// reads its own writes. The write stands either way.
func (s *Source) waitSeen(ctx context.Context, k key, rv string) {
	deadline := time.Now().Add(seenWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		s.mu.Lock()
		got, ok := s.seen[k]
		s.mu.Unlock()
		if (rv == "" && !ok) || (rv != "" && ok && atLeast(got, rv)) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.log.Warn("a write through the admin API was not seen by the informer in time; reads may lag it", "object", k.String(), "resource_version", rv)
}

// atLeast says whether resourceVersion got is rv or later. Versions are
// opaque to clients, but etcd's are increasing integers; anything else
// compares equal only.
func atLeast(got, rv string) bool {
	g, err1 := strconv.ParseUint(got, 10, 64)
	r, err2 := strconv.ParseUint(rv, 10, 64)
	if err1 != nil || err2 != nil {
		return got == rv
	}
	return g >= r
}
