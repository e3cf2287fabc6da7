package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminview"
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
					gr = adminview.FilterGraph(gr, namespace)
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

func printGraph(out io.Writer, g adminapi.Graph, output string) error {
	if output == "json" {
		return writeJSON(out, g)
	}
	return adminview.WriteGraph(out, g)
}
