// Package policycmd is trellis policy check and trellis policy lint: what
// the live authorization policies decide for one request, and the policy
// rules that cannot do what their author meant. It fetches the mesh state
// over the admin API (the client the global flags configure, given in Env)
// and leaves the analysis to internal/policy/analysis; its errors carry
// internal/cli/exitcode's exit codes. Only internal/cli imports it.
package policycmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/policy/analysis"
	"github.com/trellismesh/trellis/internal/resource"
)

// Env is what the policy commands take from the command line around them.
type Env struct {
	// Stdin is what policy lint -f - reads.
	Stdin io.Reader
	// Client is the admin API client of the global flags (--api,
	// --token-file, --token, --ca-file); its errors carry exit codes.
	Client func() (*adminapi.Client, error)
	// TokenConfigured reports whether Client has a token to send, so that
	// lint -f can run offline where no control plane is configured.
	TokenConfigured func() bool
	// ReadObjects decodes every document of the named files, directories
	// and - (stdin), as trellis apply -f does; its messages start with
	// "apply: ".
	ReadObjects func(names []string, stdin io.Reader) ([]resource.Object, error)
}

// New is trellis policy, with its subcommands check and lint.
func New(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:                        "policy",
		Short:                      "Check what the live authorization policies decide, and lint policies",
		SuggestionsMinimumDistance: 2,
		// As for token: without a RunE a mistyped subcommand would print
		// help and exit 0.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			hint := "use check, lint, suggest, coverage or promote"
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				hint = fmt.Sprintf("did you mean %q?", s[0])
			}
			return exitcode.UserError("policy: unknown subcommand %q; %s", args[0], hint)
		},
	}
	cmd.AddCommand(newCheckCmd(env), newLintCmd(env), newSuggestCmd(env), newCoverageCmd(env), newPromoteCmd(env))
	return cmd
}

// fetchLive reads what policy check and lint analyze from the control
// plane: the Mesh, every AuthorizationPolicy and the registered proxies
// (and services, withServices). A mesh nobody configured has the default
// Mesh.
func fetchLive(ctx context.Context, c *adminapi.Client, withServices bool) (*analysis.Mesh, error) {
	meshKind, _ := resource.LookupKind(resource.KindMesh)
	policyKind, _ := resource.LookupKind(resource.KindAuthorizationPolicy)
	var s analysis.Mesh
	meshObj, err := c.Get(ctx, meshKind, "", "default")
	var se *adminapi.StatusError
	if errors.As(err, &se) && se.Status == 404 {
		meshObj, err = resource.DefaultMesh(), nil
	}
	if err != nil {
		return nil, err
	}
	if s.Spec, err = resource.MeshSpecOf(&meshObj); err != nil {
		return nil, err
	}
	if s.Policies, err = c.List(ctx, policyKind, ""); err != nil {
		return nil, err
	}
	proxies, err := c.ListProxies(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, p := range proxies {
		s.Proxies = append(s.Proxies, analysis.Proxy{SPIFFEID: p.SPIFFEID, Service: p.Service, Namespace: p.Namespace, Labels: p.Labels})
	}
	if withServices {
		services, err := c.ListServices(ctx, "")
		if err != nil {
			return nil, err
		}
		for _, sv := range services {
			s.Services = append(s.Services, analysis.Service{Name: sv.Name, Namespace: sv.Namespace})
		}
	}
	return &s, nil
}

// spiffeIDs are the identities of m's proxies; none for no m.
func spiffeIDs(m *analysis.Mesh) []string {
	if m == nil {
		return nil
	}
	var ids []string
	for _, p := range m.Proxies {
		ids = append(ids, p.SPIFFEID)
	}
	return ids
}

// TrustDomain is the mesh's trust domain as the SPIFFE IDs of its
// registered proxies show it. The admin API does not publish it, so
// without proxies it is flagTD (the --trust-domain flag); a flag that
// contradicts the proxies is an error rather than a silently different
// answer.
func TrustDomain(op string, proxyIDs []string, flagTD string, flagSet bool) (string, error) {
	seen := map[string]bool{}
	for _, s := range proxyIDs {
		if id, err := spiffeid.FromString(s); err == nil {
			seen[id.TrustDomain().Name()] = true
		}
	}
	tds := slices.Sorted(maps.Keys(seen))
	switch {
	case len(tds) == 0:
		return flagTD, nil
	case flagSet && !seen[flagTD]:
		return "", exitcode.UserError("%s: --trust-domain %q: the mesh's proxies are in trust domain %s; drop the flag", op, flagTD, strings.Join(tds, ", "))
	case flagSet:
		return flagTD, nil
	}
	return tds[0], nil
}

func addTrustDomainFlag(cmd *cobra.Command, td *string) {
	cmd.Flags().StringVar(td, "trust-domain", identity.DefaultTrustDomain,
		"the mesh's trust domain, used only when no proxy is registered to show it")
}

// writeJSON writes v as indented JSON and a newline, as -o json does in
// every command.
func writeJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", data)
	return err
}
