package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/adminview"
	"github.com/trellismesh/trellis/internal/resource"
)

func newGetCmd(g *globals) *cobra.Command {
	var namespace, output string
	var all bool
	cmd := &cobra.Command{
		Use:   "get KIND [NAME] [-n NS | -A] [-o table|yaml|json]",
		Short: "Show resources",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return userError("get: want KIND [NAME], e.g. `trellis get authz -A` or `trellis get mesh default`; known kinds: %s", kindNames())
			}
			return nil
		},
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "yaml" && output != "json" {
				return userError("get: -o %q: use table, yaml or json", output)
			}
			if rk := registryKind(args[0]); rk != "" {
				if len(args) == 2 {
					return userError("get %s lists; drop %q and filter with -n", rk, args[1])
				}
				ns := namespace
				if !cmd.Flags().Changed("namespace") {
					ns = ""
				}
				return getRegistry(cmd.Context(), g, rk, ns, output, all, cmd.OutOrStdout())
			}
			kind, ok := resource.LookupKind(args[0])
			if !ok {
				return userError("get: unknown kind %q; known kinds: %s", args[0], kindNames())
			}
			if output != "table" && output != "yaml" && output != "json" {
				return userError("get: -o %q: use table, yaml or json", output)
			}
			if all && cmd.Flags().Changed("namespace") {
				return userError("get: -n and -A exclude each other")
			}
			if all && len(args) == 2 {
				return userError("get: -A lists; drop NAME or -A")
			}
			ns := namespace
			if all || !kind.Namespaced {
				ns = ""
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(args) == 2 {
				o, err := c.Get(cmd.Context(), kind, ns, args[1])
				if err != nil {
					return fmt.Errorf("get: %w", err)
				}
				return printObjects(out, kind, []resource.Object{o}, output, false, all)
			}
			items, err := c.List(cmd.Context(), kind, ns)
			if err != nil {
				return fmt.Errorf("get: %w", err)
			}
			if len(items) == 0 && output == "table" {
				if kind.Namespaced && !all {
					fmt.Fprintf(cmd.ErrOrStderr(), "No %s found in namespace %s.\n", kind.Plural, ns)
				} else {
					fmt.Fprintf(cmd.ErrOrStderr(), "No %s found.\n", kind.Plural)
				}
				return nil
			}
			return printObjects(out, kind, items, output, true, all)
		}),
	}
	f := cmd.Flags()
	f.StringVarP(&namespace, "namespace", "n", "default", "namespace")
	f.BoolVarP(&all, "all-namespaces", "A", false, "list across all namespaces")
	f.StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	return cmd
}

func kindNames() string {
	var names []string
	for _, k := range resource.Kinds() {
		names = append(names, k.Plural)
	}
	names = append(names, "workloads", "services")
	return strings.Join(names, ", ")
}

func printObjects(w io.Writer, kind resource.KindInfo, items []resource.Object, format string, list, showNS bool) error {
	var v any = items
	if !list {
		v = items[0]
	} else {
		v = map[string]any{"apiVersion": resource.APIVersion, "kind": "List", "items": items}
	}
	switch format {
	case "json":
		return writeJSON(w, v)
	case "yaml":
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	return adminview.WriteObjects(w, kind, items, showNS, time.Now())
}
