// Package resources is Kubernetes mode's resource source: the Trellis
// custom resources (Mesh, AuthorizationPolicy) read with shared informers
// and judged by internal/resource's validator in a work queue. Each object
// gets status.observedGeneration and an Accepted condition (False with the
// validator's field-path message when it is invalid, which happens only if
// the validating webhook was bypassed); the mesh's configuration takes the
// last accepted version of each object, so proxies keep it until a valid
// one replaces it. With several replicas, only the Lease holder writes
// status (FollowLease, Lead). With WatchGatewayAPI it also reads the
// Gateway API's HTTPRoutes and GRPCRoutes of the mesh (GAMMA), adds the
// Trellis Routes internal/kube/gatewayapi makes of them, and writes their
// status.parents.
//
// It must not depend on the control plane's server, the store, the signers,
// the proxy or the data plane.
package resources

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/trellismesh/trellis/internal/kube/crd"
	"github.com/trellismesh/trellis/internal/kube/webhook"
	"github.com/trellismesh/trellis/internal/resource"
)

// Condition reasons.
const (
	ReasonValid   = "Valid"
	ReasonInvalid = "Invalid"
)

// Source keeps the accepted version of every Trellis custom resource.
type Source struct {
	dyn     dynamic.Interface
	log     *slog.Logger
	factory dynamicinformer.DynamicSharedInformerFactory
	kinds   map[string]kindInfo // resource plural -> kind
	queue   workqueue.TypedRateLimitingInterface[key]

	mu       sync.Mutex
	accepted map[key]resource.Object
	// routes: the Trellis Routes made of each Gateway API route
	// (gatewayapi.go); services: their Services, when watched.
	routes   map[key][]resource.Object
	services cache.SharedIndexInformer
	seen     map[key]string // the resourceVersion last judged, for writes to wait on
	gen      atomic.Uint64
	changed  chan struct{}

	// statusGated: status is written only while lead runs (FollowLease);
	// leading says whether it runs now.
	statusGated, leading atomic.Bool
}

type kindInfo struct {
	gvr      schema.GroupVersionResource
	informer cache.SharedIndexInformer
	gateway  bool // a Gateway API route (gatewayapi.go)
}

// key names one object: its resource (plural) and namespace/name.
type key struct{ resource, namespace, name string }

func (k key) String() string {
	if k.namespace == "" {
		return k.resource + "/" + k.name
	}
	return k.resource + "/" + k.namespace + "/" + k.name
}

// New returns a Source over dyn; Start runs it.
func New(dyn dynamic.Interface, log *slog.Logger) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{
		dyn:      dyn,
		log:      log,
		factory:  dynamicinformer.NewDynamicSharedInformerFactory(dyn, 10*time.Minute),
		kinds:    map[string]kindInfo{},
		queue:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[key]()),
		accepted: map[key]resource.Object{},
		routes:   map[key][]resource.Object{},
		seen:     map[key]string{},
		changed:  make(chan struct{}, 1),
	}
	for _, k := range resource.Kinds() {
		s.addKind(schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: k.Plural}, false)
	}
	return s
}

// addKind watches the resource gvr; gateway: a Gateway API route.
func (s *Source) addKind(gvr schema.GroupVersionResource, gateway bool) {
	inf := s.factory.ForResource(gvr).Informer()
	plural := gvr.Resource
	enqueue := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if m, err := meta.Accessor(obj); err == nil {
			s.queue.Add(key{plural, m.GetNamespace(), m.GetName()})
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) }, DeleteFunc: enqueue,
	})
	s.kinds[plural] = kindInfo{gvr: gvr, informer: inf, gateway: gateway}
}

// Start runs the informers and workers until ctx ends; it returns once
// the caches are synced and every object present then has been judged.
func (s *Source) Start(ctx context.Context, workers int) error {
	s.factory.Start(ctx.Done())
	for gvr, ok := range s.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("resources: %s informer did not sync: %w", gvr.Resource, ctx.Err())
		}
	}
	// The first pass, before serving: every object listed at start is
	// judged once, so the first configuration holds what is accepted.
	for plural, ki := range s.kinds {
		for _, name := range ki.informer.GetStore().ListKeys() {
			ns, n, _ := cache.SplitMetaNamespaceKey(name)
			if err := s.judge(ctx, key{plural, ns, n}); err != nil {
				s.log.Warn("resource status not written; retrying", "object", plural+"/"+name, "err", err.Error())
			}
		}
	}
	go func() { <-ctx.Done(); s.queue.ShutDown() }()
	for range max(workers, 1) {
		go func() {
			for s.processNext(ctx) {
			}
		}()
	}
	return ctx.Err()
}

// FollowLease makes status writes a singleton: call it before Start, and
// then only a replica running Lead writes status (every replica still
// judges every object and keeps its accepted set).
func (s *Source) FollowLease() { s.statusGated.Store(true) }

// Lead writes status until ctx ends: it queues every object once, so the
// new leader writes whatever the previous one left unwritten.
func (s *Source) Lead(ctx context.Context) {
	s.leading.Store(true)
	defer s.leading.Store(false)
	for plural, ki := range s.kinds {
		for _, name := range ki.informer.GetStore().ListKeys() {
			ns, n, _ := cache.SplitMetaNamespaceKey(name)
			s.queue.Add(key{plural, ns, n})
		}
	}
	<-ctx.Done()
}

// Changed receives after the accepted set changed; a burst is one receive.
func (s *Source) Changed() <-chan struct{} { return s.changed }

// Accepted returns the accepted version of every object, in a stable
// order (kind, namespace, name), and a generation that grows with each
// change.
func (s *Source) Accepted() ([]resource.Object, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]resource.Object, 0, len(s.accepted))
	for _, o := range s.accepted {
		out = append(out, o)
	}
	for _, rs := range s.routes {
		out = append(out, rs...)
	}
	slices.SortFunc(out, func(a, b resource.Object) int {
		return strings.Compare(a.Kind+"/"+a.Metadata.Namespace+"/"+a.Metadata.Name, b.Kind+"/"+b.Metadata.Namespace+"/"+b.Metadata.Name)
	})
	return out, s.gen.Load()
}

func (s *Source) processNext(ctx context.Context) bool {
	k, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(k)
	if err := s.judge(ctx, k); err != nil {
		s.log.Warn("resource status not written; retrying", "object", k.String(), "err", err.Error())
		s.queue.AddRateLimited(k)
		return true
	}
	s.queue.Forget(k)
	return true
}

// judge validates the object's current version, updates the accepted set
// and writes its status.
func (s *Source) judge(ctx context.Context, k key) error {
	ki := s.kinds[k.resource]
	name := k.name
	if k.namespace != "" {
		name = k.namespace + "/" + k.name
	}
	item, exists, err := ki.informer.GetStore().GetByKey(name)
	if err != nil {
		return err
	}
	if !exists {
		s.setAccepted(k, nil)
		s.setRoutes(k, nil)
		s.setSeen(k, "")
		return nil
	}
	u := item.(*unstructured.Unstructured)
	defer s.setSeen(k, u.GetResourceVersion())
	if ki.gateway {
		return s.judgeRoute(ctx, k, ki, u)
	}
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return err
	}
	obj, err := webhook.Object(raw)
	if err == nil {
		err = resource.Validate(&obj)
	}
	obj.Metadata.UID, obj.Metadata.ResourceVersion, obj.Metadata.Generation = string(u.GetUID()), u.GetResourceVersion(), u.GetGeneration()
	if ts := u.GetCreationTimestamp(); !ts.IsZero() {
		obj.Metadata.CreationTimestamp = &ts.Time
	}
	cond := metav1.Condition{Type: crd.ConditionAccepted, ObservedGeneration: u.GetGeneration()}
	if err != nil {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonInvalid, err.Error()+" (the mesh keeps this object's last accepted version)"
	} else {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, ReasonValid, "accepted"
		s.setAccepted(k, &obj)
	}
	if s.statusGated.Load() && !s.leading.Load() {
		return nil // the Lease holder writes status
	}
	return s.writeStatus(ctx, ki.gvr, u, cond)
}

func (s *Source) setAccepted(k key, obj *resource.Object) {
	s.mu.Lock()
	prev, had := s.accepted[k]
	switch {
	case obj == nil && !had:
		s.mu.Unlock()
		return
	case obj == nil:
		delete(s.accepted, k)
	default:
		same := had && prev.Metadata.Name == obj.Metadata.Name && string(prev.Spec) == string(obj.Spec) &&
			equality.Semantic.DeepEqual(prev.Metadata.Labels, obj.Metadata.Labels)
		s.accepted[k] = *obj // fresh metadata (resourceVersion) either way
		if same {
			s.mu.Unlock()
			return
		}
	}
	s.gen.Add(1)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// writeStatus sets observedGeneration and the Accepted condition when
// they differ from what the object shows (a status write is an update
// event too: writing only changes keeps the queue quiet).
func (s *Source) writeStatus(ctx context.Context, gvr schema.GroupVersionResource, u *unstructured.Unstructured, cond metav1.Condition) error {
	var conds []metav1.Condition
	if raw, ok, _ := unstructured.NestedSlice(u.Object, "status", "conditions"); ok {
		b, _ := json.Marshal(raw)
		_ = json.Unmarshal(b, &conds)
	}
	og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if cur := meta.FindStatusCondition(conds, cond.Type); cur != nil && og == cond.ObservedGeneration &&
		cur.Status == cond.Status && cur.Reason == cond.Reason && cur.Message == cond.Message && cur.ObservedGeneration == cond.ObservedGeneration {
		return nil
	}
	meta.SetStatusCondition(&conds, cond)
	b, err := json.Marshal(conds)
	if err != nil {
		return err
	}
	var list []any
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	out := u.DeepCopy()
	if err := unstructured.SetNestedField(out.Object, cond.ObservedGeneration, "status", "observedGeneration"); err != nil {
		return err
	}
	if err := unstructured.SetNestedSlice(out.Object, list, "status", "conditions"); err != nil {
		return err
	}
	ri := s.dyn.Resource(gvr).Namespace(u.GetNamespace())
	if _, err := ri.UpdateStatus(ctx, out, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile; the delete event follows
		}
		return err // a conflict retries with the newer version from the cache
	}
	return nil
}
