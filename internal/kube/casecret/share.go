package casecret

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// Share keeps one replica's data dir on the Secret's version of the CA and
// publishes the rotations and retirements made here (it is a
// controlplane.CAShare). The Secret's resourceVersion serializes them: a
// publish made from an outdated version is refused, and the data dir is
// put back on the Secret's. It also carries each replica's proxies'
// certificate reports (reports.go), so that retiring a root checks every
// proxy of the mesh.
type Share struct {
	client                 kubernetes.Interface
	ns, name, dataDir, who string
	log                    *slog.Logger

	mu sync.Mutex
	rv string // the Secret's resourceVersion the data dir holds
	// taken is the Secret data take last wrote into the data dir
	// (another replica's; nil after this replica's own publish).
	taken map[string][]byte
	subs  []func() // called after the data dir took a new version

	reports cache.Store // other replicas' reports (reports.go)
}

// NewShare returns the Share of Secret namespace/name for a replica named
// identity (its Lease identity) with its data dir.
func NewShare(client kubernetes.Interface, namespace, name, dataDir, identity string, log *slog.Logger) *Share {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Share{client: client, ns: namespace, name: name, dataDir: dataDir, who: identity, log: log}
}

// Where names the Secret, for messages.
func (s *Share) Where() string { return "Secret " + s.ns + "/" + s.name }

// Subscribe adds f to what runs after the data dir took a new version of
// the CA: another replica's, or this one's own publish. f runs on its own
// goroutine and must not block for long.
func (s *Share) Subscribe(f func()) {
	s.mu.Lock()
	s.subs = append(s.subs, f)
	s.mu.Unlock()
}

// Follow runs the informers on the Secret and the reports until ctx ends,
// calling reload (and the subscribers) after each new version of the CA.
// It returns once both are synced.
func (s *Share) Follow(ctx context.Context, reload func()) error {
	s.Subscribe(reload)
	sf := informers.NewSharedInformerFactoryWithOptions(s.client, 10*time.Minute, informers.WithNamespace(s.ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.name).String()
		}))
	inf := sf.Core().V1().Secrets().Informer()
	onSecret := func(obj any) {
		if sec, ok := obj.(*corev1.Secret); ok {
			s.take(sec)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onSecret, UpdateFunc: func(_, n any) { onSecret(n) }})
	rf := s.reportInformer()
	sf.Start(ctx.Done())
	rf.Start(ctx.Done())
	for _, synced := range []cache.InformerSynced{inf.HasSynced, s.reportsSynced(rf)} {
		if !cache.WaitForCacheSync(ctx.Done(), synced) {
			return fmt.Errorf("casecret: informers did not sync: %w", ctx.Err())
		}
	}
	return nil
}

// take writes a new version of the Secret into the data dir and tells the
// subscribers.
func (s *Share) take(sec *corev1.Secret) {
	s.mu.Lock()
	if sec.ResourceVersion == s.rv {
		s.mu.Unlock()
		return
	}
	if err := materialize(sec, s.dataDir); err != nil {
		s.mu.Unlock()
		s.log.Error("CA from its Secret not written into the data dir; this replica keeps its CA", "secret", s.ns+"/"+s.name, "err", err)
		return
	}
	s.rv, s.taken = sec.ResourceVersion, sec.Data
	s.notifyLocked()
	s.mu.Unlock()
}

func (s *Share) notifyLocked() {
	for _, f := range s.subs {
		go f()
	}
}

// Publish stores the data dir's CA in the Secret after a rotation or
// retirement made on this replica. When the Secret moved on since this
// replica took it (another replica published first), nothing is stored:
// the data dir is put back on the Secret's version (reload it) and the
// error wraps adminapi.ErrConflict.
func (s *Share) Publish(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	secrets := s.client.CoreV1().Secrets(s.ns)
	sec, err := secrets.Get(ctx, s.name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("casecret: read %s: %w", s.Where(), err)
	}
	if s.rv != "" && sec.ResourceVersion != s.rv {
		return s.revertLocked(sec)
	}
	data, err := pack(s.dataDir)
	if err != nil {
		return err
	}
	if s.taken != nil && maps.EqualFunc(data, s.taken, bytes.Equal) {
		// Another replica's change arrived while this one's was made,
		// and took its place in the data dir: this change is lost.
		return s.revertLocked(sec)
	}
	sec = sec.DeepCopy()
	sec.Data = data
	out, err := secrets.Update(ctx, sec, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		if sec, err = secrets.Get(ctx, s.name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("casecret: read %s: %w", s.Where(), err)
		}
		return s.revertLocked(sec)
	}
	if err != nil {
		return fmt.Errorf("casecret: write %s: %w", s.Where(), err)
	}
	s.rv, s.taken = out.ResourceVersion, nil
	s.notifyLocked()
	return nil
}

// revertLocked puts the data dir back on sec, the version another replica
// published.
func (s *Share) revertLocked(sec *corev1.Secret) error {
	if err := materialize(sec, s.dataDir); err != nil {
		return fmt.Errorf("casecret: another replica changed the CA meanwhile, and putting its version back failed: %w", err)
	}
	s.rv, s.taken = sec.ResourceVersion, sec.Data
	s.notifyLocked()
	return fmt.Errorf("%w: another control-plane replica changed the CA in %s meanwhile; nothing changed here: see trellis ca status, then retry", adminapi.ErrConflict, s.Where())
}
