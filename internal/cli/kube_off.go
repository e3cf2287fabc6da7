//go:build trellis_nokube

package cli

import (
	"github.com/spf13/cobra"
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
