// Package leader runs Kubernetes mode's singletons (CA rotation, registry
// garbage collection, drift repair) on one control-plane replica at a
// time, under a coordination.k8s.io Lease with client-go's leader
// election. Every replica serves config streams and Certify; only the
// Lease holder runs the singletons, and another takes over within the
// lease duration when it dies.
//
// It must not depend on the control plane's server, the store, the
// signers, the proxy or the data plane.
package leader

import (
	"context"
	"errors"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Defaults of Config's durations (client-go's usual ones).
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Config names the Lease and this replica.
type Config struct {
	Client    kubernetes.Interface
	Namespace string // where the Lease lives, e.g. trellis-system
	Name      string // the Lease's name, e.g. trellis-control
	Identity  string // this replica, e.g. its pod name; must be unique
	// LeaseDuration, RenewDeadline and RetryPeriod: zero means the
	// defaults. A dead leader's lease is taken over after LeaseDuration.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

// Run campaigns until ctx ends, running lead while this replica holds the
// Lease; lead's context ends when the lease is lost (or ctx ends), and Run
// campaigns again. On ctx's end a held lease is released so another
// replica takes over at once.
func Run(ctx context.Context, cfg Config, lead func(ctx context.Context)) error {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.Name == "" || cfg.Identity == "" {
		return errors.New("leader: Client, Namespace, Name and Identity are required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Name},
		Client:     cfg.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   or(cfg.LeaseDuration, DefaultLeaseDuration),
			RenewDeadline:   or(cfg.RenewDeadline, DefaultRenewDeadline),
			RetryPeriod:     or(cfg.RetryPeriod, DefaultRetryPeriod),
			ReleaseOnCancel: true,
			Name:            cfg.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					log.Info("leading: running the singletons", "lease", cfg.Namespace+"/"+cfg.Name, "identity", cfg.Identity)
					lead(lctx)
				},
				OnStoppedLeading: func() {
					log.Info("no longer leading", "lease", cfg.Namespace+"/"+cfg.Name, "identity", cfg.Identity)
				},
				OnNewLeader: func(id string) {
					if id != cfg.Identity {
						log.Info("leader elected", "lease", cfg.Namespace+"/"+cfg.Name, "leader", id)
					}
				},
			},
		})
		if err != nil {
			return err
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends
	}
	return nil
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
