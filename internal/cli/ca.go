package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminview"
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
	}
	subcommandsOnly(cmd, "use rotate, status or retire-old")
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
				return writeJSON(cmd.OutOrStdout(), resp)
			}
			w := cmd.OutOrStdout()
			for _, r := range resp.Added {
				fmt.Fprintf(w, "new root %s (%s, expires %s)\n", adminview.ShortID(r.ID), r.Subject, r.NotAfter.UTC().Format(time.RFC3339))
			}
			is := resp.Status.Issuer
			fmt.Fprintf(w, "signing with intermediate %s (%s, expires %s); the trust bundle holds %d roots\n",
				adminview.ShortID(is.ID), is.Subject, is.NotAfter.UTC().Format(time.RFC3339), len(resp.Status.Roots))
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
				return writeJSON(cmd.OutOrStdout(), resp)
			}
			w := cmd.OutOrStdout()
			for _, r := range resp.Retired {
				fmt.Fprintf(w, "retired root %s (%s)\n", adminview.ShortID(r.ID), r.Subject)
			}
			for _, r := range resp.Status.Roots {
				fmt.Fprintf(w, "the trust bundle holds only root %s (%s, expires %s)\n", adminview.ShortID(r.ID), r.Subject, r.NotAfter.UTC().Format(time.RFC3339))
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
				return writeJSON(cmd.OutOrStdout(), st)
			}
			adminview.WriteCAStatus(cmd.OutOrStdout(), st)
			return nil
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output: table or json")
	return cmd
}

func caCheckOutput(cmd, output string) error {
	if output != "text" && output != "json" {
		return userError("%s: -o %q: use text or json", cmd, output)
	}
	return nil
}
