package adminview

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

// WriteObjects writes the table of `trellis get KIND`: name, the columns of
// kind, and age at now; with showNS (and a namespaced kind) the namespace
// first.
func WriteObjects(w io.Writer, kind resource.KindInfo, items []resource.Object, showNS bool, now time.Time) error {
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
		row = append(row, age(o.Metadata.CreationTimestamp, now))
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
			{"FROM-INTENTS", func(o *resource.Object) string { return intentsOf(o) }},
		}
	case "Intent":
		spec := func(o *resource.Object) resource.IntentSpec { s, _ := resource.IntentSpecOf(o); return s }
		return []column{
			{"CLIENT", func(o *resource.Object) string { return spec(o).Client.Service }},
			{"ENFORCEMENT", func(o *resource.Object) string { return spec(o).Enforcement }},
			{"CALLS", func(o *resource.Object) string {
				var out []string
				for _, c := range spec(o).Calls {
					out = append(out, c.Service)
				}
				return strings.Join(out, ",")
			}},
		}
	}
	return nil
}

// intentsOf lists, for a policy generated from Intents, the Intents
// behind its rules (each once, in rule order); "-" for any other policy.
func intentsOf(o *resource.Object) string {
	src := resource.RuleSources(o)
	if len(src) == 0 {
		return "-"
	}
	var out []string
	for _, s := range src {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, ",")
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
