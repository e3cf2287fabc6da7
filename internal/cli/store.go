package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/bolt"
)

// storeFlags pick trellis control's store backend: --store, and the etcd
// backend's flags (etcdFlags, in the full build only).
type storeFlags struct {
	store string
	etcd  etcdFlags
}

// etcdScheme starts --store's etcd form.
const etcdScheme = "etcd://"

func (s *storeFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.store, "store", "bolt", "where the control plane keeps its state: bolt (the file DATA_DIR/state.db) or "+etcdScheme+"HOST:PORT[,HOST:PORT...] (an etcd v3 cluster, with the --etcd-* flags)")
	s.etcd.register(cmd)
}

// openStore opens the control plane's store: by default the bolt file
// DATA_DIR/state.db, or the etcd cluster --store names. This is where the
// command line picks a backend; the control plane itself only knows
// store.Store. The flags are checked before the data dir, which holds the
// CA keys and the admin token with either backend, is prepared.
func openStore(ctx context.Context, dataDir string, sf storeFlags) (store.Store, error) {
	var open func(context.Context) (store.Store, error)
	switch {
	case sf.store == "bolt":
		open = func(context.Context) (store.Store, error) {
			return bolt.Open(filepath.Join(dataDir, controlplane.StoreFile), bolt.Options{})
		}
	case strings.HasPrefix(sf.store, etcdScheme):
		var err error
		if open, err = etcdOpener(strings.TrimPrefix(sf.store, etcdScheme), sf.etcd); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("--store %q: want bolt or %sHOST:PORT[,HOST:PORT...]", sf.store, etcdScheme)
	}
	if err := controlplane.PrepareDataDir(dataDir); err != nil {
		return nil, err
	}
	st, err := open(ctx)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return st, nil
}
