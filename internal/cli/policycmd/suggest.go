package policycmd

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/resource"
)

// LabelSuggested marks the Intents policy suggest writes.
const LabelSuggested = "trellis.dev/suggested"

const policySuggestHelp = `Propose Intents that cover the traffic the mesh has seen, and no more.

The collector learns, per edge (caller service -> service), the requests'
methods and path templates (/items/{id}). suggest writes one Intent per
calling service with the calls it made: per called service, each method
with the paths it was used on (a template with {id} becomes a prefix
pattern, /items/* for /items/{id}). Shapes whose requests were all denied
are left out. The Intents are in enforcement: audit, so applying them
changes no decision: watch trellis policy coverage, then switch them to
enforce with trellis policy promote intent/NAME.

Also listed (as comments with -o yaml): the observed traffic the live
policies deny or would deny, and traffic from callers without a known
service, which no Intent can name.`

type suggestFlags struct {
	namespace, output, trustDomain string
	since                          time.Duration
	minCount                       uint64
}

func newSuggestCmd(env Env) *cobra.Command {
	var f suggestFlags
	cmd := &cobra.Command{
		Use:   "suggest [-n NS] [--since 24h] [--min-count N] [-o text|yaml]",
		Short: "Propose least-privilege Intents from the traffic the mesh has seen",
		Long:  policySuggestHelp,
		Example: `  trellis policy suggest -n shop
  trellis policy suggest -n shop --since 24h --min-count 5 -o yaml | trellis apply -f -`,
		Args: exitcode.NoArgs,
		RunE: exitcode.RunE(func(cmd *cobra.Command, _ []string) error {
			const op = "policy suggest"
			if f.output != "text" && f.output != "yaml" {
				return exitcode.UserError("%s: -o %q: use text or yaml", op, f.output)
			}
			if f.since < 0 {
				return exitcode.UserError("%s: --since %s: want a positive duration such as 24h, or 0 for all that was seen", op, f.since)
			}
			c, err := env.Client()
			if err != nil {
				return err
			}
			live, td, err := liveMesh(cmd, c, op, f.trustDomain)
			if err != nil {
				return err
			}
			obs, err := fetchObserved(cmd.Context(), c, live, td, f.namespace, f.since, f.minCount)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			s := suggest(obs)
			if f.output == "yaml" {
				return s.writeYAML(cmd.OutOrStdout())
			}
			return s.writeText(cmd.OutOrStdout())
		}),
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.namespace, "namespace", "n", "", "the calling services' namespace (default: every namespace)")
	fl.DurationVar(&f.since, "since", 24*time.Hour, "only shapes seen within this long (0: all)")
	fl.Uint64Var(&f.minCount, "min-count", 1, "only shapes seen at least this many times")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or yaml (Intent documents)")
	addTrustDomainFlag(cmd, &f.trustDomain)
	return cmd
}

// suggestion is what suggest found.
type suggestion struct {
	intents    []resource.Object
	requests   map[string]uint64 // by Intent ref: the requests it covers
	denied     []observed        // denied, or would be, by the live policies
	unassigned []observed        // from callers without a known service
}

// suggest builds one audit-mode Intent per calling service from obs.
func suggest(obs []observed) *suggestion {
	type client struct{ ns, service string }
	// paths[client][target][method] = set of patterns
	paths := map[client]map[string]map[string]map[string]bool{}
	s := &suggestion{requests: map[string]uint64{}}
	for _, o := range obs {
		switch {
		case o.edge.SourceService == unknownSource:
			s.unassigned = append(s.unassigned, o)
			continue
		case o.res != nil && (o.res.Decision == "DENY" || o.wouldDeny()):
			s.denied = append(s.denied, o)
		}
		if o.shape.Denied >= o.shape.Requests {
			continue // never allowed: not traffic to keep
		}
		c := client{o.edge.SourceNamespace, o.edge.SourceService}
		target := o.edge.Service + "." + o.edge.Namespace
		if paths[c] == nil {
			paths[c] = map[string]map[string]map[string]bool{}
		}
		if paths[c][target] == nil {
			paths[c][target] = map[string]map[string]bool{}
		}
		if paths[c][target][o.shape.Method] == nil {
			paths[c][target][o.shape.Method] = map[string]bool{}
		}
		paths[c][target][o.shape.Method][pathPattern(o.shape.Template)] = true
		s.requests[c.ns+"/"+c.service] += o.shape.Requests - o.shape.Denied
	}
	clients := slices.SortedFunc(maps.Keys(paths), func(a, b client) int { return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.service, b.service)) })
	for _, c := range clients {
		spec := resource.IntentSpec{Client: resource.IntentClient{Service: c.service}, Enforcement: resource.EnforcementAudit}
		for _, target := range slices.Sorted(maps.Keys(paths[c])) {
			// Methods with the same paths share one call.
			byPaths := map[string][]string{}
			for m, ps := range paths[c][target] {
				k := strings.Join(slices.Sorted(maps.Keys(ps)), "\x00")
				byPaths[k] = append(byPaths[k], m)
			}
			for _, k := range slices.Sorted(maps.Keys(byPaths)) {
				methods := byPaths[k]
				slices.Sort(methods)
				if slices.Contains(methods, "OTHER") {
					methods = nil // a method no policy can name: any method
				}
				spec.Calls = append(spec.Calls, resource.IntentCall{Service: target, Methods: methods, Paths: strings.Split(k, "\x00")})
			}
		}
		raw, _ := json.Marshal(spec) // strings and slices: cannot fail
		o := resource.Object{APIVersion: resource.APIVersion, Kind: resource.KindIntent,
			Metadata: resource.Metadata{Name: c.service, Namespace: c.ns, Labels: map[string]string{LabelSuggested: "true"}}, Spec: raw}
		s.intents = append(s.intents, o)
	}
	return s
}

// pathPattern is the policy path pattern of a template: the template
// itself without placeholders, else a prefix up to the first one
// (/users/{id}/cart -> /users/*), which allows more than the template
// (policies have no middle wildcards).
func pathPattern(tmpl string) string {
	i := strings.Index(tmpl, "{")
	if i < 0 {
		return tmpl
	}
	return tmpl[:i] + "*"
}

func (s *suggestion) writeYAML(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# trellis policy suggest: %d Intent(s), in enforcement: audit; apply, watch `trellis policy coverage`, then `trellis policy promote intent/NAME`\n", len(s.intents))
	for _, line := range s.notes() {
		b.WriteString("# " + line + "\n")
	}
	for _, o := range s.intents {
		doc := map[string]any{"apiVersion": o.APIVersion, "kind": o.Kind, "metadata": map[string]any{
			"name": o.Metadata.Name, "namespace": o.Metadata.Namespace, "labels": o.Metadata.Labels}, "spec": json.RawMessage(o.Spec)}
		out, err := yaml.Marshal(doc)
		if err != nil {
			return err
		}
		b.WriteString("---\n")
		b.Write(out)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (s *suggestion) writeText(w io.Writer) error {
	var b strings.Builder
	if len(s.intents) == 0 {
		b.WriteString("No traffic to suggest Intents from (the collector learns from the proxies' stats reports; widen --since or lower --min-count).\n")
	} else {
		b.WriteString("Suggested Intents (enforcement: audit; apply with `trellis policy suggest -o yaml | trellis apply -f -`):\n")
	}
	for _, o := range s.intents {
		spec, _ := resource.IntentSpecOf(&o)
		fmt.Fprintf(&b, "  %s/%s: %s calls, covering %d requests\n", o.Metadata.Namespace, o.Metadata.Name, spec.Client.Service, s.requests[o.Metadata.Namespace+"/"+o.Metadata.Name])
		for _, c := range spec.Calls {
			methods := "any method"
			if len(c.Methods) > 0 {
				methods = strings.Join(c.Methods, ",")
			}
			fmt.Fprintf(&b, "    %-28s %-10s %s\n", c.Service, methods, strings.Join(c.Paths, " "))
		}
	}
	if len(s.intents) > 0 {
		b.WriteString("They compile to:\n")
		for _, p := range resource.CompileIntents(s.intents) {
			fmt.Fprintf(&b, "  AuthorizationPolicy %s/%s: ALLOW, %d rule(s), from %s\n", p.Metadata.Namespace, p.Metadata.Name,
				len(resource.RuleSources(&p)), strings.Join(slices.Compact(resource.RuleSources(&p)), ", "))
		}
	}
	for _, line := range s.notes() {
		b.WriteString(line + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// notes lists the denied and unattributed traffic.
func (s *suggestion) notes() []string {
	var out []string
	if len(s.denied) > 0 {
		out = append(out, "Observed traffic the live policies deny or would deny (left out of the Intents when never allowed):")
		for _, o := range s.denied {
			out = append(out, "  "+describeObserved(o))
		}
	}
	if len(s.unassigned) > 0 {
		out = append(out, "Traffic from callers without a known service (no Intent can name them; give them a sidecar):")
		for _, o := range s.unassigned {
			out = append(out, fmt.Sprintf("  %s.%s -> %s.%s %s %s: %d requests", o.edge.SourceService, o.edge.SourceNamespace,
				o.edge.Service, o.edge.Namespace, o.shape.Method, o.shape.Template, o.shape.Requests))
		}
	}
	return out
}

// describeObserved is one shape with its counts and decision.
func describeObserved(o observed) string {
	d := ""
	if o.res != nil {
		d = fmt.Sprintf("; now %s", o.res.Decision)
		if o.res.Policy != "" {
			d += fmt.Sprintf(" by %s rule %d", o.res.Policy, o.res.Rule)
		}
		if o.wouldDeny() {
			d += ", an audit policy would deny"
		}
	}
	return fmt.Sprintf("%s.%s -> %s.%s %s %s: %d requests, %d denied%s", o.edge.SourceService, o.edge.SourceNamespace,
		o.edge.Service, o.edge.Namespace, o.shape.Method, o.shape.Template, o.shape.Requests, o.shape.Denied, d)
}
