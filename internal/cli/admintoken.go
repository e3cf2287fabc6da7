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

func newAdminTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin-token",
		Short: "Create, list and revoke admin API tokens with a role (viewer, operator, security-admin)",
	}
	subcommandsOnly(cmd, "use create, list or revoke")
	cmd.AddCommand(newAdminTokenCreateCmd(g), newAdminTokenListCmd(g), newAdminTokenRevokeCmd(g))
	return cmd
}

func newAdminTokenCreateCmd(g *globals) *cobra.Command {
	var req adminapi.CreateAdminTokenRequest
	var output string
	cmd := &cobra.Command{
		Use:   "create --role viewer|operator|security-admin [--namespace NS]... [--name NAME] [--ttl 720h]",
		Short: "Create an admin token; prints what it is, then the token on the last line",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if req.Role == "" {
				return userError("admin-token create: --role is required: viewer, operator or security-admin")
			}
			if output != "text" && output != "json" {
				return userError("admin-token create: -o %q: use text or json", output)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			resp, err := c.CreateAdminToken(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("admin-token create: %w", err)
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				data, _ := json.MarshalIndent(resp, "", "  ")
				fmt.Fprintf(out, "%s\n", data)
				return nil
			}
			info := resp.Info
			fmt.Fprintf(out, "admin token %q, role %s, namespaces %s, expires %s\n", info.Name, info.Role, namespacesText(info.Namespaces), info.ExpiresAt.Format(time.RFC3339))
			fmt.Fprintln(out, "it is shown only now; store it like a password (trellis --token-file FILE):")
			fmt.Fprintln(out, resp.Token)
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Role, "role", "", "viewer, operator or security-admin (required)")
	f.StringSliceVar(&req.Namespaces, "namespace", nil, "limit the token to this namespace (repeat, or a comma list); default: all namespaces")
	f.StringVar(&req.Name, "name", "", "the token's name, in audit events and list (default: ROLE-RANDOM)")
	f.StringVar(&req.TTL, "ttl", "720h", "token lifetime (at most 8784h)")
	f.StringVarP(&output, "output", "o", "text", "output: text (the token on the last line) or json")
	return cmd
}

func namespacesText(nss []string) string {
	if len(nss) == 0 {
		return "all"
	}
	return strings.Join(nss, ",")
}

func newAdminTokenListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List admin tokens (never the tokens themselves)",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			items, err := c.ListAdminTokens(cmd.Context())
			if err != nil {
				return fmt.Errorf("admin-token list: %w", err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tNAMESPACES\tCREATED\tEXPIRES\tLAST-USED\tSTATE")
			now := time.Now()
			for _, t := range items {
				state := "valid"
				switch {
				case t.RevokedAt != nil:
					state = "revoked"
				case !now.Before(t.ExpiresAt):
					state = "expired"
				}
				used := "-"
				if t.LastUsed != nil {
					used = t.LastUsed.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Role, namespacesText(t.Namespaces),
					t.CreatedAt.Format(time.RFC3339), t.ExpiresAt.Format(time.RFC3339), used, state)
			}
			return tw.Flush()
		}),
	}
}

func newAdminTokenRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an admin token by name; it is refused from then on",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return userError("admin-token revoke: want the token's name (see `trellis admin-token list`)")
			}
			return nil
		},
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			info, err := c.RevokeAdminToken(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("admin-token revoke: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "admin token %q (role %s) revoked\n", info.Name, info.Role)
			return nil
		}),
	}
}
