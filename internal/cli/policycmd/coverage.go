package policycmd

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/policy"
)

// EdgeCoverage is one edge in trellis policy coverage: its observed
// requests by what the live policies decide for them. Its JSON form is
// the output of -o json.
type EdgeCoverage struct {
	Source    string            `json:"source"`      // service.namespace, or unknown.namespace
	Target    string            `json:"destination"` // service.namespace
	Requests  uint64            `json:"requests"`
	AllowedBy map[string]uint64 `json:"allowedBy"`          // policy namespace/name, or "mesh default"
	Denied    uint64            `json:"denied"`             // requests the live policies deny
	DeniedBy  map[string]uint64 `json:"deniedBy,omitempty"` // the denied requests by deciding policy namespace/name, or "mesh default"
	WouldDeny uint64            `json:"wouldDeny"`          // requests an audit-mode policy would deny
	Unknown   uint64            `json:"unknown"`            // requests from callers without a known service
}

// meshDefault is AllowedBy's key for requests no policy decides.
const meshDefault = "mesh default"

func newCoverageCmd(env Env) *cobra.Command {
	var namespace, output, trustDomain string
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "coverage [-n NS] [--since 24h] [-o text|json]",
		Short: "Show each observed edge's requests: allowed (by which policy), denied, would-deny, unknown",
		Long: `Show each edge the mesh has seen traffic on, with its requests (as learned by
the collector, per method and path template) sorted by what the live
policies decide for them now: allowed by which policy (or the mesh
default), denied, would be denied by an audit-mode policy, or unknown
(callers without a known service, which no policy can name by service).`,
		Example: `  trellis policy coverage -n shop
  trellis policy coverage --since 1h -o json`,
		Args: exitcode.NoArgs,
		RunE: exitcode.RunE(func(cmd *cobra.Command, _ []string) error {
			const op = "policy coverage"
			if output != "text" && output != "json" {
				return exitcode.UserError("%s: -o %q: use text or json", op, output)
			}
			c, err := env.Client()
			if err != nil {
				return err
			}
			live, td, err := liveMesh(cmd, c, op, trustDomain)
			if err != nil {
				return err
			}
			obs, err := fetchObserved(cmd.Context(), c, live, td, "", since, 1)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			cov := coverage(obs, namespace)
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), cov)
			}
			return printCoverage(cmd.OutOrStdout(), cov)
		}),
	}
	fl := cmd.Flags()
	fl.StringVarP(&namespace, "namespace", "n", "", "only edges whose caller or callee is in this namespace")
	fl.DurationVar(&since, "since", 24*time.Hour, "only shapes seen within this long (0: all)")
	fl.StringVarP(&output, "output", "o", "text", "output format: text or json")
	addTrustDomainFlag(cmd, &trustDomain)
	return cmd
}

// coverage sums obs per edge.
func coverage(obs []observed, namespace string) []EdgeCoverage {
	byEdge := map[[2]string]*EdgeCoverage{}
	for _, o := range obs {
		e := o.edge
		if namespace != "" && e.SourceNamespace != namespace && e.Namespace != namespace {
			continue
		}
		k := [2]string{e.SourceService + "." + e.SourceNamespace, e.Service + "." + e.Namespace}
		c := byEdge[k]
		if c == nil {
			c = &EdgeCoverage{Source: k[0], Target: k[1], AllowedBy: map[string]uint64{}}
			byEdge[k] = c
		}
		n := o.shape.Requests
		c.Requests += n
		switch {
		case o.res == nil:
			c.Unknown += n
		case o.res.Decision == "DENY":
			c.Denied += n
			by := o.res.Policy
			if by == "" {
				by = meshDefault
			}
			if c.DeniedBy == nil {
				c.DeniedBy = map[string]uint64{}
			}
			c.DeniedBy[by] += n
		case o.res.Cause == policy.CauseMeshDefault.String():
			c.AllowedBy[meshDefault] += n
		default:
			c.AllowedBy[o.res.Policy] += n
		}
		if o.wouldDeny() {
			c.WouldDeny += n
		}
	}
	out := make([]EdgeCoverage, 0, len(byEdge))
	for _, c := range byEdge {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b EdgeCoverage) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Target, b.Target))
	})
	return out
}

func printCoverage(w io.Writer, cov []EdgeCoverage) error {
	if len(cov) == 0 {
		_, err := io.WriteString(w, "No observed traffic (the collector learns from the proxies' stats reports; widen --since).\n")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tDESTINATION\tREQUESTS\tALLOWED-BY\tDENIED\tWOULD-DENY\tUNKNOWN")
	for _, c := range cov {
		var by []string
		for _, p := range slices.Sorted(maps.Keys(c.AllowedBy)) {
			by = append(by, fmt.Sprintf("%s:%d", p, c.AllowedBy[p]))
		}
		if len(by) == 0 {
			by = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\n", c.Source, c.Target, c.Requests, strings.Join(by, ","), c.Denied, c.WouldDeny, c.Unknown)
	}
	return tw.Flush()
}
