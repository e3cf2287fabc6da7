package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
)

func newAlertsCmd(g *globals) *cobra.Command {
	var (
		since, watch time.Duration
		output       string
	)
	cmd := &cobra.Command{
		Use:   "alerts [--since 24h] [--watch 2s] [-o table|json]",
		Short: "Show the anomaly alerts the collector raised (new edges and paths, deny bursts, scans, shifts, ...)",
		Long: `Show the anomaly alerts the collector's detectors raised (docs/learning.md),
oldest first: one per episode, with who it is about, what was observed
against what baseline, and why it alerted. With --watch, new alerts are
printed as they come until interrupted; -o json prints one JSON array
(with --watch, one array per new batch).

The same alerts go to every audit sink as anomaly.<detector> events and
are counted in trellis_anomalies_total{detector}. With an external
collector, point --api at its admin API.`,
		Example: `  trellis alerts
  trellis alerts --since 1h -o json
  trellis alerts --watch 2s`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return userError("alerts: -o %q: want table or json", output)
			}
			if since < 0 {
				return userError("alerts: --since %s: want a positive duration such as 24h, or 0 for every alert kept", since)
			}
			if watch < 0 || (watch > 0 && watch < 500*time.Millisecond) {
				return userError("alerts: --watch %s: want 0 (print once) or at least 500ms", watch)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			from := time.Time{}
			if since > 0 {
				from = time.Now().Add(-since)
			}
			out := cmd.OutOrStdout()
			first := true
			for {
				alerts, err := c.Alerts(cmd.Context(), from)
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil
					}
					return fmt.Errorf("alerts: %w", err)
				}
				if first || len(alerts) > 0 {
					if err := printAlerts(out, alerts, output, first || output == "json"); err != nil {
						return err
					}
				}
				first = false
				if watch == 0 {
					return nil
				}
				if n := len(alerts); n > 0 {
					from = alerts[n-1].Started.Add(time.Nanosecond)
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
	f.DurationVar(&since, "since", 24*time.Hour, "only alerts that started within this long (0: every alert the collector keeps)")
	f.DurationVar(&watch, "watch", 0, "print new alerts every DURATION until interrupted (0: print once)")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printAlerts(out io.Writer, alerts []adminapi.Alert, output string, header bool) error {
	if output == "json" {
		b, err := json.MarshalIndent(alerts, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	if len(alerts) == 0 {
		_, err := io.WriteString(out, "No alerts.\n")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	if header {
		fmt.Fprintln(tw, "STARTED\tSEVERITY\tDETECTOR\tPRINCIPAL\tSERVICE\tEXPLANATION")
	}
	for _, a := range alerts {
		svc := a.Service
		if svc == "" {
			svc = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Started.Local().Format("2006-01-02 15:04:05"), a.Severity, a.Detector, a.Principal, svc,
			strings.ReplaceAll(a.Explanation, "\n", " "))
	}
	return tw.Flush()
}
