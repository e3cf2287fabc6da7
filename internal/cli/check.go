package cli

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/meshhealth"
)

// Exit codes of `trellis check` beyond the common ones: the worst finding.
const (
	ExitCheckWarn = 3
	ExitCheckFail = 4
)

func newCheckCmd(g *globals) *cobra.Command {
	var (
		output             string
		kube               bool
		kubeconfig, kubeNS string
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the mesh: control plane, store, CA expiry, proxy sync and certificates, policies that select nothing",
		Long: `Check the mesh and report every finding as OK, WARN or FAIL:

  control-plane  the admin API answers and /readyz (store, CA) is ready
  ca             roots and the signing intermediate: WARN under 30 days left, FAIL under 7
  proxies        every proxy SYNCED; STALE, NACKED, DRIFTED or DISCONNECTED is a FAIL,
                 SYNCING a WARN
  certificates   proxies' workload certificates: FAIL when expired, WARN within 10 minutes
  policies       AuthorizationPolicies that select no registered workload: WARN

With --kubernetes, check a Kubernetes install instead, through the Kubernetes
API (--kubeconfig):

  kubernetes     the API server's version: 1.29 or later (native sidecars)
  crds           the trellis.dev CRDs established
  webhooks       both webhook configurations with a caBundle, and the validating
                 webhook answering (a server-side dry run of a bad policy)
  rbac           every permission trellis install kubernetes grants the control
                 plane, checked with SubjectAccessReview
  replicas       the control plane's replicas ready (WARN under 2)

Exit code: 0 when all is OK, 3 when the worst finding is a WARN, 4 for a FAIL
(2 when the control plane cannot be reached). -o json for scripts.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return userError("-o %q: want table or json", output)
			}
			var rep meshhealth.Report
			if kube {
				var err error
				if rep, err = checkKubernetes(cmd.Context(), kubeconfig, kubeNS); err != nil {
					return userError("check --kubernetes: %v", err)
				}
			} else {
				c, err := g.client()
				if err != nil {
					return err
				}
				if rep, err = meshhealth.Run(cmd.Context(), c, c.BaseURL, time.Now()); err != nil {
					return err
				}
			}
			if err := printCheckReport(cmd.OutOrStdout(), rep, output); err != nil {
				return err
			}
			switch rep.Worst {
			case meshhealth.Fail:
				return &exitcode.Error{Code: ExitCheckFail, Err: errors.New("check: failures found (see above)")}
			case meshhealth.Warn:
				return &exitcode.Error{Code: ExitCheckWarn, Err: errors.New("check: warnings found (see above)")}
			}
			return nil
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().BoolVar(&kube, "kubernetes", false, "check a Kubernetes install through the Kubernetes API instead of the control plane's admin API")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", envOr("KUBECONFIG", ""), "with --kubernetes: kubeconfig file (env KUBECONFIG; default: the in-cluster config)")
	cmd.Flags().StringVar(&kubeNS, "kube-namespace", "trellis-system", "with --kubernetes: the control plane's namespace")
	return cmd
}

func printCheckReport(out io.Writer, rep meshhealth.Report, output string) error {
	if output == "json" {
		return writeJSON(out, rep)
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "LEVEL\tCHECK\tSUBJECT\tMESSAGE")
	for _, f := range rep.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Level, f.Check, orDash(f.Subject), f.Message)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "\nWorst: %s\n", rep.Worst)
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
