package cli

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/names"
	"github.com/trellismesh/trellis/internal/resource"
)

func newRouteCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "route",
		Short: "Show where the live Routes send a request",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		}),
	}
	cmd.AddCommand(newRouteCheckCmd(g))
	return cmd
}

const routeCheckHelp = `Show what the caller's proxy does with one request to --to, as the live
Routes and TrafficPolicies say (read from the control plane): the Route and
rule that take it (rules in order; none: the service itself), the backends
with their weights and shares, the mirror and the faults, and for each
backend the TrafficPolicy in effect (its own, else its namespace's default):
timeout, retries and their budget, outlier detection and load balancer.

A Route applies to every caller of its service; --from only names the
caller in the answer. Exit status 0 whatever the answer; 1 for bad flags;
2 when the control plane cannot be reached.`

type routeCheckFlags struct {
	from, to, method, path, output string
	headers                        []string
}

// RouteCheck is trellis route check's answer (-o json).
type RouteCheck struct {
	From   string `json:"from,omitempty"`
	To     string `json:"to"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Route  string `json:"route"` // "namespace/name" of the rule's Route, "" when none
	Rule   int    `json:"rule"`  // index in spec.rules, -1 when none took the request
	// Merged lists the Routes merged for the service (Routes made of
	// Gateway API routes), when more than one; Shadowed the Routes for it
	// that do not apply.
	Merged   []string `json:"merged,omitempty"`
	Shadowed []string `json:"shadowed,omitempty"`
	// Unmatched is the answer when no rule took the request and the
	// Route says so (spec.unmatched; its grpcStatus is the one gRPC
	// calls get); Backend is then empty.
	Unmatched *RouteCheckAbort    `json:"unmatched,omitempty"`
	Backend   []RouteCheckBackend `json:"backends"`
	Mirror    *RouteCheckMirror   `json:"mirror,omitempty"`
	Delay     *RouteCheckDelay    `json:"delay,omitempty"`
	Abort     *RouteCheckAbort    `json:"abort,omitempty"`
	// RequestHeaders and ResponseHeaders are the rule's rewrites.
	RequestHeaders  *resource.HeaderRewrite `json:"requestHeaders,omitempty"`
	ResponseHeaders *resource.HeaderRewrite `json:"responseHeaders,omitempty"`
}

// RouteCheckBackend is one backend, its share and its TrafficPolicy.
type RouteCheckBackend struct {
	Service string  `json:"service"`
	Weight  int     `json:"weight"`
	Percent float64 `json:"percent"`
	// TrafficPolicy is "namespace/name", "" for the defaults.
	TrafficPolicy string                      `json:"trafficPolicy"`
	Traffic       *resource.TrafficPolicySpec `json:"traffic,omitempty"`
}

// RouteCheckMirror, RouteCheckDelay and RouteCheckAbort are a rule's
// mirror and faults.
type (
	RouteCheckMirror struct {
		Service string  `json:"service"`
		Percent float64 `json:"percent"`
	}
	RouteCheckDelay struct {
		Fixed   string  `json:"fixed"`
		Percent float64 `json:"percent"`
	}
	RouteCheckAbort struct {
		Status     int     `json:"status"`
		GRPCStatus int     `json:"grpcStatus"` // -1: mapped from status
		Percent    float64 `json:"percent"`
	}
)

func newRouteCheckCmd(g *globals) *cobra.Command {
	var f routeCheckFlags
	cmd := &cobra.Command{
		Use:   "check --to SERVICE.NS [--from SERVICE.NS] [--method M] [--path P] [-H k=v]... [-o text|json]",
		Short: "Show the Route, rule, backends, mirror, faults and TrafficPolicies for one request",
		Long:  routeCheckHelp,
		Example: `  trellis route check --from frontend.shop --to catalog.shop --path /items/42 -H x-canary=1
  trellis route check --to orders.shop --method POST --path /shop.Orders/Create -H content-type=application/grpc -o json`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			svc, ns, ok := strings.Cut(f.to, ".")
			if !ok || !names.IsDNSLabel(svc) || !names.IsDNSLabel(ns) {
				return userError("route check: --to %q: want SERVICE.NAMESPACE, e.g. catalog.shop", f.to)
			}
			if f.from != "" {
				if fs, fns, ok := strings.Cut(f.from, "."); !ok || !names.IsDNSLabel(fs) || !names.IsDNSLabel(fns) {
					return userError("route check: --from %q: want SERVICE.NAMESPACE, e.g. frontend.shop", f.from)
				}
			}
			if f.output != "text" && f.output != "json" {
				return userError("route check: -o %q: want text or json", f.output)
			}
			if !strings.HasPrefix(f.path, "/") {
				return userError("route check: --path %q: want an absolute path, e.g. /items", f.path)
			}
			h := http.Header{}
			for _, kv := range f.headers {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || !names.IsHTTPToken(k) {
					return userError("route check: -H %q: want NAME=VALUE", kv)
				}
				h.Add(k, v)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := routeCheck(cmd, c, &f, svc, ns, h)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			printRouteCheck(cmd.OutOrStdout(), res)
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", "", "caller: SERVICE.NAMESPACE (shown only: a Route applies to every caller)")
	fl.StringVar(&f.to, "to", "", "called service: SERVICE.NAMESPACE")
	fl.StringVar(&f.method, "method", "GET", "HTTP method")
	fl.StringVar(&f.path, "path", "/", "HTTP path; for gRPC /PACKAGE.SERVICE/METHOD")
	fl.StringArrayVarP(&f.headers, "header", "H", nil, "request header NAME=VALUE; repeatable")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	return cmd
}

func routeCheck(cmd *cobra.Command, c *adminapi.Client, f *routeCheckFlags, svc, ns string, h http.Header) (*RouteCheck, error) {
	ctx := cmd.Context()
	routeKind, _ := resource.LookupKind(resource.KindRoute)
	tpKind, _ := resource.LookupKind(resource.KindTrafficPolicy)
	routes, err := c.List(ctx, routeKind, ns)
	if err != nil {
		return nil, fmt.Errorf("route check: %w", err)
	}
	tps, err := c.List(ctx, tpKind, ns)
	if err != nil {
		return nil, fmt.Errorf("route check: %w", err)
	}
	res := &RouteCheck{From: f.from, To: f.to, Method: strings.ToUpper(f.method), Path: f.path, Rule: -1}
	// As the proxies compile them (meshconfig.CompileRoutes): a Trellis
	// Route alone, the first by name; else the Routes made of Gateway API
	// routes, merged.
	var ins []meshconfig.RouteInput
	specs := map[string]resource.RouteSpec{}
	for i := range routes {
		in, err := meshconfig.RouteInputOf(&routes[i])
		if err != nil || in.Spec.Service != svc {
			continue
		}
		ins = append(ins, in)
		specs[in.Ref] = in.Spec
	}
	var rule *meshconfig.RouteRule
	if r := meshconfig.CompileRoutes(ins)[meshconfig.ServiceKey(svc, ns)]; r != nil {
		res.Route, res.Shadowed = r.Ref, r.Shadowed
		if len(r.Merged) > 1 {
			res.Merged = r.Merged
		}
		rule = r.Match(res.Method, res.Path, h)
	}
	backends := []meshconfig.RouteBackend{{Key: meshconfig.ServiceKey(svc, ns), Weight: 1}}
	switch {
	case rule != nil && rule.Index < 0:
		res.Route = rule.Ref
		a := rule.Abort
		res.Unmatched = &RouteCheckAbort{Status: a.Status, GRPCStatus: a.GRPCCode(), Percent: 100}
		backends = nil
	case rule != nil:
		res.Route, res.Rule = rule.Ref, rule.Index
		if len(rule.Backends) > 0 {
			backends = rule.Backends
		}
		sr := specs[rule.Ref].Rules[rule.Index]
		if sr.Headers != nil {
			res.RequestHeaders, res.ResponseHeaders = sr.Headers.Request, sr.Headers.Response
		}
		if m := rule.Mirror; m != nil {
			res.Mirror = &RouteCheckMirror{Service: m.Key, Percent: m.Percent}
		}
		if d := rule.Delay; d != nil {
			res.Delay = &RouteCheckDelay{Fixed: d.Fixed.String(), Percent: d.Percent}
		}
		if a := rule.Abort; a != nil {
			res.Abort = &RouteCheckAbort{Status: a.Status, GRPCStatus: a.GRPCStatus, Percent: a.Percent}
		}
	}
	res.Backend = []RouteCheckBackend{}
	sum := 0
	for _, b := range backends {
		sum += b.Weight
	}
	for _, b := range backends {
		name, _, _ := strings.Cut(b.Key, ".")
		cb := RouteCheckBackend{Service: b.Key, Weight: b.Weight, Percent: float64(b.Weight) * 100 / float64(sum)}
		cb.TrafficPolicy, cb.Traffic = trafficPolicyFor(tps, name)
		res.Backend = append(res.Backend, cb)
	}
	return res, nil
}

// trafficPolicyFor is the TrafficPolicy in effect for a service of the
// namespace listed: its own, else the namespace default (the first by name
// of each, as the proxies choose).
func trafficPolicyFor(tps []resource.Object, svc string) (string, *resource.TrafficPolicySpec) {
	var own, def *resource.Object
	var ownSpec, defSpec resource.TrafficPolicySpec
	for i := range tps {
		o := &tps[i]
		s, err := resource.TrafficPolicySpecOf(o)
		if err != nil {
			continue
		}
		switch s.Selector.Service {
		case svc:
			if own == nil || o.Metadata.Name < own.Metadata.Name {
				own, ownSpec = o, s
			}
		case "":
			if def == nil || o.Metadata.Name < def.Metadata.Name {
				def, defSpec = o, s
			}
		}
	}
	switch {
	case own != nil:
		return own.Metadata.Namespace + "/" + own.Metadata.Name, &ownSpec
	case def != nil:
		return def.Metadata.Namespace + "/" + def.Metadata.Name, &defSpec
	}
	return "", nil
}

func printRouteCheck(w io.Writer, r *RouteCheck) {
	from := r.From
	if from == "" {
		from = "any caller"
	}
	fmt.Fprintf(w, "%s → %s: %s %s\n", from, r.To, r.Method, r.Path)
	switch {
	case r.Route == "":
		fmt.Fprintln(w, "route:    none (the service itself)")
	case r.Unmatched != nil:
		fmt.Fprintf(w, "route:    %s, no rule matches\n", r.Route)
	case r.Rule < 0:
		fmt.Fprintf(w, "route:    %s, no rule matches (the service itself)\n", r.Route)
	default:
		fmt.Fprintf(w, "route:    %s rule %d\n", r.Route, r.Rule)
	}
	if len(r.Merged) > 0 {
		fmt.Fprintf(w, "merged:   %s (Gateway API routes of one service, rules in precedence order)\n", strings.Join(r.Merged, ", "))
	}
	if len(r.Shadowed) > 0 {
		fmt.Fprintf(w, "ignored:  %s (another Route for the service applies: a Trellis Route before Gateway API routes, GRPCRoutes before HTTPRoutes, else the first by name)\n", strings.Join(r.Shadowed, ", "))
	}
	if u := r.Unmatched; u != nil {
		fmt.Fprintf(w, "answer:   %d (gRPC calls: status %d) from the caller's proxy: the Route answers requests no rule takes (spec.unmatched; Gateway API routes answer 404)\n", u.Status, u.GRPCStatus)
		return
	}
	fmt.Fprintln(w, "backends:")
	for _, b := range r.Backend {
		fmt.Fprintf(w, "  %-28s weight %-4d %6.2f%%\n", b.Service, b.Weight, b.Percent)
		if b.Traffic == nil {
			fmt.Fprintln(w, "    traffic policy: none (defaults: no timeout, no retries, peak-ewma)")
			continue
		}
		fmt.Fprintf(w, "    traffic policy: %s\n", b.TrafficPolicy)
		fmt.Fprintf(w, "    %s\n", trafficSummary(b.Traffic))
	}
	if m := r.Mirror; m != nil {
		fmt.Fprintf(w, "mirror:   %s, %v%% of requests\n", m.Service, m.Percent)
	}
	if d := r.Delay; d != nil {
		fmt.Fprintf(w, "delay:    %s, %v%% of requests\n", d.Fixed, d.Percent)
	}
	if a := r.Abort; a != nil {
		g := ""
		if a.GRPCStatus >= 0 {
			g = fmt.Sprintf(" (gRPC status %d)", a.GRPCStatus)
		}
		fmt.Fprintf(w, "abort:    %d%s, %v%% of requests\n", a.Status, g, a.Percent)
	}
	if h := r.RequestHeaders; h != nil {
		fmt.Fprintf(w, "request headers:  %s\n", rewriteSummary(h))
	}
	if h := r.ResponseHeaders; h != nil {
		fmt.Fprintf(w, "response headers: %s\n", rewriteSummary(h))
	}
}

func trafficSummary(s *resource.TrafficPolicySpec) string {
	var parts []string
	timeout := "none"
	if s.Timeout.Duration > 0 {
		timeout = s.Timeout.String()
	}
	parts = append(parts, "timeout "+timeout)
	if r := s.Retries; r != nil && r.Attempts > 0 {
		p := fmt.Sprintf("retries %d on %s", r.Attempts, strings.Join(r.On, ","))
		if r.PerTryTimeout.Duration > 0 {
			p += " per try " + r.PerTryTimeout.String()
		}
		p += fmt.Sprintf(" budget %g%%+%d/s", r.Budget.Ratio*100, r.Budget.MinPerSecond)
		parts = append(parts, p)
	} else {
		parts = append(parts, "no retries")
	}
	if od := s.OutlierDetection; od != nil {
		parts = append(parts, fmt.Sprintf("outlier detection %d×5xx/%d×gateway, eject %s (max %d%%)", od.Consecutive5xx, od.ConsecutiveGatewayErrors, od.BaseEjectionTime, od.MaxEjectedPercent))
	}
	lb := resource.LBPeakEWMA
	if s.LoadBalancer != nil {
		lb = s.LoadBalancer.Policy
	}
	parts = append(parts, "lb "+lb)
	return strings.Join(parts, ", ")
}

func rewriteSummary(h *resource.HeaderRewrite) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(h.Set)) {
		parts = append(parts, "set "+k+": "+h.Set[k])
	}
	for _, k := range slices.Sorted(maps.Keys(h.Add)) {
		parts = append(parts, "add "+k+": "+h.Add[k])
	}
	for _, k := range h.Remove {
		parts = append(parts, "remove "+k)
	}
	return strings.Join(parts, "; ")
}
