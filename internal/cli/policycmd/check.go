package policycmd

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/names"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/policy/analysis"
)

const policyCheckHelp = `Decide one request against the live authorization policies, as a proxy of
the --to service would: the Mesh default, every AuthorizationPolicy (audit-mode
ones reported separately) and the registered proxies, read from the control
plane.

--from is the caller: a SPIFFE ID, or SERVICE.NAMESPACE, which names the
identity of that service's registered proxies (or, when none is registered,
spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE). The caller's service is known
when --from names it, or when the SPIFFE ID serves exactly one service.
--from plaintext is a caller without a certificate (no sidecar): with the
Mesh's mtls.mode STRICT the proxy refuses it before any policy (DENY, cause
mtls-required); with PERMISSIVE it is decided with no identity, namespace
or service.
--to is the called service; its workload labels are those of its registered
proxies unless --label is given.

The request is HTTP (GET / unless --method or --path say otherwise), or with
--tcp an opaque TCP connection, which HTTP conditions never let in. Give
--port when policies name ports: a request without a port matches no port.

--to-host HOST --port N asks instead about a connection the caller's
transparent proxy captures to a host outside the mesh: allowed when an
EgressPolicy selecting the caller lists the host (exact, *.domain, * or
the IP address) and port, refused when EgressPolicies select it but none
lists them, and decided by the Mesh's outbound mode when none selects it
(docs/egress.md).

Exit status: 0 whatever the decision; 1 for bad flags; 2 when the control
plane cannot be reached. In -o json, "decision", "policy" ("" unless one
policy decided), "rule" (-1 unless a rule decided) and "reason" are stable.

When the local policies allow an HTTP request, CUSTOM policies matching it
hand it to their external authorization provider, which cannot be asked
offline: "custom" (in -o json, [{policy, rule, provider, defined}]) lists
the providers that would be asked, and the decision shown is the local one.`

type checkFlags struct {
	from, to, toHost, method, path, host, trustDomain, output string
	port                                                      int
	headers, labels, claims                                   []string
	requestPrincipal                                          string
	tcp                                                       bool
}

func newCheckCmd(env Env) *cobra.Command {
	var f checkFlags
	cmd := &cobra.Command{
		Use:   "check --from SPIFFE_ID|SERVICE.NS|plaintext --to SERVICE.NS|--to-host HOST [--port N] [--method M] [--path P] [--header k=v]... [--tcp] [-o text|json]",
		Short: "Show what the live policies decide for one request (ALLOW or DENY, by which policy and rule)",
		Long:  policyCheckHelp,
		Example: `  trellis policy check --from frontend.shop --to catalog.shop --method GET --path /items/42
  trellis policy check --from spiffe://trellis.local/ns/shop/sa/frontend --to catalog.shop --header x-tenant=a -o json
  trellis policy check --from billing.pay --to db.shop --tcp --port 5432
  trellis policy check --from plaintext --to catalog.shop --path /health
  trellis policy check --from frontend.shop --to catalog.shop --request-principal https://id.example.com/alice --claim groups=admin
  trellis policy check --from payments.shop --to-host api.psp.example --port 443`,
		Args: exitcode.NoArgs,
		RunE: exitcode.RunE(func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("to-host") {
				return runEgressCheck(cmd, env, &f)
			}
			q, err := parseCheck(&f, cmd.Flags().Changed)
			if err != nil {
				return err
			}
			c, err := env.Client()
			if err != nil {
				return err
			}
			live, err := fetchLive(cmd.Context(), c, false)
			if err != nil {
				return fmt.Errorf("policy check: %w", err)
			}
			td, err := TrustDomain("policy check", spiffeIDs(live), f.trustDomain, cmd.Flags().Changed("trust-domain"))
			if err != nil {
				return err
			}
			res, err := decide(live, q, td)
			if err != nil {
				return err
			}
			for _, n := range checkNotes(res) {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			if f.output == "json" {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			return printCheck(cmd.OutOrStdout(), res)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", "", "caller: SPIFFE ID (spiffe://TD/ns/NS/sa/SA), SERVICE.NAMESPACE, or plaintext for a caller without mTLS")
	fl.StringVar(&f.to, "to", "", "called service: SERVICE.NAMESPACE")
	fl.StringVar(&f.toHost, "to-host", "", "a host outside the mesh (TLS SNI or HTTP Host, or an IP address) instead of --to: decided by the caller's EgressPolicies; needs --port")
	fl.IntVar(&f.port, "port", 0, "destination port the caller dials")
	fl.StringVar(&f.method, "method", "", "HTTP method (default GET)")
	fl.StringVar(&f.path, "path", "", "HTTP path (default /); the query is ignored, dot segments are resolved as the proxy does")
	fl.StringVar(&f.host, "host", "", "HTTP Host header, as the client sends it")
	fl.StringArrayVar(&f.headers, "header", nil, "HTTP request header NAME=VALUE; repeatable")
	fl.BoolVar(&f.tcp, "tcp", false, "an opaque TCP connection instead of an HTTP request")
	fl.StringArrayVar(&f.labels, "label", nil, "workload label KEY=VALUE of the --to service, instead of its proxies' labels; repeatable")
	fl.StringVar(&f.requestPrincipal, "request-principal", "", "simulate an end user's verified token: ISSUER/SUBJECT (docs/end-user-auth.md)")
	fl.StringArrayVar(&f.claims, "claim", nil, "a claim of the simulated token, NAME=VALUE; repeat a name for a list claim; needs --request-principal")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	addTrustDomainFlag(cmd, &f.trustDomain)
	return cmd
}

// parseCheck validates the flags of `policy check` into a query, before
// names are resolved against the live mesh.
func parseCheck(f *checkFlags, changed func(string) bool) (*analysis.Query, error) {
	const op = "policy check"
	if f.output != "text" && f.output != "json" {
		return nil, exitcode.UserError("%s: -o %q: use text or json", op, f.output)
	}
	if f.from == "" || f.to == "" {
		return nil, exitcode.UserError("%s: --from and --to are required, e.g. --from frontend.shop --to catalog.shop", op)
	}
	q := &analysis.Query{Header: http.Header{}}
	if err := parseFrom(f.from, q); err != nil {
		return nil, err
	}
	var ok bool
	if q.ToService, q.ToNamespace, ok = parseServiceRef(f.to); !ok {
		return nil, exitcode.UserError("%s: --to %q: want SERVICE.NAMESPACE, e.g. --to catalog.shop", op, f.to)
	}
	if changed("port") && (f.port < 1 || f.port > 65535) {
		return nil, exitcode.UserError("%s: --port %d: want a port number from 1 to 65535", op, f.port)
	}
	q.Request.Port = f.port
	if f.tcp {
		for _, name := range []string{"method", "path", "host", "header"} {
			if changed(name) {
				return nil, exitcode.UserError("%s: --%s is an HTTP attribute and --tcp checks an opaque TCP connection; drop one of them", op, name)
			}
		}
		return q, parseLabels(op, f.labels, q)
	}
	q.Request.HTTP = true
	q.Request.Method = "GET"
	if f.method != "" {
		if !names.IsHTTPToken(f.method) {
			return nil, exitcode.UserError("%s: --method %q: want an HTTP method such as GET or POST", op, f.method)
		}
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"} {
			if f.method != m && strings.EqualFold(f.method, m) {
				return nil, exitcode.UserError("%s: --method %q: methods are case-sensitive and the proxy refuses %s with 400; write %s", op, f.method, f.method, m)
			}
		}
		q.Request.Method = f.method
	}
	q.Request.Path = "/"
	if changed("path") {
		p, _, _ := strings.Cut(f.path, "?")
		p, _, _ = strings.Cut(p, "#")
		if !strings.HasPrefix(p, "/") {
			return nil, exitcode.UserError("%s: --path %q: want an absolute path such as /items/42", op, f.path)
		}
		q.Request.Path = p // canonicalized against the live mesh (analysis.WhatIf)
	}
	q.Request.Host = f.host
	for _, h := range f.headers {
		name, value, ok := strings.Cut(h, "=")
		if !ok || !names.IsHTTPToken(name) {
			return nil, exitcode.UserError("%s: --header %q: want NAME=VALUE, e.g. --header x-tenant=a", op, h)
		}
		if value == "" {
			return nil, exitcode.UserError("%s: --header %q: an empty value is the same as no header; drop the flag or give a value", op, h)
		}
		q.Header.Add(name, value)
	}
	if len(f.claims) > 0 && f.requestPrincipal == "" {
		return nil, exitcode.UserError("%s: --claim needs --request-principal ISSUER/SUBJECT: claims come only with a verified token", op)
	}
	if f.requestPrincipal != "" {
		if f.tcp {
			return nil, exitcode.UserError("%s: --request-principal: a TCP connection carries no end-user token", op)
		}
		if !strings.Contains(f.requestPrincipal, "/") {
			return nil, exitcode.UserError("%s: --request-principal %q: want ISSUER/SUBJECT, e.g. https://id.example.com/alice", op, f.requestPrincipal)
		}
		q.RequestPrincipal = f.requestPrincipal
	}
	for _, c := range f.claims {
		name, value, ok := strings.Cut(c, "=")
		if !ok || name == "" {
			return nil, exitcode.UserError("%s: --claim %q: want NAME=VALUE, e.g. --claim groups=admin", op, c)
		}
		if q.Claims == nil {
			q.Claims = map[string][]string{}
		}
		q.Claims[name] = append(q.Claims[name], value)
	}
	return q, parseLabels(op, f.labels, q)
}

// parseFrom sets the caller of q from --from: a workload SPIFFE ID,
// SERVICE.NAMESPACE or plaintext. Errors name the flag and the forms.
func parseFrom(from string, q *analysis.Query) error {
	const op = "policy check"
	const forms = "write spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT or SERVICE.NAMESPACE, or plaintext for a caller without mTLS"
	switch {
	case strings.EqualFold(from, fromPlaintext):
		q.Plaintext = true
		return nil
	case strings.HasPrefix(strings.ToLower(from), "spiffe:"):
		id, err := spiffeid.FromString(from)
		if err != nil {
			return exitcode.UserError("%s: --from %q: %v; %s", op, from, err, forms)
		}
		// The mesh CA issues only these; any other path names no caller.
		if _, _, ok := identity.WorkloadPath(id); !ok {
			return exitcode.UserError("%s: --from %q: not a workload identity (its path must be /ns/NAMESPACE/sa/ACCOUNT); %s", op, from, forms)
		}
		q.FromID = from
		return nil
	}
	var ok bool
	if q.FromService, q.FromNamespace, ok = parseServiceRef(from); ok {
		return nil
	}
	if svc, ns, dot := strings.Cut(from, "."); dot && names.IsDNSLabel(strings.ToLower(svc)) && names.IsDNSLabel(strings.ToLower(ns)) {
		return exitcode.UserError("%s: --from %q: names are lower case; did you mean %q?", op, from, strings.ToLower(from))
	}
	return exitcode.UserError("%s: --from %q: want a SPIFFE ID (spiffe://trellis.local/ns/shop/sa/frontend) or SERVICE.NAMESPACE (frontend.shop), or plaintext for a caller without mTLS", op, from)
}

// fromPlaintext is the --from value of a caller without a certificate.
const fromPlaintext = "plaintext"

func parseLabels(op string, labels []string, q *analysis.Query) error {
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return exitcode.UserError("%s: --label %q: want KEY=VALUE, e.g. --label version=v2", op, l)
		}
		if q.Labels == nil {
			q.Labels = map[string]string{}
		}
		q.Labels[k] = v
	}
	return nil
}

// parseServiceRef splits "service.namespace"; both are DNS labels.
func parseServiceRef(s string) (svc, ns string, ok bool) {
	svc, ns, ok = strings.Cut(s, ".")
	return svc, ns, ok && names.IsDNSLabel(svc) && names.IsDNSLabel(ns)
}

// checkNotes words res's caveats for the user of `policy check`, with the
// flags that change them.
func checkNotes(res *analysis.Result) []string {
	var notes []string
	c := res.Caveats
	if c.AssumedPrincipal {
		notes = append(notes, fmt.Sprintf("no proxy of %s is registered; assuming its identity is %s", res.FromService, res.From))
	}
	if len(c.CallerIdentities) > 0 {
		notes = append(notes, fmt.Sprintf("proxies of %s run as %s; checking %s (pass --from with a SPIFFE ID to pick another)",
			res.FromService, strings.Join(c.CallerIdentities, ", "), res.From))
	}
	if c.UnknownCallee {
		notes = append(notes, fmt.Sprintf("no proxy of %s is registered; deciding for a workload without labels (pass --label to give some)", res.To))
	}
	if c.PlaintextPermitted {
		notes = append(notes, "the mesh's mtls.mode is PERMISSIVE, so a plaintext caller reaches the policies: with no identity, namespace or service it matches only rules without such conditions (see docs/policy.md, plaintext callers)")
	}
	if len(c.LabelDecisions) > 0 {
		var each []string
		for _, ld := range c.LabelDecisions {
			each = append(each, fmt.Sprintf("%s: %s", ld.Labels, describeDecision(ld.Decision)))
		}
		notes = append(notes, fmt.Sprintf("proxies of %s carry different labels and get different decisions (%s); shown: %s; pass --label to pick one",
			res.To, strings.Join(each, "; "), res.Labels))
	}
	if len(c.PortPolicies) > 0 {
		notes = append(notes, fmt.Sprintf("no --port given, and %s name ports: their port conditions never match a request without a port", strings.Join(c.PortPolicies, ", ")))
	}
	return notes
}

func describeDecision(d policy.Decision) string {
	verdict := "DENY"
	if d.Allow {
		verdict = "ALLOW"
	}
	if d.Policy != "" {
		return fmt.Sprintf("%s by %s rule %d", verdict, d.Policy, d.Rule)
	}
	return fmt.Sprintf("%s (%s)", verdict, d.Reason)
}

func printCheck(w io.Writer, res *analysis.Result) error {
	var b strings.Builder
	line := func(key, format string, args ...any) {
		fmt.Fprintf(&b, "%-11s%s\n", key, fmt.Sprintf(format, args...))
	}
	line("decision:", "%s", res.Decision)
	switch res.Cause {
	case analysis.CauseMTLSRequired:
		line("policy:", "none (refused before any policy)")
	case policy.CauseMeshDefault.String():
		line("policy:", "mesh default")
	case policy.CauseDeny.String(), policy.CauseAllow.String():
		if res.Intent != "" {
			line("policy:", "%s rule %d (from Intent %s)", res.Policy, res.Rule, res.Intent)
		} else {
			line("policy:", "%s rule %d", res.Policy, res.Rule)
		}
	default:
		line("policy:", "none")
	}
	line("reason:", "%s", res.Reason)
	from := res.From
	if res.Plaintext {
		from = "plaintext (no certificate: no identity, namespace or service)"
	}
	if res.FromService != "" {
		from += " (" + res.FromService + ")"
	}
	line("from:", "%s", from)
	to := res.To
	if len(res.Labels) > 0 {
		to += " " + res.Labels.String()
	}
	line("to:", "%s", to)
	r := res.Request
	desc := r.Protocol
	if r.Protocol == "HTTP" {
		desc += " " + r.Method + " " + r.Path
	}
	if r.Port != 0 {
		desc += fmt.Sprintf(" port %d", r.Port)
	}
	if r.Host != "" {
		desc += " host " + r.Host
	}
	for _, k := range slices.Sorted(maps.Keys(r.Headers)) {
		desc += " header " + k + "=" + r.Headers[k]
	}
	if r.RequestPrincipal != "" {
		desc += " user " + r.RequestPrincipal
		for _, k := range slices.Sorted(maps.Keys(r.Claims)) {
			desc += " claim " + k + "=" + strings.Join(r.Claims[k], ",")
		}
	}
	line("request:", "%s", desc)
	if len(res.Selecting) == 0 {
		line("selecting:", "no policy")
	} else {
		line("selecting:", "%s", strings.Join(res.Selecting, ", "))
	}
	for i, c := range res.Custom {
		key := ""
		if i == 0 {
			key = "custom:"
		}
		if c.Defined {
			line(key, "%s rule %d: provider %s would be asked; its answer cannot be simulated offline (it denies, or allows)", c.Policy, c.Rule, c.Provider)
		} else {
			line(key, "%s rule %d: provider %s is not in the Mesh's spec.extensionProviders: the proxy denies (403)", c.Policy, c.Rule, c.Provider)
		}
	}
	for i, a := range res.Audit {
		key := ""
		if i == 0 {
			key = "audit:"
		}
		rule := ""
		if a.Rule >= 0 {
			rule = fmt.Sprintf(", rule %d", a.Rule)
		}
		if a.Intent != "" {
			rule += ", from Intent " + a.Intent
		}
		line(key, "%s would %s (%s%s)", a.Policy, a.Decision, a.Reason, rule)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
