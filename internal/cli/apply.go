package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/resource"
)

func newApplyCmd(g *globals) *cobra.Command {
	var files []string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update resources from YAML or JSON (all or nothing)",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return userError("apply: -f is required: a file, a directory of .yaml/.yml/.json files, or - for stdin")
			}
			objs, err := readObjects(files, g.stdin)
			if err != nil {
				return err
			}
			// Validate locally first so errors name the file and document.
			var problems []string
			for i := range objs {
				if err := resource.Validate(&objs[i]); err != nil {
					problems = append(problems, err.Error())
				}
			}
			if len(problems) > 0 {
				return userError("apply: nothing was applied:\n%s", strings.Join(problems, "\n"))
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			resp, err := c.Apply(cmd.Context(), objs, dryRun)
			if err != nil {
				return fmt.Errorf("apply: %w", err)
			}
			suffix := ""
			if dryRun {
				suffix = " (dry run)"
			}
			for _, r := range resp.Results {
				ref := r.Kind + "/" + r.Name
				if r.Namespace != "" {
					ref = r.Kind + "/" + r.Namespace + "/" + r.Name
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s%s\n", ref, r.Result, suffix)
			}
			return nil
		}),
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin); repeatable")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and show what would change without storing")
	return cmd
}

// readObjects decodes every document of every named file, directory
// (its .yaml, .yml and .json files, sorted) or stdin.
func readObjects(names []string, stdin io.Reader) ([]resource.Object, error) {
	var objs []resource.Object
	for _, name := range names {
		paths := []string{name}
		if name != "-" {
			fi, err := os.Stat(name)
			if err != nil {
				return nil, userError("apply: %v", err)
			}
			if fi.IsDir() {
				paths = nil
				entries, err := os.ReadDir(name)
				if err != nil {
					return nil, userError("apply: %v", err)
				}
				for _, e := range entries {
					switch strings.ToLower(filepath.Ext(e.Name())) {
					case ".yaml", ".yml", ".json":
						if !e.IsDir() {
							paths = append(paths, filepath.Join(name, e.Name()))
						}
					}
				}
				sort.Strings(paths)
				if len(paths) == 0 {
					return nil, userError("apply: directory %s has no .yaml, .yml or .json files", name)
				}
			}
		}
		for _, p := range paths {
			var data []byte
			var err error
			if p == "-" {
				data, err = io.ReadAll(stdin)
				p = "<stdin>"
			} else {
				data, err = os.ReadFile(p)
			}
			if err != nil {
				return nil, userError("apply: read %s: %v", p, err)
			}
			got, err := resource.Decode(data, p)
			if err != nil {
				return nil, userError("apply: %v", err)
			}
			objs = append(objs, got...)
		}
	}
	if len(objs) == 0 {
		return nil, userError("apply: no resources found in %s", strings.Join(names, ", "))
	}
	return objs, nil
}

// noArgs rejects positional arguments as a user error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return userError("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}
