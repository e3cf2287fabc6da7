package cli

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/adminhttp"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/controlplane/sharedca"
	"github.com/trellismesh/trellis/internal/jointoken"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/store"
)

// sharedFlags are the flags of control-plane replicas sharing one store
// (etcd): the key sealing the CA in it, and this replica's name.
type sharedFlags struct{ kekFile, replica string }

func (s *sharedFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.kekFile, "ca-kek-file", "", "with a shared store (--store etcd://...): file (mode 0600) of the 32-byte key sealing the CA keys, the join tokens' key and the admin token in the store; every replica is given the same one")
	f.StringVar(&s.replica, "replica-id", "", "with a shared store: this replica's name (default: the host name and a random suffix)")
}

// shareCA makes replicas on one store share the CA, the join tokens' key
// and the admin token (internal/controlplane/sharedca): the first replica
// creates them, every replica writes them into its data dir, and
// cfg.CAShare carries root rotations between replicas. cfg.ReplicaID
// shares the proxy registries.
func shareCA(ctx context.Context, cfg *controlplane.Config, st store.Store, sf sharedFlags, log *slog.Logger) error {
	if sf.kekFile == "" {
		return fmt.Errorf("a shared store needs --ca-kek-file: the CA keys are kept in it sealed with that key (create one: head -c 32 /dev/urandom > kek && chmod 600 kek, and give every replica the same file)")
	}
	kek, err := sharedca.LoadKEK(sf.kekFile)
	if err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(cmp.Or(cfg.TrustDomain, controlplane.DefaultTrustDomain))
	if err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	external := cfg.CACertFile != ""
	created, err := sharedca.Ensure(ctx, st, kek, cfg.DataDir, func(dir string) error {
		if !external {
			if _, _, err := meshca.LoadOrCreate(dir, td, meshca.Options{}); err != nil {
				return err
			}
		}
		if _, err := jointoken.LoadOrCreate(dir, td, jointoken.Options{}); err != nil {
			return err
		}
		_, err := adminhttp.LoadOrCreate(dir)
		return err
	})
	if err != nil {
		return err
	}
	replica := sf.replica
	if replica == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		replica = cmp.Or(host, "control") + "-" + hex.EncodeToString(b)
	}
	log.Info("CA, join tokens' key and admin token shared through the store", "created", created, "replica", replica, "ca_from_files", external)
	if !external {
		cfg.CAShare = sharedca.New(st, kek, cfg.DataDir, replica, log)
	}
	cfg.ReplicaID = replica // the registry is shared too
	if el, ok := st.(controlplane.Elector); ok {
		cfg.Elector = el // singletons under a lease election
	}
	return nil
}
