package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli/exitcode"
)

// ExitDifferent is trellis diff's exit code when the files differ from what
// the control plane holds. As with kubectl diff, any error exits with more
// (ExitInternal), bad input included.
const ExitDifferent = 1

const diffHelp = `Show what apply -f would change, without changing anything: the same
validation, then a dry-run apply on the control plane, which compares the
files with the objects it holds. For every object that would be created or
changed it prints one line, and under a changed object one line per field:

  Mesh/default would be configured
    spec.mtls.mode: STRICT -> PERMISSIVE
  AuthorizationPolicy/shop/x would be created

Objects that would not change are not shown. A change to a Mesh security
setting (mTLS mode, default authorization, outbound mode, HTTP path and
upgrade screening) is also a warning on stderr, also when it comes from a
field the file leaves out.

Exit status, as kubectl diff: 0 when nothing would change; 1 when something
would; 2 on any error (bad input, flags, the control plane unreachable or
failing).`

func newDiffCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "diff -f FILE|DIR|-",
		Short: "Show what apply would change, field by field; exit 1 when something would",
		Long:  diffHelp,
		Example: `  trellis diff -f policies/
  trellis diff -f mesh.yaml && echo "nothing to apply"`,
		Args: func(cmd *cobra.Command, args []string) error { return diffError(noArgs(cmd, args)) },
		RunE: func(cmd *cobra.Command, _ []string) error {
			differs, err := runDiff(cmd, g, files)
			switch {
			case err != nil:
				return diffError(err)
			case differs:
				return &exitcode.Error{Code: ExitDifferent, Err: errors.New("diff: the files differ from the control plane's objects"), Quiet: true}
			}
			return nil
		},
	}
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return diffError(fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
	})
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin); repeatable")
	return cmd
}

func runDiff(cmd *cobra.Command, g *globals, files []string) (differs bool, err error) {
	objs, written, err := readValidObjects("diff", files, g.stdin)
	if err != nil {
		return false, err
	}
	c, err := g.client()
	if err != nil {
		return false, err
	}
	resp, err := c.Apply(cmd.Context(), objs, true)
	if err != nil {
		return false, fmt.Errorf("diff: %w", err)
	}
	printResults(cmd.OutOrStdout(), resp.Results, func(r adminapi.ApplyResult) string {
		if r.Result == adminapi.ResultUnchanged {
			return ""
		}
		differs = true
		return "would be " + r.Result
	})
	warnSecuritySettings(cmd.ErrOrStderr(), objs, written, resp.Results)
	return differs, nil
}

// diffError gives err trellis diff's error exit code, which must not be
// ExitDifferent.
func diffError(err error) error {
	if err == nil {
		return nil
	}
	return &exitcode.Error{Code: ExitInternal, Err: err}
}
