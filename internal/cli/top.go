package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
)

func newTopCmd(g *globals) *cobra.Command {
	var (
		window, watch time.Duration
		output        string
		namespace     string
	)
	cmd := &cobra.Command{
		Use:     "top",
		Aliases: []string{"stat"},
		Short:   "Show live traffic per service and per edge (request rate, success and denial rates, latency, mTLS)",
		Long: `Show the service graph the collector computes from every proxy's counters:
per service (its inbound traffic) and per edge (caller -> callee), over the
last --window. With --watch it redraws until interrupted.

SUCCESS is the share of requests neither answered 5xx nor denied; DENIED is
the share refused by authorization (403 from the callee's proxy): a denial
is the policy at work, not a failure of the service, so it counts apart.
-o json also has the count of denied requests.

With an external collector, point --api at its admin API and --token-file at
its DATA_DIR/admin.token.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return userError("-o %q: want table or json", output)
			}
			if window != 0 && (window < time.Second || window > 10*time.Minute) {
				return userError("--window %s: want a duration between 1s and 10m", window)
			}
			if watch < 0 || (watch > 0 && watch < 500*time.Millisecond) {
				return userError("--watch %s: want 0 (print once) or at least 500ms", watch)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for {
				gr, err := c.Graph(cmd.Context(), window)
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil
					}
					return fmt.Errorf("top: %w", err)
				}
				if namespace != "" {
					gr = filterGraph(gr, namespace)
				}
				if watch > 0 && output == "table" {
					fmt.Fprint(out, "\x1b[H\x1b[2J") // home, clear screen
				}
				if err := printGraph(out, gr, output); err != nil {
					return err
				}
				if watch == 0 {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(watch):
				}
			}
		}),
	}
	f := cmd.Flags()
	f.DurationVar(&window, "window", 0, "span the figures cover (default: the server's, one minute)")
	f.DurationVar(&watch, "watch", 0, "redraw every DURATION until interrupted (0: print once)")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	f.StringVarP(&namespace, "namespace", "n", "", "only services in this namespace, and edges touching them")
	return cmd
}

// filterGraph keeps the nodes in ns and the edges with an end in ns.
func filterGraph(g adminapi.Graph, ns string) adminapi.Graph {
	nodes, edges := g.Nodes[:0:0], g.Edges[:0:0]
	for _, n := range g.Nodes {
		if n.Namespace == ns {
			nodes = append(nodes, n)
		}
	}
	for _, e := range g.Edges {
		if e.Source.Namespace == ns || e.Destination.Namespace == ns {
			edges = append(edges, e)
		}
	}
	g.Nodes, g.Edges = nodes, edges
	return g
}

func printGraph(out io.Writer, g adminapi.Graph, output string) error {
	if output == "json" {
		data, err := json.MarshalIndent(g, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", data)
		return err
	}
	fmt.Fprintf(out, "Traffic over the last %s from %d proxies (at %s)\n\n", g.Window, g.Proxies, g.GeneratedAt.Local().Format(time.TimeOnly))
	if len(g.Nodes) == 0 {
		fmt.Fprintln(out, "No services have reported yet.")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tPROXIES\t"+trafficHeader)
	for _, n := range g.Nodes {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", ref(n.ServiceRef), n.Proxies, trafficCells(n.Traffic))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	if len(g.Edges) == 0 {
		fmt.Fprintln(out, "No traffic between services in the window.")
		return nil
	}
	tw = tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tDESTINATION\t"+trafficHeader)
	for _, e := range g.Edges {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ref(e.Source), ref(e.Destination), trafficCells(e.Traffic))
	}
	return tw.Flush()
}

const trafficHeader = "RPS\tSUCCESS\tDENIED\tP50\tP99\tMTLS\tREQUESTS"

func trafficCells(t adminapi.Traffic) string {
	denied := percent(t.DenialRate)
	if t.Denied > 0 && denied == "0.0%" {
		denied = "<0.1%" // a rare denial is still worth seeing
	}
	return strings.Join([]string{
		strconv.FormatFloat(t.RequestRate, 'f', 1, 64),
		percent(t.SuccessRate),
		denied,
		millis(t.LatencyP50Ms),
		millis(t.LatencyP99Ms),
		percent(t.MTLSShare),
		strconv.FormatUint(t.Requests, 10),
	}, "\t")
}

func ref(r adminapi.ServiceRef) string {
	if r.Namespace == "" {
		return r.Service
	}
	return r.Service + "." + r.Namespace
}

func percent(p *float64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatFloat(*p*100, 'f', 1, 64) + "%"
}

func millis(p *float64) string {
	if p == nil {
		return "-"
	}
	if *p < 10 {
		return strconv.FormatFloat(*p, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(*p, 'f', 0, 64) + "ms"
}
