package leader_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/kube/leader"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// Three replicas campaign for one Lease on a real API server: exactly one
// runs the singletons at any time, the Lease names it, and when it stops
// another takes over (the stopped one releases the Lease).
func TestOneLeaderAtATime(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.Namespace(t, "trellis-system", nil)
	var (
		leading   atomic.Int32 // replicas inside lead now
		overlaps  atomic.Int32
		mu        sync.Mutex
		leaders   []string
		stops     = map[string]context.CancelFunc{}
		wg        sync.WaitGroup
		replicaOf = func(id string) {
			rctx, stop := context.WithCancel(ctx)
			mu.Lock()
			stops[id] = stop
			mu.Unlock()
			wg.Go(func() {
				err := leader.Run(rctx, leader.Config{
					Client: c.Client, Namespace: "trellis-system", Name: "trellis-control", Identity: id,
					LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond,
					Log: testutil.Logger(t),
				}, func(lctx context.Context) {
					if leading.Add(1) > 1 {
						overlaps.Add(1)
					}
					mu.Lock()
					leaders = append(leaders, id)
					mu.Unlock()
					<-lctx.Done()
					leading.Add(-1)
				})
				if err != nil {
					t.Errorf("%s: %v", id, err)
				}
			})
		}
	)
	for _, id := range []string{"control-a", "control-b", "control-c"} {
		replicaOf(id)
	}
	holder := func() string {
		l, err := c.Client.CoordinationV1().Leases("trellis-system").Get(ctx, "trellis-control", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	current := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(leaders) == 0 {
			return ""
		}
		return leaders[len(leaders)-1]
	}
	testutil.Eventually(t, "a leader", func() bool { return current() != "" && holder() == current() })
	for range 2 {
		first := current()
		mu.Lock()
		stops[first]()
		mu.Unlock()
		testutil.Eventually(t, "another leader after "+first+" stopped", func() bool {
			next := current()
			return next != first && next != "" && holder() == next && leading.Load() == 1
		})
	}
	cancel()
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d times two replicas ran the singletons at once", n)
	}
	if len(leaders) != 3 {
		t.Errorf("leaders in turn: %v, want three (each replica once)", leaders)
	}
}
