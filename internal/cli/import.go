package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli/policycmd"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/istioimport"
)

func newImportCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Convert another mesh's resources into Trellis resources",
		Args:  noArgs,
	}
	cmd.AddCommand(newImportIstioCmd(g))
	return cmd
}

const importIstioHelp = `Convert Istio security resources into Trellis resources, written as YAML to
stdout for trellis apply -f:

  AuthorizationPolicy (security.istio.io)  ->  AuthorizationPolicy
  mesh-wide PeerAuthentication             ->  Mesh (spec.mtls.mode)

Principals TRUST_DOMAIN/ns/NS/sa/SA of the Istio trust domain
(--istio-trust-domain) become spiffe://TRUST_DOMAIN/ns/NS/sa/SA in the Trellis
trust domain (--trust-domain). A policy of Istio's root namespace
(--root-namespace) without a selector goes to trellis-system, where it too
protects the whole mesh.

Every field that does not convert (CUSTOM and AUDIT actions, requestPrincipals,
ipBlocks, when keys other than request.headers[...], per-namespace mTLS
modes...) is listed on stderr by path, with what the output does instead. It
errs on the safe side: an ALLOW policy loses the source, operation or rule
holding the field, so it never allows more than in Istio; a DENY policy loses
only the field, so it never denies less. See docs/istio-import.md.

Exit status: 0 when everything converted; 1 when something was left out (the
output is still written) or the input is bad.`

func newImportIstioCmd(g *globals) *cobra.Command {
	var (
		files               []string
		opts                istioimport.Options
		istioTD, td, rootNS string
	)
	cmd := &cobra.Command{
		Use:   "istio -f FILE|- [-f FILE]... [--trust-domain TD]",
		Short: "Convert Istio AuthorizationPolicy and PeerAuthentication into Trellis resources; list what does not convert",
		Long:  importIstioHelp,
		Example: `  trellis import istio -f istio-security.yaml > trellis.yaml
  kubectl get authorizationpolicies,peerauthentications -A -o yaml | trellis import istio -f -`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			const op = "import istio"
			if len(files) == 0 {
				return userError("%s: -f is required: an Istio YAML file, or - for stdin", op)
			}
			var in []istioimport.File
			for _, name := range files {
				var (
					data []byte
					err  error
				)
				if name == "-" {
					name = "<stdin>"
					data, err = io.ReadAll(g.stdin)
				} else {
					data, err = os.ReadFile(name)
				}
				if err != nil {
					return userError("%s: %v", op, err)
				}
				in = append(in, istioimport.File{Name: name, Data: data})
			}
			if !cmd.Flags().Changed("trust-domain") && g.tokenConfigured() {
				td = liveTrustDomain(cmd, g, op, td)
			}
			if _, err := spiffeid.TrustDomainFromString(td); err != nil {
				return userError("%s: --trust-domain %q: %v", op, td, err)
			}
			opts.TrustDomain, opts.IstioTrustDomain, opts.RootNamespace = td, istioTD, rootNS
			res, err := istioimport.Convert(opts, in...)
			if err != nil {
				// Only input that does not parse fails the conversion;
				// its error names the file and document.
				if u := errors.Unwrap(err); u != nil {
					err = u
				}
				return userError("%s: nothing converted: %v", op, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "# Converted from Istio by trellis import istio -f %s\n", joinNames(files))
			if err := istioimport.WriteYAML(out, res.Objects); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			stderr := cmd.ErrOrStderr()
			for _, d := range res.Dropped {
				fmt.Fprintln(stderr, d)
			}
			if n := len(res.Dropped); n > 0 {
				return userError("%s: %s not converted (listed above); the output leaves them out", op, plural(n, "part"))
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "filename", "f", nil, "Istio YAML or JSON file, or - (stdin); repeatable")
	f.StringVar(&td, "trust-domain", controlplane.DefaultTrustDomain,
		"the Trellis mesh's trust domain for converted principals; when not given and an admin token is configured, the one the mesh's registered proxies show")
	f.StringVar(&istioTD, "istio-trust-domain", istioimport.DefaultIstioTrustDomain, "the trust domain of the Istio principals")
	f.StringVar(&rootNS, "root-namespace", istioimport.DefaultRootNamespace, "Istio's root namespace, whose policies apply to the whole mesh")
	return cmd
}

// liveTrustDomain is the trust domain of the mesh's registered proxies, or
// def when none is registered or the control plane cannot be asked; a note
// on stderr says why.
func liveTrustDomain(cmd *cobra.Command, g *globals, op, def string) string {
	c, err := g.client()
	var proxies []adminapi.ProxyInfo
	if err == nil {
		proxies, err = c.ListProxies(cmd.Context(), "")
	}
	if err == nil {
		var ids []string
		for _, p := range proxies {
			ids = append(ids, p.SPIFFEID)
		}
		var td string
		if td, err = policycmd.TrustDomain(op, ids, def, false); err == nil {
			return td
		}
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "note: using trust domain %s (pass --trust-domain to choose): %v\n", def, err)
	return def
}

func joinNames(names []string) string {
	s := ""
	for i, n := range names {
		if i > 0 {
			s += " -f "
		}
		s += n
	}
	return s
}
