package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke workload join tokens",
	}
	subcommandsOnly(cmd, "use create, list or revoke")
	cmd.AddCommand(newTokenCreateCmd(g), newTokenRevokeCmd(g), newTokenListCmd(g))
	return cmd
}

func newTokenCreateCmd(g *globals) *cobra.Command {
	var req adminapi.CreateTokenRequest
	var output string
	cmd := &cobra.Command{
		Use:   "create --service NAME [--namespace NS] [--service-account SA] [--ttl 24h]",
		Short: "Create a join token for exactly one workload identity; prints the token",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if req.Service == "" {
				return userError("token create: --service is required")
			}
			if output != "token" && output != "json" {
				return userError("token create: -o %q: use token or json", output)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			resp, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("token create: %w", err)
			}
			if output == "json" {
				data, _ := json.MarshalIndent(resp, "", "  ")
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", data)
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), resp.Token)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s for %s, expires %s\n", resp.Info.ID, resp.Info.SPIFFEID, resp.Info.ExpiresAt.Format(time.RFC3339))
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Service, "service", "", "service name (required)")
	f.StringVar(&req.Namespace, "namespace", "default", "namespace")
	f.StringVar(&req.ServiceAccount, "service-account", "", "service account (default: the service name)")
	f.StringVar(&req.TTL, "ttl", "24h", "token lifetime")
	f.StringVarP(&output, "output", "o", "token", "output: token (just the token) or json")
	return cmd
}

func newTokenRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token by ID",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return userError("token revoke: want the token ID (see `trellis token list`)")
			}
			return nil
		},
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			info, err := c.RevokeToken(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("token revoke: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s (%s) revoked\n", info.ID, info.SPIFFEID)
			return nil
		}),
	}
}

func newTokenListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List issued join tokens (never the tokens themselves)",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			items, err := c.ListTokens(cmd.Context())
			if err != nil {
				return fmt.Errorf("token list: %w", err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, strings.Join([]string{"ID", "SPIFFE-ID", "EXPIRES", "STATE"}, "\t"))
			now := time.Now()
			for _, t := range items {
				state := "valid"
				switch {
				case t.RevokedAt != nil:
					state = "revoked"
				case now.After(t.ExpiresAt):
					state = "expired"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.SPIFFEID, t.ExpiresAt.Format(time.RFC3339), state)
			}
			return tw.Flush()
		}),
	}
}
