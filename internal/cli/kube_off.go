//go:build trellis_nokube

package cli

import (
	"context"
	"errors"

	"github.com/spf13/cobra"
	"github.com/trellismesh/trellis/internal/meshhealth"
)

// newKubeCmds: in the sidecar build (-tags trellis_nokube) Kubernetes
// mode's commands are there, to say where they are.
func newKubeCmds(*globals) []*cobra.Command {
	var out []*cobra.Command
	for _, name := range []string{"inject", "install", "uninstall"} {
		out = append(out, &cobra.Command{
			Use:                name,
			Short:              "Not in this build: see trellis " + name + " in the full trellis binary",
			DisableFlagParsing: true,
			RunE: func(*cobra.Command, []string) error {
				return userError("%s: this trellis was built for the sidecar (-tags trellis_nokube) without Kubernetes support; use the full trellis binary (make build)", name)
			},
		})
	}
	return out
}

func checkKubernetes(context.Context, string, string) (meshhealth.Report, error) {
	return meshhealth.Report{}, errors.New("this trellis was built for the sidecar (-tags trellis_nokube) without Kubernetes support; use the full trellis binary (make build)")
}
