package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/resource"
)

func newDeleteCmd(g *globals) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "delete KIND NAME [-n NS]",
		Short: "Delete a resource",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return userError("delete: want KIND NAME, e.g. `trellis delete authz frontend-reads-catalog -n shop`")
			}
			return nil
		},
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			kind, ok := resource.LookupKind(args[0])
			if !ok {
				return userError("delete: unknown kind %q; known kinds: %s", args[0], kindNames())
			}
			ns := namespace
			if !kind.Namespaced {
				ns = ""
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.Delete(cmd.Context(), kind, ns, args[1]); err != nil {
				return fmt.Errorf("delete: %w", err)
			}
			ref := kind.Kind + "/" + args[1]
			if kind.Namespaced {
				ref = kind.Kind + "/" + ns + "/" + args[1]
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", ref)
			return nil
		}),
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace")
	return cmd
}
