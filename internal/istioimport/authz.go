package istioimport

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/trellismesh/trellis/internal/resource"
)

// What becomes of an AuthorizationPolicy's part that does not convert.
// ALLOW policies lose the smallest enclosing part that keeps them from
// allowing more; DENY policies lose only the field, which makes them match
// more.
const (
	leftOutPolicy    = "the policy is left out"
	leftOutRule      = "the rule is left out"
	leftOutSource    = "the source is left out, so the rule admits fewer callers"
	leftOutOperation = "the operation is left out, so the rule admits fewer requests"
	leftOutAllFrom   = "no source of the rule converts, so the rule is left out"
	leftOutAllTo     = "no operation of the rule converts, so the rule is left out"
	denyWider        = "left out: the DENY policy applies more widely"
	denyMore         = "left out: the DENY rule matches more"
)

func (c *converter) authorizationPolicy(d *document) {
	action := resource.ActionAllow
	switch a := d.spec["action"]; a {
	case nil, "ALLOW":
	case "DENY":
		action = resource.ActionDeny
	case "AUDIT":
		c.dropResource(d, "spec.action", "Istio's AUDIT only marks requests for logging; Trellis's audit mode (spec.enforcement: audit) tries out a whole ALLOW or DENY policy instead")
		return
	case "CUSTOM":
		c.dropResource(d, "spec.action", "CUSTOM's provider is defined in Istio's MeshConfig, which import does not read; define it in the Mesh's spec.extensionProviders and write the policy with action CUSTOM (docs/policy.md, External authorization)")
		return
	default:
		c.dropResource(d, "spec.action", fmt.Sprintf("unknown action %v: want ALLOW or DENY", a))
		return
	}
	allow := action == resource.ActionAllow

	spec := resource.AuthorizationPolicySpec{Action: action}
	ns := d.ns
	var ps []problem
	for _, key := range slices.Sorted(maps.Keys(d.spec)) {
		v, f := d.spec[key], "spec."+key
		switch key {
		case "action", "rules":
		case "selector":
			labels, sp := selectorLabels(f, v)
			ps = append(ps, sp...)
			if len(sp) == 0 {
				spec.Selector.MatchLabels = labels
			}
		case "targetRef", "targetRefs":
			ps = append(ps, problem{field: f, reason: "Trellis selects workloads by service and labels, not by reference to a Kubernetes object"})
		case "provider":
			ps = append(ps, problem{field: f, reason: "a provider serves action CUSTOM only"})
		default:
			ps = append(ps, problem{field: f, reason: "unknown field"})
		}
	}
	switch {
	case ns == c.opts.RootNamespace:
		// Istio's root namespace is Trellis's trellis-system: without a
		// selector, both protect the whole mesh.
		ns = meshWideNamespace
		if len(spec.Selector.MatchLabels) > 0 {
			ps = append(ps, problem{field: "spec.selector", reason: fmt.Sprintf("a selector in Istio's root namespace (%s) picks workloads of every namespace; a Trellis policy with a selector protects its own namespace only", c.opts.RootNamespace)})
			spec.Selector.MatchLabels = nil
		}
	case ns == meshWideNamespace && len(spec.Selector.MatchLabels) == 0:
		ps = append(ps, problem{field: "metadata.namespace", reason: fmt.Sprintf("a Trellis policy in %s without a selector protects the whole mesh, not one namespace", meshWideNamespace)})
	}
	if len(ps) > 0 {
		if allow {
			c.drop(d, ps, leftOutPolicy)
			return
		}
		c.drop(d, ps, denyWider)
	}

	if v := d.spec["rules"]; v != nil {
		items, ok := v.([]any)
		if !ok {
			c.dropResource(d, "spec.rules", "not a list")
			return
		}
		spec.Rules = []resource.Rule{}
		for i, item := range items {
			if r, ok := c.rule(d, fmt.Sprintf("spec.rules[%d]", i), item, allow); ok {
				spec.Rules = append(spec.Rules, r)
			}
		}
	}
	c.emit(d, resource.Object{
		APIVersion: resource.APIVersion,
		Kind:       resource.KindAuthorizationPolicy,
		Metadata:   resource.Metadata{Name: d.name, Namespace: ns},
		Spec:       marshal(spec),
	})
}

// Where a problem of a rule lies, which decides what an ALLOW loses.
const (
	inRule      = iota // the rule itself, or a condition: an ALLOW loses the rule
	inSource           // one from entry: an ALLOW loses that entry
	inOperation        // one to entry: an ALLOW loses that entry
)

// rule converts rule f. It reports its problems and whether the rule is
// part of the output.
func (c *converter) rule(d *document, f string, v any, allow bool) (resource.Rule, bool) {
	var (
		out resource.Rule
		ps  []problem
		in  []int // where each of ps lies
	)
	add := func(where int, more ...problem) {
		for _, p := range more {
			ps = append(ps, p)
			in = append(in, where)
		}
	}
	m, ok := v.(map[string]any)
	if !ok && v != nil {
		add(inRule, problem{field: f, reason: "not a mapping"})
	}
	var nFrom, nTo int
	for _, key := range slices.Sorted(maps.Keys(m)) {
		fk := f + "." + key
		items, ok := m[key].([]any)
		if !ok && m[key] != nil && (key == "from" || key == "to" || key == "when") {
			add(inRule, problem{field: fk, reason: "not a list"})
			continue
		}
		switch key {
		case "from":
			for j, it := range items {
				s, sps := c.source(fmt.Sprintf("%s[%d]", fk, j), it)
				add(inSource, sps...)
				nFrom++
				if len(sps) == 0 || !allow {
					out.From = append(out.From, s)
				}
			}
		case "to":
			for j, it := range items {
				o, ops := c.operation(fmt.Sprintf("%s[%d]", fk, j), it)
				add(inOperation, ops...)
				nTo++
				if len(ops) == 0 || !allow {
					out.To = append(out.To, o)
				}
			}
		case "when":
			for j, it := range items {
				cond, cps := c.condition(fmt.Sprintf("%s[%d]", fk, j), it)
				if len(cps) == 0 {
					out.When = append(out.When, cond)
					continue
				}
				if !allow {
					cps = withConsequence(cps, "the condition is left out: the DENY rule matches more")
				}
				add(inRule, cps...)
			}
		default:
			add(inRule, problem{field: fk, reason: "unknown field"})
		}
	}

	if !allow {
		// A DENY keeps every entry without the fields that did not
		// convert: each then matches more.
		c.drop(d, ps, denyMore)
		return out, true
	}
	// An ALLOW loses the entries that did not convert. A from or to list
	// left empty would admit everything, so then the rule goes.
	consequence := ""
	switch {
	case slices.Contains(in, inRule):
		consequence = leftOutRule
	case nFrom > 0 && len(out.From) == 0:
		consequence = leftOutAllFrom
	case nTo > 0 && len(out.To) == 0:
		consequence = leftOutAllTo
	}
	if consequence != "" {
		c.drop(d, ps, consequence)
		return out, false
	}
	for i := range ps {
		if in[i] == inSource {
			ps[i].consequence = leftOutSource
		} else {
			ps[i].consequence = leftOutOperation
		}
	}
	c.drop(d, ps, "")
	return out, true
}

// withConsequence sets the consequence of every problem that has none.
func withConsequence(ps []problem, consequence string) []problem {
	out := make([]problem, len(ps))
	for i, p := range ps {
		if p.consequence == "" {
			p.consequence = consequence
		}
		out[i] = p
	}
	return out
}

// source converts from entry f: the Trellis source without the fields that
// did not convert, and those fields' problems.
func (c *converter) source(f string, v any) (resource.Source, []problem) {
	var (
		out resource.Source
		ps  []problem
	)
	m, ok := v.(map[string]any)
	if !ok {
		return out, []problem{{field: f, reason: "not a mapping"}}
	}
	for _, key := range slices.Sorted(maps.Keys(m)) {
		if key != "source" {
			ps = append(ps, problem{field: f + "." + key, reason: "unknown field"})
		}
	}
	if m["source"] == nil {
		return out, ps
	}
	f += ".source"
	s, ok := m["source"].(map[string]any)
	if !ok {
		return out, append(ps, problem{field: f, reason: "not a mapping"})
	}
	for _, key := range slices.Sorted(maps.Keys(s)) {
		fk := f + "." + key
		var (
			list *[]string
			conv func(string) (string, string)
		)
		switch key {
		case "principals":
			list, conv = &out.Principals, c.principal
		case "notPrincipals":
			list, conv = &out.NotPrincipals, c.principal
		case "serviceAccounts":
			list, conv = &out.Principals, c.serviceAccount
		case "notServiceAccounts":
			list, conv = &out.NotPrincipals, c.serviceAccount
		case "namespaces":
			list = &out.Namespaces
		case "notNamespaces":
			list = &out.NotNamespaces
		case "requestPrincipals", "notRequestPrincipals":
			ps = append(ps, problem{field: fk, reason: "Trellis does not authenticate end users (JWT); it authorizes workload identities"})
			continue
		case "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks":
			ps = append(ps, problem{field: fk, reason: "Trellis authorizes by identity, not address"})
			continue
		default:
			ps = append(ps, problem{field: fk, reason: "unknown field"})
			continue
		}
		probe := func(v string) resource.Rule {
			var s resource.Source
			switch key {
			case "principals", "serviceAccounts":
				s.Principals = []string{v}
			case "notPrincipals", "notServiceAccounts":
				s.NotPrincipals = []string{v}
			case "namespaces":
				s.Namespaces = []string{v}
			case "notNamespaces":
				s.NotNamespaces = []string{v}
			}
			return resource.Rule{From: []resource.Source{s}}
		}
		got, fps := convertStrings(fk, s[key], conv, probe)
		if len(fps) > 0 {
			ps = append(ps, fps...)
			continue
		}
		*list = append(*list, got...)
	}
	return out, ps
}

// principal converts an Istio principal, TRUST_DOMAIN/ns/X/sa/Y or a
// pattern over those, into a Trellis one, spiffe://TRUST_DOMAIN/ns/X/sa/Y.
func (c *converter) principal(p string) (string, string) {
	istioTD := c.opts.IstioTrustDomain
	switch {
	case p == "*":
		return p, ""
	case strings.HasPrefix(p, "*"):
		// A suffix pattern is the same string test in both meshes as long
		// as it stays clear of the trust domain.
		if i := strings.Index(p, "/ns/"); i > 1 {
			return "", fmt.Sprintf("%s: a suffix pattern that reaches into the trust domain cannot be rewritten", quote(p))
		}
		return p, ""
	}
	rest, ok := strings.CutPrefix(p, istioTD+"/")
	if !ok {
		return "", fmt.Sprintf("%s is not in Istio trust domain %s (--istio-trust-domain)", quote(p), istioTD)
	}
	return "spiffe://" + c.opts.TrustDomain + "/" + rest, ""
}

// serviceAccount converts an Istio service account, NAMESPACE/NAME, into a
// Trellis principal.
func (c *converter) serviceAccount(sa string) (string, string) {
	ns, name, ok := strings.Cut(sa, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", fmt.Sprintf("%s: want NAMESPACE/NAME", quote(sa))
	}
	return "spiffe://" + c.opts.TrustDomain + "/ns/" + ns + "/sa/" + name, ""
}

// operation converts to entry f, as source does from entries.
func (c *converter) operation(f string, v any) (resource.Operation, []problem) {
	var (
		out resource.Operation
		ps  []problem
	)
	m, ok := v.(map[string]any)
	if !ok {
		return out, []problem{{field: f, reason: "not a mapping"}}
	}
	for _, key := range slices.Sorted(maps.Keys(m)) {
		if key != "operation" {
			ps = append(ps, problem{field: f + "." + key, reason: "unknown field"})
		}
	}
	if m["operation"] == nil {
		return out, ps
	}
	f += ".operation"
	op, ok := m["operation"].(map[string]any)
	if !ok {
		return out, append(ps, problem{field: f, reason: "not a mapping"})
	}
	for _, key := range slices.Sorted(maps.Keys(op)) {
		fk := f + "." + key
		if key == "ports" || key == "notPorts" {
			ports, fps := convertPorts(fk, op[key])
			ps = append(ps, fps...)
			if key == "ports" {
				out.Ports = ports
			} else {
				out.NotPorts = ports
			}
			continue
		}
		var (
			list *[]string
			conv func(string) (string, string)
		)
		switch key {
		case "hosts":
			list = &out.Hosts
		case "notHosts":
			list = &out.NotHosts
		case "methods":
			list = &out.Methods
		case "notMethods":
			list = &out.NotMethods
		case "paths":
			list, conv = &out.Paths, pathValue
		case "notPaths":
			list, conv = &out.NotPaths, pathValue
		default:
			ps = append(ps, problem{field: fk, reason: "unknown field"})
			continue
		}
		probe := func(v string) resource.Rule {
			var o resource.Operation
			switch key {
			case "hosts":
				o.Hosts = []string{v}
			case "notHosts":
				o.NotHosts = []string{v}
			case "methods":
				o.Methods = []string{v}
			case "notMethods":
				o.NotMethods = []string{v}
			case "paths":
				o.Paths = []string{v}
			case "notPaths":
				o.NotPaths = []string{v}
			}
			return resource.Rule{To: []resource.Operation{o}}
		}
		got, fps := convertStrings(fk, op[key], conv, probe)
		if len(fps) > 0 {
			ps = append(ps, fps...)
			continue
		}
		*list = got
	}
	return out, ps
}

func pathValue(p string) (string, string) {
	if strings.Contains(p, "{*") {
		return "", fmt.Sprintf("%s: Istio path templates ({*}, {**}) have no Trellis equivalent; Trellis paths are exact, \"/prefix*\" or \"*suffix\"", quote(p))
	}
	return p, ""
}

// convertPorts reads Istio ports, strings ("8080") or numbers.
func convertPorts(f string, v any) ([]resource.Port, []problem) {
	items, ok := v.([]any)
	if !ok {
		return nil, []problem{{field: f, reason: "not a list of ports"}}
	}
	var (
		out []resource.Port
		ps  []problem
	)
	for i, it := range items {
		var text string
		switch p := it.(type) {
		case string:
			text = p
		case json.Number:
			text = p.String()
		}
		n, err := strconv.ParseUint(text, 10, 16)
		if err != nil || n == 0 {
			ps = append(ps, problem{field: fmt.Sprintf("%s[%d]", f, i), reason: fmt.Sprintf("%v is not a port number from 1 to 65535", it)})
			continue
		}
		out = append(out, resource.Port(n))
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return out, nil
}

// condition converts when entry f.
func (c *converter) condition(f string, v any) (resource.Condition, []problem) {
	var (
		out resource.Condition
		ps  []problem
	)
	m, ok := v.(map[string]any)
	if !ok {
		return out, []problem{{field: f, reason: "not a mapping"}}
	}
	key, _ := m["key"].(string)
	if reason := conditionKey(key); reason != "" {
		return out, []problem{{field: f + ".key", reason: reason}}
	}
	out.Key = key
	if msgs := probeRule(resource.Rule{When: []resource.Condition{{Key: key, Values: []string{"x"}}}}); len(msgs) > 0 {
		return out, []problem{{field: f + ".key", reason: msgs[0].msg}}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fk := f + "." + k
		switch k {
		case "key":
		case "values", "notValues":
			probe := func(v string) resource.Rule {
				c := resource.Condition{Key: key}
				if k == "values" {
					c.Values = []string{v}
				} else {
					c.NotValues = []string{v}
				}
				return resource.Rule{When: []resource.Condition{c}}
			}
			got, fps := convertStrings(fk, m[k], headerValue, probe)
			ps = append(ps, fps...)
			if k == "values" {
				out.Values = got
			} else {
				out.NotValues = got
			}
		default:
			ps = append(ps, problem{field: fk, reason: "unknown field"})
		}
	}
	if len(ps) == 0 && len(out.Values) == 0 && len(out.NotValues) == 0 {
		ps = append(ps, problem{field: f + ".values", reason: "missing: a condition needs values or notValues"})
	}
	return out, ps
}

// conditionKey says why an Istio condition key does not convert, or "".
func conditionKey(key string) string {
	var why string
	switch {
	case strings.HasPrefix(key, "request.headers["):
		return ""
	case key == "":
		return "missing"
	case key == "source.principal":
		why = "write the principals as from.source.principals"
	case key == "source.namespace":
		why = "write the namespaces as from.source.namespaces"
	case key == "destination.port":
		why = "write the ports as to.operation.ports"
	case key == "source.ip", key == "remote.ip", key == "destination.ip":
		return quote(key) + ": Trellis authorizes by identity, not address"
	case strings.HasPrefix(key, "request.auth."):
		return quote(key) + ": Trellis does not authenticate end users (JWT); it authorizes workload identities"
	}
	msg := quote(key) + ": Trellis conditions test request headers only (request.headers[NAME])"
	if why != "" {
		msg += "; " + why
	}
	return msg
}

func headerValue(v string) (string, string) {
	if strings.HasPrefix(v, "*") || strings.HasSuffix(v, "*") {
		return "", fmt.Sprintf("%s: Istio matches it as a pattern; Trellis compares header values exactly", quote(v))
	}
	return v, ""
}

// selectorLabels reads an Istio workload selector.
func selectorLabels(f string, v any) (map[string]string, []problem) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, []problem{{field: f, reason: "not a mapping"}}
	}
	var ps []problem
	for _, key := range slices.Sorted(maps.Keys(m)) {
		if key != "matchLabels" {
			ps = append(ps, problem{field: f + "." + key, reason: "unknown field"})
		}
	}
	if m["matchLabels"] == nil {
		return nil, ps
	}
	labels, reason := stringMap(m["matchLabels"])
	if reason != "" {
		return nil, append(ps, problem{field: f + ".matchLabels", reason: reason})
	}
	o := resource.Object{
		APIVersion: resource.APIVersion,
		Kind:       resource.KindAuthorizationPolicy,
		Metadata:   resource.Metadata{Name: "probe"},
		Spec:       marshal(resource.AuthorizationPolicySpec{Selector: resource.Selector{MatchLabels: labels}}),
	}
	if err := resource.Validate(&o); err != nil {
		ps = append(ps, problem{field: f + ".matchLabels", reason: validatorMessage(err)})
	}
	return labels, ps
}

// convertStrings converts a list of strings one by one with conv (nil:
// unchanged), then checks each result with Trellis's validator in the rule
// probe builds around it. Problems name the entry by its index.
func convertStrings(f string, v any, conv func(string) (string, string), probe func(string) resource.Rule) ([]string, []problem) {
	list, reason := stringList(v)
	if reason != "" {
		return nil, []problem{{field: f, reason: reason}}
	}
	var (
		out []string
		ps  []problem
	)
	for i, s := range list {
		fi := fmt.Sprintf("%s[%d]", f, i)
		if conv != nil {
			var reason string
			if s, reason = conv(s); reason != "" {
				ps = append(ps, problem{field: fi, reason: reason})
				continue
			}
		}
		if msgs := probeRule(probe(s)); len(msgs) > 0 {
			ps = append(ps, problem{field: fi, reason: msgs[0].msg})
			continue
		}
		out = append(out, s)
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return out, nil
}

type fieldMessage struct{ field, msg string }

// probeRule validates a policy made of the one rule r and returns the
// validator's complaints.
func probeRule(r resource.Rule) []fieldMessage {
	o := resource.Object{
		APIVersion: resource.APIVersion,
		Kind:       resource.KindAuthorizationPolicy,
		Metadata:   resource.Metadata{Name: "probe"},
		Spec:       marshal(resource.AuthorizationPolicySpec{Rules: []resource.Rule{r}}),
	}
	err := resource.Validate(&o)
	if err == nil {
		return nil
	}
	var out []fieldMessage
	if ve, ok := err.(*resource.ValidationError); ok {
		for _, fe := range ve.Errors {
			out = append(out, fieldMessage{fe.Field, fe.Message})
		}
	}
	if len(out) == 0 {
		out = append(out, fieldMessage{"", err.Error()})
	}
	return out
}
