package policycmd

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/egress"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/policy/analysis"
	"github.com/trellismesh/trellis/internal/resource"
)

// EgressResult is the answer of `policy check --to-host`; its JSON form
// (-o json) is an interface: decision, policy and reason as for mesh
// destinations.
type EgressResult struct {
	Decision string `json:"decision"` // ALLOW or DENY
	// Policy is the allowing EgressPolicy (namespace/name), or "".
	Policy string `json:"policy"`
	// Entry is the allowing host entry as written in it.
	Entry       string `json:"entry,omitempty"`
	Reason      string `json:"reason"`
	From        string `json:"from"`                  // the caller's SPIFFE ID
	FromService string `json:"fromService,omitempty"` // service.namespace, when known
	Host        string `json:"host"`                  // as matched: lower case, no port
	Port        int    `json:"port"`
	// Selecting are the EgressPolicies that select the caller; none means
	// the Mesh's outbound mode decides (OutboundMode).
	Selecting    []string `json:"selecting"`
	OutboundMode string   `json:"outboundMode"`
	// Notes go to stderr.
	Notes []string `json:"-"`
}

// egressQuery is a parsed `policy check --to-host`.
type egressQuery struct {
	q    *analysis.Query // the caller (FromID or FromService)
	host string          // normalized
	port int
}

// parseEgressCheck validates the flags of `policy check --to-host`.
func parseEgressCheck(f *checkFlags, changed func(string) bool) (*egressQuery, error) {
	const op = "policy check"
	if f.output != "text" && f.output != "json" {
		return nil, exitcode.UserError("%s: -o %q: use text or json", op, f.output)
	}
	if f.to != "" {
		return nil, exitcode.UserError("%s: --to names a mesh service and --to-host a host outside the mesh; give one of them", op)
	}
	for _, name := range []string{"tcp", "method", "path", "host", "header", "label", "request-principal", "claim"} {
		if changed(name) {
			return nil, exitcode.UserError("%s: --%s does not apply to --to-host: a connection outside the mesh is decided by its host and port alone", op, name)
		}
	}
	if f.from == "" {
		return nil, exitcode.UserError("%s: --from is required, e.g. --from payments.shop --to-host api.psp.example --port 443", op)
	}
	if strings.EqualFold(f.from, fromPlaintext) {
		return nil, exitcode.UserError("%s: --from plaintext: egress is decided by a caller's own proxy, which has an identity; name the workload", op)
	}
	if !changed("port") || f.port < 1 || f.port > 65535 {
		return nil, exitcode.UserError("%s: --to-host needs --port, the destination port from 1 to 65535 (e.g. --port 443)", op)
	}
	host := egress.NormalizeHost(f.toHost)
	if host == "" {
		return nil, exitcode.UserError("%s: --to-host %q: want a host name or IP address, e.g. api.psp.example", op, f.toHost)
	}
	q := &analysis.Query{}
	if err := parseFrom(f.from, q); err != nil {
		return nil, err
	}
	return &egressQuery{q: q, host: host, port: f.port}, nil
}

// EgressCheck decides a connection from the caller of eq to a host
// outside the mesh, as the caller's transparent proxy would: by the
// EgressPolicies (objs) that select it, or by the Mesh's outbound mode
// when none does. The caller's labels are its registered proxies'.
func egressCheck(live *analysis.Mesh, objs []resource.Object, eq *egressQuery, trustDomain string) (*EgressResult, error) {
	q := eq.q
	res := &EgressResult{Host: eq.host, Port: eq.port, Selecting: []string{}, OutboundMode: live.Spec.Outbound.Mode}
	w := &policy.Workload{Namespace: q.FromNamespace, Service: q.FromService}
	var ids []string
	for _, p := range live.Proxies {
		switch {
		case q.FromID != "" && p.SPIFFEID == q.FromID,
			q.FromID == "" && p.Service == q.FromService && p.Namespace == q.FromNamespace:
			if !slices.Contains(ids, p.SPIFFEID) {
				ids = append(ids, p.SPIFFEID)
			}
			if w.Labels == nil {
				w.Service, w.Namespace, w.Labels = p.Service, p.Namespace, p.Labels
			}
		}
	}
	slices.Sort(ids)
	switch {
	case q.FromID != "":
		res.From = q.FromID
		id, err := spiffeid.FromString(q.FromID)
		if err != nil {
			return nil, err
		}
		ns, _, _ := identity.WorkloadPath(id)
		w.Namespace = ns
	case len(ids) > 0:
		res.From = ids[0]
	default:
		res.From = fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, q.FromNamespace, q.FromService)
	}
	if w.Service != "" {
		res.FromService = w.Service + "." + w.Namespace
	} else {
		res.Notes = append(res.Notes, "no registered proxy has the identity "+q.FromID+", so its service and labels are unknown: selectors naming a service or labels do not select it (--from SERVICE.NAMESPACE names the service)")
	}
	if q.FromID == "" && len(ids) == 0 {
		res.Notes = append(res.Notes, "no proxy of "+q.FromService+"."+q.FromNamespace+" is registered: assuming the identity "+res.From+" and no labels")
	}
	var selecting []egress.Policy
	for i := range objs {
		p, err := egress.FromObject(&objs[i])
		if err != nil {
			return nil, fmt.Errorf("EgressPolicy %s: %w", objs[i].Ref(), err)
		}
		if egress.Selects(&p, w, res.From) {
			selecting = append(selecting, p)
			res.Selecting = append(res.Selecting, p.Ref())
		}
	}
	slices.SortFunc(selecting, func(a, b egress.Policy) int { return strings.Compare(a.Ref(), b.Ref()) })
	slices.Sort(res.Selecting)
	addr, _ := netip.ParseAddr(eq.host)
	if len(selecting) == 0 {
		res.Decision, res.Reason = "ALLOW", "no EgressPolicy selects the caller; the Mesh's outbound mode is passthrough"
		if live.Spec.Outbound.Mode == resource.OutboundBlock {
			res.Decision, res.Reason = "DENY", "no EgressPolicy selects the caller and the Mesh's outbound mode is block"
		}
		return res, nil
	}
	host := eq.host
	if addr.IsValid() {
		host = "" // an address names no host: IP entries match it
	}
	d := egress.NewRules(selecting).Decide(host, netip.AddrPortFrom(addr, uint16(eq.port)))
	if !d.Allow {
		res.Decision = "DENY"
		res.Reason = fmt.Sprintf("no EgressPolicy selecting the caller allows host %s port %d", eq.host, eq.port)
		return res, nil
	}
	res.Decision, res.Policy, res.Entry = "ALLOW", d.Policy, d.Entry
	res.Reason = fmt.Sprintf("host entry %q of %s", d.Entry, d.Policy)
	return res, nil
}

func printEgressCheck(w io.Writer, res *EgressResult) error {
	var b strings.Builder
	line := func(key, format string, args ...any) {
		fmt.Fprintf(&b, "%-11s%s\n", key, fmt.Sprintf(format, args...))
	}
	line("decision:", "%s", res.Decision)
	switch {
	case res.Policy != "":
		line("policy:", "%s (host %s)", res.Policy, res.Entry)
	case len(res.Selecting) == 0:
		line("policy:", "mesh outbound mode %s", res.OutboundMode)
	default:
		line("policy:", "none")
	}
	line("reason:", "%s", res.Reason)
	from := res.From
	if res.FromService != "" {
		from += " (" + res.FromService + ")"
	}
	line("from:", "%s", from)
	line("to:", "%s port %d (outside the mesh)", res.Host, res.Port)
	if len(res.Selecting) == 0 {
		line("selecting:", "no EgressPolicy")
	} else {
		line("selecting:", "%s", strings.Join(res.Selecting, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// runEgressCheck is `policy check --to-host`.
func runEgressCheck(cmd *cobra.Command, env Env, f *checkFlags) error {
	eq, err := parseEgressCheck(f, cmd.Flags().Changed)
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
	kind, _ := resource.LookupKind(resource.KindEgressPolicy)
	objs, err := c.List(cmd.Context(), kind, "")
	if err != nil {
		return fmt.Errorf("policy check: %w", err)
	}
	td, err := TrustDomain("policy check", spiffeIDs(live), f.trustDomain, cmd.Flags().Changed("trust-domain"))
	if err != nil {
		return err
	}
	res, err := egressCheck(live, objs, eq, td)
	if err != nil {
		return fmt.Errorf("policy check: %w", err)
	}
	for _, n := range res.Notes {
		fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
	}
	if f.output == "json" {
		return writeJSON(cmd.OutOrStdout(), res)
	}
	return printEgressCheck(cmd.OutOrStdout(), res)
}
