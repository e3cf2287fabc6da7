package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// subcommandsOnly makes cmd a group of subcommands: bare, it prints its
// help; with a word that is no subcommand, it fails naming it, with the
// closest subcommand or hint ("use create, list or revoke"). Without a
// RunE cobra would print help and exit 0 for a mistyped subcommand such
// as `trellis token craete`.
func subcommandsOnly(cmd *cobra.Command, hint string) {
	cmd.SuggestionsMinimumDistance = 2
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		h := hint
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			h = fmt.Sprintf("did you mean %q?", s[0])
		}
		return userError("%s: unknown subcommand %q; %s", cmd.Name(), args[0], h)
	}
}
