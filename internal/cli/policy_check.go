package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/names"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
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

Exit status: 0 whatever the decision; 1 for bad flags; 2 when the control
plane cannot be reached. In -o json, "decision", "policy" ("" unless one
policy decided), "rule" (-1 unless a rule decided) and "reason" are stable.`

type checkFlags struct {
	from, to, method, path, host, trustDomain, output string
	port                                              int
	headers, labels                                   []string
	tcp                                               bool
}

// checkQuery is a validated `policy check`, before names are resolved
// against the live mesh.
type checkQuery struct {
	fromID          string // set when --from is a SPIFFE ID
	fromSvc, fromNS string // set when --from is SERVICE.NAMESPACE
	plaintext       bool   // --from plaintext
	toSvc, toNS     string
	req             policy.Request // without Principal and SourceService
	header          http.Header
	labels          map[string]string // from --label; nil means from the proxies
}

func newPolicyCheckCmd(g *globals) *cobra.Command {
	var f checkFlags
	cmd := &cobra.Command{
		Use:   "check --from SPIFFE_ID|SERVICE.NS|plaintext --to SERVICE.NS [--port N] [--method M] [--path P] [--header k=v]... [--tcp] [-o text|json]",
		Short: "Show what the live policies decide for one request (ALLOW or DENY, by which policy and rule)",
		Long:  policyCheckHelp,
		Example: `  trellis policy check --from frontend.shop --to catalog.shop --method GET --path /items/42
  trellis policy check --from spiffe://trellis.local/ns/shop/sa/frontend --to catalog.shop --header x-tenant=a -o json
  trellis policy check --from billing.pay --to db.shop --tcp --port 5432
  trellis policy check --from plaintext --to catalog.shop --path /health`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			q, err := parseCheck(&f, cmd.Flags().Changed)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			live, err := fetchLive(cmd.Context(), c, false)
			if err != nil {
				return fmt.Errorf("policy check: %w", err)
			}
			td, err := trustDomain("policy check", live.proxies, f.trustDomain, cmd.Flags().Changed("trust-domain"))
			if err != nil {
				return err
			}
			res, notes, err := decideCheck(q, live, td)
			if err != nil {
				return err
			}
			for _, n := range notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			if f.output == "json" {
				data, err := json.MarshalIndent(res, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", data)
				return err
			}
			return printCheck(cmd.OutOrStdout(), res)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", "", "caller: SPIFFE ID (spiffe://TD/ns/NS/sa/SA), SERVICE.NAMESPACE, or plaintext for a caller without mTLS")
	fl.StringVar(&f.to, "to", "", "called service: SERVICE.NAMESPACE")
	fl.IntVar(&f.port, "port", 0, "destination port the caller dials")
	fl.StringVar(&f.method, "method", "", "HTTP method (default GET)")
	fl.StringVar(&f.path, "path", "", "HTTP path (default /); the query is ignored, dot segments are resolved as the proxy does")
	fl.StringVar(&f.host, "host", "", "HTTP Host header, as the client sends it")
	fl.StringArrayVar(&f.headers, "header", nil, "HTTP request header NAME=VALUE; repeatable")
	fl.BoolVar(&f.tcp, "tcp", false, "an opaque TCP connection instead of an HTTP request")
	fl.StringArrayVar(&f.labels, "label", nil, "workload label KEY=VALUE of the --to service, instead of its proxies' labels; repeatable")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	addTrustDomainFlag(cmd, &f.trustDomain)
	return cmd
}

func parseCheck(f *checkFlags, changed func(string) bool) (*checkQuery, error) {
	const op = "policy check"
	if f.output != "text" && f.output != "json" {
		return nil, userError("%s: -o %q: use text or json", op, f.output)
	}
	if f.from == "" || f.to == "" {
		return nil, userError("%s: --from and --to are required, e.g. --from frontend.shop --to catalog.shop", op)
	}
	q := &checkQuery{header: http.Header{}}
	if err := parseFrom(f.from, q); err != nil {
		return nil, err
	}
	var ok bool
	if q.toSvc, q.toNS, ok = parseServiceRef(f.to); !ok {
		return nil, userError("%s: --to %q: want SERVICE.NAMESPACE, e.g. --to catalog.shop", op, f.to)
	}
	if changed("port") && (f.port < 1 || f.port > 65535) {
		return nil, userError("%s: --port %d: want a port number from 1 to 65535", op, f.port)
	}
	q.req.Port = f.port
	if f.tcp {
		for _, name := range []string{"method", "path", "host", "header"} {
			if changed(name) {
				return nil, userError("%s: --%s is an HTTP attribute and --tcp checks an opaque TCP connection; drop one of them", op, name)
			}
		}
		return q, parseLabels(op, f.labels, q)
	}
	q.req.HTTP = true
	q.req.Method = "GET"
	if f.method != "" {
		if !names.IsHTTPToken(f.method) {
			return nil, userError("%s: --method %q: want an HTTP method such as GET or POST", op, f.method)
		}
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"} {
			if f.method != m && strings.EqualFold(f.method, m) {
				return nil, userError("%s: --method %q: methods are case-sensitive and the proxy refuses %s with 400; write %s", op, f.method, f.method, m)
			}
		}
		q.req.Method = f.method
	}
	q.req.Path = "/"
	if changed("path") {
		p, _, _ := strings.Cut(f.path, "?")
		p, _, _ = strings.Cut(p, "#")
		if !strings.HasPrefix(p, "/") {
			return nil, userError("%s: --path %q: want an absolute path such as /items/42", op, f.path)
		}
		q.req.Path = p // canonicalized against the live mesh (decideCheck)
	}
	q.req.Host = f.host
	for _, h := range f.headers {
		name, value, ok := strings.Cut(h, "=")
		if !ok || !names.IsHTTPToken(name) {
			return nil, userError("%s: --header %q: want NAME=VALUE, e.g. --header x-tenant=a", op, h)
		}
		if value == "" {
			return nil, userError("%s: --header %q: an empty value is the same as no header; drop the flag or give a value", op, h)
		}
		q.header.Add(name, value)
	}
	q.req.Header = q.header.Get
	return q, parseLabels(op, f.labels, q)
}

// parseFrom sets the caller of q from --from: a workload SPIFFE ID,
// SERVICE.NAMESPACE or plaintext. Errors name the flag and the forms.
func parseFrom(from string, q *checkQuery) error {
	const op = "policy check"
	const forms = "write spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT or SERVICE.NAMESPACE, or plaintext for a caller without mTLS"
	switch {
	case strings.EqualFold(from, fromPlaintext):
		q.plaintext = true
		return nil
	case strings.HasPrefix(strings.ToLower(from), "spiffe:"):
		id, err := spiffeid.FromString(from)
		if err != nil {
			return userError("%s: --from %q: %v; %s", op, from, err, forms)
		}
		// The mesh CA issues only these; any other path names no caller.
		if _, _, ok := identity.WorkloadPath(id); !ok {
			return userError("%s: --from %q: not a workload identity (its path must be /ns/NAMESPACE/sa/ACCOUNT); %s", op, from, forms)
		}
		q.fromID = from
		return nil
	}
	var ok bool
	if q.fromSvc, q.fromNS, ok = parseServiceRef(from); ok {
		return nil
	}
	if svc, ns, dot := strings.Cut(from, "."); dot && names.IsDNSLabel(strings.ToLower(svc)) && names.IsDNSLabel(strings.ToLower(ns)) {
		return userError("%s: --from %q: names are lower case; did you mean %q?", op, from, strings.ToLower(from))
	}
	return userError("%s: --from %q: want a SPIFFE ID (spiffe://trellis.local/ns/shop/sa/frontend) or SERVICE.NAMESPACE (frontend.shop), or plaintext for a caller without mTLS", op, from)
}

// fromPlaintext is the --from value of a caller without a certificate.
const fromPlaintext = "plaintext"

func parseLabels(op string, labels []string, q *checkQuery) error {
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return userError("%s: --label %q: want KEY=VALUE, e.g. --label version=v2", op, l)
		}
		if q.labels == nil {
			q.labels = map[string]string{}
		}
		q.labels[k] = v
	}
	return nil
}

// parseServiceRef splits "service.namespace"; both are DNS labels.
func parseServiceRef(s string) (svc, ns string, ok bool) {
	svc, ns, ok = strings.Cut(s, ".")
	return svc, ns, ok && names.IsDNSLabel(svc) && names.IsDNSLabel(ns)
}

// checkResult is the JSON form of `policy check`. Decision, Policy, Rule
// and Reason are an interface scripts rely on.
type checkResult struct {
	Decision    string       `json:"decision"` // ALLOW or DENY
	Policy      string       `json:"policy"`   // namespace/name, or ""
	Rule        int          `json:"rule"`     // index into the policy's spec.rules, or -1
	Reason      string       `json:"reason"`
	Cause       string       `json:"cause"`
	Audit       []checkAudit `json:"audit"`
	From        string       `json:"from"`                  // the caller's principal; "" for a plaintext caller
	FromService string       `json:"fromService,omitempty"` // service.namespace, when known
	Plaintext   bool         `json:"plaintext,omitempty"`   // --from plaintext: a caller without mTLS
	To          string       `json:"to"`                    // service.namespace
	Labels      labelSet     `json:"labels"`                // the --to workload's labels decided with
	Selecting   []string     `json:"selecting"`             // policies selecting the --to workload
	Request     checkRequest `json:"request"`
	decision    policy.Decision
	// mtlsRequired: refused as plaintext under STRICT; decision is unset.
	mtlsRequired bool
}

// causeMTLSRequired is the cause of a plaintext caller refused under
// STRICT mTLS, next to the engine's causes (policy.Cause.String).
const causeMTLSRequired = "mtls-required"

type checkAudit struct {
	Policy     string `json:"policy"`
	Action     string `json:"action"` // ALLOW or DENY
	Rule       int    `json:"rule"`
	Matched    bool   `json:"matched"`
	WouldAllow bool   `json:"wouldAllow"`
	Decision   string `json:"decision"` // would-be decision, ALLOW or DENY
	Reason     string `json:"reason"`
}

type checkRequest struct {
	Protocol string            `json:"protocol"` // HTTP or TCP
	Port     int               `json:"port,omitempty"`
	Method   string            `json:"method,omitempty"`
	Path     string            `json:"path,omitempty"`
	Host     string            `json:"host,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"`
}

type labelSet map[string]string

// MarshalJSON writes {} rather than null for no labels.
func (l labelSet) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]string(l))
}

func (l labelSet) String() string {
	if len(l) == 0 {
		return "{}"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func verdict(allow bool) string {
	if allow {
		return "ALLOW"
	}
	return "DENY"
}

// decideCheck resolves q's names against the live mesh, compiles the live
// policies and decides. notes explain assumptions the user may want to
// change.
func decideCheck(q *checkQuery, live *liveState, td string) (*checkResult, []string, error) {
	var notes []string
	req := q.req
	to := q.toSvc + "." + q.toNS
	res := &checkResult{To: to, Audit: []checkAudit{}}
	if req.HTTP {
		// The proxy's own canonicalization, in the live mesh's mode.
		mode, _ := policy.ParsePathMode(live.mesh.HTTP.PathNormalization)
		p, err := policy.CanonicalPath(req.Path, mode)
		if err != nil {
			return nil, nil, userError("policy check: --path %q: the proxy answers 400 before any policy: %v", req.Path, err)
		}
		req.Path = p
	}

	// The caller.
	idServices := map[string]map[string]bool{} // SPIFFE ID -> service.namespace
	var fromIDs []string
	for _, p := range live.proxies {
		if idServices[p.SPIFFEID] == nil {
			idServices[p.SPIFFEID] = map[string]bool{}
		}
		idServices[p.SPIFFEID][p.Service+"."+p.Namespace] = true
		if p.Service == q.fromSvc && p.Namespace == q.fromNS && !slices.Contains(fromIDs, p.SPIFFEID) {
			fromIDs = append(fromIDs, p.SPIFFEID)
		}
	}
	slices.Sort(fromIDs)
	switch {
	case q.plaintext:
		// No certificate: no principal, namespace or service.
		res.Plaintext = true
	case q.fromID != "":
		req.Principal = q.fromID
		// As the proxy does: a caller's service is known when its
		// identity serves exactly one service.
		if svcs := idServices[q.fromID]; len(svcs) == 1 {
			res.FromService = slices.Collect(maps.Keys(svcs))[0]
			req.SourceService, _, _ = strings.Cut(res.FromService, ".")
		}
	case len(fromIDs) == 0:
		req.Principal = fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", td, q.fromNS, q.fromSvc)
		notes = append(notes, fmt.Sprintf("no proxy of %s.%s is registered; assuming its identity is %s", q.fromSvc, q.fromNS, req.Principal))
	default:
		req.Principal = fromIDs[0]
		if len(fromIDs) > 1 {
			notes = append(notes, fmt.Sprintf("proxies of %s.%s run as %s; checking %s (pass --from with a SPIFFE ID to pick another)",
				q.fromSvc, q.fromNS, strings.Join(fromIDs, ", "), req.Principal))
		}
	}
	if q.fromSvc != "" {
		req.SourceService = q.fromSvc
		res.FromService = q.fromSvc + "." + q.fromNS
	}
	res.From = req.Principal

	// The called workload: one label set per distinct labeling of its
	// proxies.
	var labelSets []labelSet
	if q.labels != nil {
		labelSets = []labelSet{q.labels}
	} else {
		seen := map[string]bool{}
		for _, p := range live.proxies {
			if p.Service != q.toSvc || p.Namespace != q.toNS {
				continue
			}
			if k := labelSet(p.Labels).String(); !seen[k] {
				seen[k] = true
				labelSets = append(labelSets, p.Labels)
			}
		}
		slices.SortFunc(labelSets, func(a, b labelSet) int { return strings.Compare(a.String(), b.String()) })
		if len(labelSets) == 0 {
			labelSets = []labelSet{nil}
			notes = append(notes, fmt.Sprintf("no proxy of %s is registered; deciding for a workload without labels (pass --label to give some)", to))
		}
	}

	strict := !strings.EqualFold(live.mesh.MTLS.Mode, resource.MTLSPermissive)
	if q.plaintext && !strict {
		notes = append(notes, "the mesh's mtls.mode is PERMISSIVE, so a plaintext caller reaches the policies: with no identity, namespace or service it matches only rules without such conditions (see docs/policy.md, plaintext callers)")
	}

	e, err := policy.Compile(live.policies, policy.Options{
		DefaultAllow: live.mesh.Authorization.Default == resource.AuthorizationAllow,
		TrustDomain:  td,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("policy check: the live policies do not compile: %w", err)
	}
	w := policy.Workload{Namespace: q.toNS, Service: q.toSvc, Labels: labelSets[0]}
	d := e.DecideAudit(&w, &req, func(a policy.AuditResult) {
		action := "ALLOW"
		if a.Deny {
			action = "DENY"
		}
		res.Audit = append(res.Audit, checkAudit{Policy: a.Policy, Action: action, Rule: a.Rule, Matched: a.Matched,
			WouldAllow: a.WouldAllow, Decision: verdict(a.WouldAllow), Reason: a.Reason})
	})
	res.decision = d
	res.Decision, res.Policy, res.Rule, res.Reason, res.Cause = verdict(d.Allow), d.Policy, d.Rule, d.Reason, d.Cause.String()
	if q.plaintext && strict {
		// The proxy closes a plaintext connection under STRICT before any
		// policy (trellis_inbound_rejected_total{reason="plaintext"}).
		res.decision = policy.Decision{Rule: -1}
		res.mtlsRequired = true
		res.Decision, res.Policy, res.Rule, res.Cause = "DENY", "", -1, causeMTLSRequired
		res.Reason = "mTLS required: the mesh's mtls.mode is STRICT, so the proxy refuses a plaintext connection before any policy"
		res.Audit = []checkAudit{}
	}
	res.Labels = labelSets[0]
	res.Selecting = e.Selecting(&w)
	if res.Selecting == nil {
		res.Selecting = []string{}
	}
	res.Request = checkRequest{Protocol: "TCP", Port: req.Port}
	if req.HTTP {
		res.Request = checkRequest{Protocol: "HTTP", Port: req.Port, Method: req.Method, Path: req.Path, Host: req.Host}
		for k := range q.header {
			if res.Request.Headers == nil {
				res.Request.Headers = map[string]string{}
			}
			res.Request.Headers[strings.ToLower(k)] = q.header.Get(k)
		}
	}

	if res.mtlsRequired {
		return res, notes, nil
	}
	if len(labelSets) > 1 {
		differ := false
		var each []string
		for _, ls := range labelSets {
			dd := e.Decide(&policy.Workload{Namespace: q.toNS, Service: q.toSvc, Labels: ls}, &req)
			differ = differ || dd != d
			each = append(each, fmt.Sprintf("%s: %s", ls, describeDecision(dd)))
		}
		if differ {
			notes = append(notes, fmt.Sprintf("proxies of %s carry different labels and get different decisions (%s); shown: %s; pass --label to pick one",
				to, strings.Join(each, "; "), labelSets[0]))
		}
	}
	if req.Port == 0 {
		if named := portPolicies(live.policies, res.Selecting); len(named) > 0 {
			notes = append(notes, fmt.Sprintf("no --port given, and %s name ports: their port conditions never match a request without a port", strings.Join(named, ", ")))
		}
	}
	return res, notes, nil
}

func describeDecision(d policy.Decision) string {
	if d.Policy != "" {
		return fmt.Sprintf("%s by %s rule %d", verdict(d.Allow), d.Policy, d.Rule)
	}
	return fmt.Sprintf("%s (%s)", verdict(d.Allow), d.Reason)
}

// portPolicies returns those of refs whose rules have port conditions.
func portPolicies(policies []resource.Object, refs []string) []string {
	var out []string
	for i := range policies {
		o := &policies[i]
		if !slices.Contains(refs, o.Metadata.Namespace+"/"+o.Metadata.Name) {
			continue
		}
		spec, err := resource.AuthorizationPolicySpecOf(o)
		if err != nil {
			continue
		}
		if slices.ContainsFunc(spec.Rules, func(r resource.Rule) bool {
			return slices.ContainsFunc(r.To, func(op resource.Operation) bool { return len(op.Ports) > 0 || len(op.NotPorts) > 0 })
		}) {
			out = append(out, o.Metadata.Namespace+"/"+o.Metadata.Name)
		}
	}
	return out
}

func printCheck(w io.Writer, res *checkResult) error {
	var b strings.Builder
	line := func(key, format string, args ...any) {
		fmt.Fprintf(&b, "%-11s%s\n", key, fmt.Sprintf(format, args...))
	}
	line("decision:", "%s", res.Decision)
	switch {
	case res.mtlsRequired:
		line("policy:", "none (refused before any policy)")
	case res.decision.Cause == policy.CauseMeshDefault:
		line("policy:", "mesh default")
	case res.decision.Cause == policy.CauseDeny || res.decision.Cause == policy.CauseAllow:
		line("policy:", "%s rule %d", res.Policy, res.Rule)
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
	line("request:", "%s", desc)
	if len(res.Selecting) == 0 {
		line("selecting:", "no policy")
	} else {
		line("selecting:", "%s", strings.Join(res.Selecting, ", "))
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
		line(key, "%s would %s (%s%s)", a.Policy, a.Decision, a.Reason, rule)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
