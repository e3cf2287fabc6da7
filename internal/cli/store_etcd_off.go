//go:build trellis_nokube

package cli

import (
	"context"
	"errors"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/store"
)

// etcdFlags: the sidecar build has no etcd backend (its client would be
// linked into every proxy) and so no --etcd-* flags.
type etcdFlags struct{}

func (*etcdFlags) register(*cobra.Command) {}

func etcdOpener(string, etcdFlags) (func(context.Context) (store.Store, error), error) {
	return nil, errors.New("--store etcd://: this trellis was built for the sidecar (-tags trellis_nokube) without the etcd backend; use the full trellis binary (make build)")
}
