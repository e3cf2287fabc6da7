package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
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
			objs, written, err := readValidObjects("apply", files, g.stdin)
			if err != nil {
				return err
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
			printResults(cmd.OutOrStdout(), resp.Results, func(r adminapi.ApplyResult) string { return r.Result + suffix })
			warnSecuritySettings(cmd.ErrOrStderr(), objs, written, resp.Results)
			printWarnings(cmd.ErrOrStderr(), resp.Results)
			return nil
		}),
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin); repeatable")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and show what would change without storing")
	return cmd
}

// readValidObjects reads the objects of files for op (apply, diff) and
// validates them all locally, so that errors name the file and document.
// It returns the objects as Validate leaves them (to send) and as written
// (to tell a field left out from one set).
func readValidObjects(op string, files []string, stdin io.Reader) (objs, written []resource.Object, err error) {
	if len(files) == 0 {
		return nil, nil, userError("%s: -f is required: a file, a directory of .yaml/.yml/.json files, or - for stdin", op)
	}
	objs, err = decodeFiles(op, files, stdin)
	if err != nil {
		return nil, nil, err
	}
	written = slices.Clone(objs)
	var problems []string
	for i := range objs {
		if err := resource.Validate(&objs[i]); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		outcome := "nothing was applied"
		if op != "apply" {
			outcome = "nothing was compared"
		}
		return nil, nil, userError("%s: %s:\n%s", op, outcome, strings.Join(problems, "\n"))
	}
	return objs, written, nil
}

// printResults writes one line per object, "Kind/namespace/name " and
// what verb says, then the fields that changed, one indented line each:
//
//	AuthorizationPolicy/shop/x configured
//	  spec.rules[0].to[0].methods: [GET] -> [GET, POST]
//
// verb returning "" leaves the object out.
func printResults(w io.Writer, results []adminapi.ApplyResult, verb func(adminapi.ApplyResult) string) {
	for _, r := range results {
		v := verb(r)
		if v == "" {
			continue
		}
		ref := r.Kind + "/" + r.Name
		if r.Namespace != "" {
			ref = r.Kind + "/" + r.Namespace + "/" + r.Name
		}
		fmt.Fprintf(w, "%s %s\n", ref, v)
		for _, c := range r.Changes {
			fmt.Fprintf(w, "  %s: %s -> %s\n", c.Field, orNone(c.Old), orNone(c.New))
		}
	}
}

// warnSecuritySettings warns on w about every security setting (the Mesh's
// mTLS mode, default authorization, ...: resource.SecuritySetting) that
// results change, saying so when the new value is a default because the
// file leaves the field out. objs, written and results are in the same
// order.
func warnSecuritySettings(w io.Writer, objs, written []resource.Object, results []adminapi.ApplyResult) {
	for i, r := range results {
		if i >= len(objs) {
			return
		}
		for _, c := range r.Changes {
			meaning, ok := resource.SecuritySetting(r.Kind, c.Field, c.New)
			if !ok {
				continue
			}
			why := ""
			if !written[i].Sets(c.Field) {
				why = fmt.Sprintf(" (%s leaves it out, so the default applies)", written[i].Source)
			}
			if meaning != "" {
				meaning = ": " + meaning
			}
			fmt.Fprintf(w, "warning: %s: security setting %s: %s -> %s%s%s\n",
				objs[i].Ref(), c.Field, orNone(c.Old), orNone(c.New), why, meaning)
		}
	}
}

// readObjects decodes every document of every named file, directory
// (its .yaml, .yml and .json files, sorted) or stdin.
func readObjects(names []string, stdin io.Reader) ([]resource.Object, error) {
	return decodeFiles("apply", names, stdin)
}

// decodeFiles is readObjects with messages that start with op.
func decodeFiles(op string, names []string, stdin io.Reader) ([]resource.Object, error) {
	var objs []resource.Object
	for _, name := range names {
		paths := []string{name}
		if name != "-" {
			fi, err := os.Stat(name)
			if err != nil {
				return nil, userError("%s: %v", op, err)
			}
			if fi.IsDir() {
				paths = nil
				entries, err := os.ReadDir(name)
				if err != nil {
					return nil, userError("%s: %v", op, err)
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
					return nil, userError("%s: directory %s has no .yaml, .yml or .json files", op, name)
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
				return nil, userError("%s: read %s: %v", op, p, err)
			}
			got, err := resource.Decode(data, p)
			if err != nil {
				return nil, userError("%s: %v", op, err)
			}
			objs = append(objs, got...)
		}
	}
	if len(objs) == 0 {
		return nil, userError("%s: no resources found in %s", op, strings.Join(names, ", "))
	}
	return objs, nil
}

// printWarnings writes the control plane's warnings about accepted
// objects, one line each.
func printWarnings(w io.Writer, results []adminapi.ApplyResult) {
	for _, r := range results {
		ref := r.Kind + " " + r.Name
		if r.Namespace != "" {
			ref = r.Kind + " " + r.Namespace + "/" + r.Name
		}
		for _, msg := range r.Warnings {
			fmt.Fprintf(w, "warning: %s: %s\n", ref, msg)
		}
	}
}
