package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

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
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	case "yaml":
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	cols := tableColumns(kind)
	header := []string{}
	if kind.Namespaced && showNS {
		header = append(header, "NAMESPACE")
	}
	header = append(header, "NAME")
	for _, c := range cols {
		header = append(header, c.name)
	}
	header = append(header, "AGE")
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for i := range items {
		o := &items[i]
		row := []string{}
		if kind.Namespaced && showNS {
			row = append(row, o.Metadata.Namespace)
		}
		row = append(row, o.Metadata.Name)
		for _, c := range cols {
			row = append(row, c.value(o))
		}
		row = append(row, age(o.Metadata.CreationTimestamp))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

type column struct {
	name  string
	value func(*resource.Object) string
}

func tableColumns(kind resource.KindInfo) []column {
	switch kind.Kind {
	case "Mesh":
		spec := func(o *resource.Object) resource.MeshSpec { s, _ := resource.MeshSpecOf(o); return s }
		return []column{
			{"MTLS", func(o *resource.Object) string { return spec(o).MTLS.Mode }},
			{"DEFAULT-AUTHZ", func(o *resource.Object) string { return spec(o).Authorization.Default }},
			{"WORKLOAD-TTL", func(o *resource.Object) string {
				b, _ := spec(o).Certificates.WorkloadTTL.MarshalJSON()
				return strings.Trim(string(b), `"`)
			}},
		}
	case "AuthorizationPolicy":
		spec := func(o *resource.Object) resource.AuthorizationPolicySpec {
			s, _ := resource.AuthorizationPolicySpecOf(o)
			return s
		}
		return []column{
			{"ACTION", func(o *resource.Object) string { return spec(o).Action }},
			{"ENFORCEMENT", func(o *resource.Object) string { return spec(o).Enforcement }},
			{"SELECTOR", func(o *resource.Object) string { return selectorString(spec(o).Selector) }},
			{"RULES", func(o *resource.Object) string { return strconv.Itoa(len(spec(o).Rules)) }},
		}
	}
	return nil
}

func selectorString(sel resource.Selector) string {
	var parts []string
	if sel.Service != "" {
		parts = append(parts, "service="+sel.Service)
	}
	// Sorted: map order would make the table differ from run to run.
	for _, k := range slices.Sorted(maps.Keys(sel.MatchLabels)) {
		parts = append(parts, k+"="+sel.MatchLabels[k])
	}
	if len(parts) == 0 {
		return "<namespace>"
	}
	return strings.Join(parts, ",")
}

func age(t *time.Time) string {
	if t == nil {
		return "<unknown>"
	}
	d := max(time.Since(*t), 0) // a server clock ahead of ours is not a negative age
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}
