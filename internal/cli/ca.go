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

func newCACmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Rotate the mesh root with overlap: rotate, follow with status, then retire-old",
		Long: `Root rotation with overlap:

  trellis ca rotate       new root and intermediate; the trust bundle holds the old and the new root,
                          every proxy renews from the new intermediate at once
  trellis ca status       the roots and how many proxies have a new certificate and trust every root
  trellis ca retire-old   drop the old root once every proxy is done (refused before)

After rotate and after retire-old, copy DATA_DIR/ca.crt to wherever proxies and CLIs read --ca-file.`,
		SuggestionsMinimumDistance: 2,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			hint := "use rotate, status or retire-old"
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				hint = fmt.Sprintf("did you mean %q?", s[0])
			}
			return userError("ca: unknown subcommand %q; %s", args[0], hint)
		},
	}
	cmd.AddCommand(newCARotateCmd(g), newCARetireOldCmd(g), newCAStatusCmd(g))
	return cmd
}

func newCARotateCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "rotate [-o text|json]",
		Short: "Start a root rotation: new root and intermediate, both roots trusted, every proxy renews now",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := caCheckOutput("ca rotate", output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			resp, err := c.RotateCA(cmd.Context())
			if err != nil {
				return fmt.Errorf("ca rotate: %w", err)
			}
			if output == "json" {
				return caWriteJSON(cmd.OutOrStdout(), resp)
			}
			w := cmd.OutOrStdout()
			for _, r := range resp.Added {
				fmt.Fprintf(w, "new root %s (%s, expires %s)\n", shortCAID(r.ID), r.Subject, r.NotAfter.UTC().Format(time.RFC3339))
			}
			is := resp.Status.Issuer
			fmt.Fprintf(w, "signing with intermediate %s (%s, expires %s); the trust bundle holds %d roots\n",
				shortCAID(is.ID), is.Subject, is.NotAfter.UTC().Format(time.RFC3339), len(resp.Status.Roots))
			fmt.Fprintln(w, "proxies renew at once; follow with `trellis ca status`, then run `trellis ca retire-old`")
			fmt.Fprintln(w, "copy the control plane's DATA_DIR/ca.crt (now both roots) to wherever proxies and CLIs read --ca-file")
			return nil
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output: text or json")
	return cmd
}

func newCARetireOldCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "retire-old [-o text|json]",
		Short: "End a root rotation: drop every root but the active one (refused while a proxy depends on one)",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := caCheckOutput("ca retire-old", output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			resp, err := c.RetireOldCA(cmd.Context())
			if err != nil {
				return fmt.Errorf("ca retire-old: %w", err)
			}
			if output == "json" {
				return caWriteJSON(cmd.OutOrStdout(), resp)
			}
			w := cmd.OutOrStdout()
			for _, r := range resp.Retired {
				fmt.Fprintf(w, "retired root %s (%s)\n", shortCAID(r.ID), r.Subject)
			}
			for _, r := range resp.Status.Roots {
				fmt.Fprintf(w, "the trust bundle holds only root %s (%s, expires %s)\n", shortCAID(r.ID), r.Subject, r.NotAfter.UTC().Format(time.RFC3339))
			}
			fmt.Fprintln(w, "replace every copy of ca.crt (--ca-file of proxies and CLIs) with the control plane's DATA_DIR/ca.crt")
			return nil
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output: text or json")
	return cmd
}

func newCAStatusCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status [-o table|json]",
		Short: "Show the trust bundle's roots, the signing intermediate and the proxies' rotation progress",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return userError("ca status: -o %q: use table or json", output)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.CAStatus(cmd.Context())
			if err != nil {
				return fmt.Errorf("ca status: %w", err)
			}
			if output == "json" {
				return caWriteJSON(cmd.OutOrStdout(), st)
			}
			writeCAStatus(cmd.OutOrStdout(), st)
			return nil
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output: table or json")
	return cmd
}

// writeCAStatus renders the roots, the issuer, the progress and what keeps
// each pending proxy from being done.
func writeCAStatus(out io.Writer, st adminapi.CAStatus) {
	tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "ROOT\tACTIVE\tNOT-AFTER\tSUBJECT")
	for _, r := range st.Roots {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", shortCAID(r.ID), caYesNo(r.Active), r.NotAfter.UTC().Format(time.RFC3339), r.Subject)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nissuer: %s (%s, expires %s)\n", shortCAID(st.Issuer.ID), st.Issuer.Subject, st.Issuer.NotAfter.UTC().Format(time.RFC3339))
	p := st.Proxies
	switch {
	case st.External:
		fmt.Fprintln(out, "the CA is external (--ca-cert/--ca-key): rotate it in your PKI, then restart the control plane with the new intermediate")
	case st.Rotating:
		fmt.Fprintf(out, "rotation in progress: %d/%d connected proxies have a certificate from the active intermediate and trust every root\n", p.Done, p.Connected)
	default:
		fmt.Fprintf(out, "no rotation in progress: %d/%d connected proxies have a certificate from the active intermediate and trust the root\n", p.Done, p.Connected)
	}
	if len(p.Pending) > 0 {
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "PROXY\tINSTANCE\tCONNECTED\tBLOCKS-RETIRE\tLACKS")
		for _, px := range p.Pending {
			fmt.Fprintf(tw, "%s.%s\t%s\t%s\t%s\t%s\n", px.Service, px.Namespace, px.Instance, caYesNo(px.Connected), caYesNo(px.BlocksRetire), strings.Join(px.Lacks, "; "))
		}
		tw.Flush()
		if more := p.PendingTotal - len(p.Pending); more > 0 {
			fmt.Fprintf(out, "... and %d more\n", more)
		}
	}
	switch {
	case st.CanRetire:
		fmt.Fprintln(out, "\nevery proxy is done: `trellis ca retire-old` drops the old root")
	case st.Rotating:
		fmt.Fprintf(out, "\nretire-old is refused while %d proxies block it (BLOCKS-RETIRE yes): wait until they are done or gone\n", p.Blocking)
	}
}

func caYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func shortCAID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func caCheckOutput(cmd, output string) error {
	if output != "text" && output != "json" {
		return userError("%s: -o %q: use text or json", cmd, output)
	}
	return nil
}

func caWriteJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", data)
	return err
}
