//go:build trellis_nokube

package cli

import (
	"context"
	"errors"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/controlplane"
)

// kubeFlags: the sidecar build keeps --kubernetes, to say it is not here.
type kubeFlags struct{ enabled bool }

func (k *kubeFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&k.enabled, "kubernetes", false, "Kubernetes mode: not in this build (-tags trellis_nokube); use the full trellis binary")
}

func kubeMode(_ context.Context, _ *controlplane.Config, k kubeFlags, _ *slog.Logger) (func() (func(), error), error) {
	if k.enabled {
		return nil, errors.New("--kubernetes: this trellis was built for the sidecar (-tags trellis_nokube) without Kubernetes support; use the full trellis binary (make build)")
	}
	return func() (func(), error) { return func() {}, nil }, nil
}
