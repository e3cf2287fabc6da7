// Package cabundle keeps the mesh CA bundle ConfigMap (key ca.crt) in
// every namespace that opts into injection (label trellis.dev/inject=
// enabled): injected pods mount it to verify the control plane. A
// namespace informer and a work queue create it when a namespace opts in
// and put the bundle back when it differs.
//
// It must not depend on the control plane's server, the store, the proxy
// or the data plane.
package cabundle

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/trellismesh/trellis/internal/kube/inject"
)

// Key is the ConfigMap's key holding the PEM bundle.
const Key = "ca.crt"

// Syncer writes the bundle into opted-in namespaces.
type Syncer struct {
	client kubernetes.Interface
	name   string
	log    *slog.Logger

	mu     sync.Mutex
	bundle string
}

// New returns a Syncer of the ConfigMap name; Run runs it.
func New(client kubernetes.Interface, name string, log *slog.Logger) *Syncer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Syncer{client: client, name: name, log: log}
}

// SetBundle sets the PEM bundle to keep. Set it before Run; a later call
// (after a CA rotation) reaches the namespaces at the informer's next
// resync, within a minute.
func (s *Syncer) SetBundle(pem []byte) {
	s.mu.Lock()
	s.bundle = string(pem)
	s.mu.Unlock()
}

// Run keeps the ConfigMaps until ctx ends. It returns once the namespace
// informer is synced; the work goes on in the background. Run may be
// called again after ctx ended (a new term as the Lease holder).
func (s *Syncer) Run(ctx context.Context) error {
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	f := informers.NewSharedInformerFactoryWithOptions(s.client, time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = inject.LabelNamespaceInject + "=enabled" }))
	nsInf := f.Core().V1().Namespaces().Informer()
	add := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			queue.Add(ns.Name)
		}
	}
	_, _ = nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, n any) { add(n) }})
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nsInf.HasSynced) {
		return fmt.Errorf("cabundle: namespace informer did not sync: %w", ctx.Err())
	}
	go func() { <-ctx.Done(); queue.ShutDown() }()
	go func() {
		for {
			ns, quit := queue.Get()
			if quit {
				return
			}
			if err := s.sync(ctx, ns); err != nil {
				s.log.Warn("CA bundle ConfigMap not written; retrying", "namespace", ns, "err", err.Error())
				queue.AddRateLimited(ns)
			} else {
				queue.Forget(ns)
			}
			queue.Done(ns)
		}
	}()
	return nil
}

// sync makes namespace ns hold the ConfigMap with the current bundle.
func (s *Syncer) sync(ctx context.Context, ns string) error {
	s.mu.Lock()
	bundle := s.bundle
	s.mu.Unlock()
	if bundle == "" {
		return nil
	}
	cms := s.client.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(ctx, s.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: s.name, Labels: map[string]string{"app.kubernetes.io/managed-by": "trellis"}},
			Data:       map[string]string{Key: bundle},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("created meanwhile; checking again")
		}
		return err
	case err != nil:
		return err
	case cm.Data[Key] == bundle:
		return nil
	}
	cm = cm.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[Key] = bundle
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	return err
}
