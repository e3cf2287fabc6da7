package resource

import (
	"cmp"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Generated policies: what marks an AuthorizationPolicy as compiled from
// Intents.
const (
	// GeneratedPolicyPrefix begins the name of every generated policy,
	// "intents-<server>"; users cannot apply or delete such names.
	GeneratedPolicyPrefix = "intents-"
	// LabelGeneratedBy is set to GeneratedByIntent on generated policies.
	LabelGeneratedBy  = "trellis.dev/generated-by"
	GeneratedByIntent = "intent"
	// AnnotationRuleSources holds a JSON array with, for each rule of a
	// generated policy, the Intent that produced it ("namespace/name").
	AnnotationRuleSources = "trellis.dev/rule-sources"
)

// IsGeneratedPolicyName reports whether an AuthorizationPolicy called name
// would be one compiled from Intents.
func IsGeneratedPolicyName(name string) bool {
	return strings.HasPrefix(name, GeneratedPolicyPrefix)
}

// IsGenerated reports whether o is a policy compiled from Intents.
func IsGenerated(o *Object) bool {
	return o.Kind == KindAuthorizationPolicy && o.Metadata.Labels[LabelGeneratedBy] == GeneratedByIntent
}

// RuleSources returns, for a generated policy, the Intent behind each rule
// ("namespace/name"), or nil for any other policy.
func RuleSources(o *Object) []string {
	if !IsGenerated(o) {
		return nil
	}
	var out []string
	if json.Unmarshal([]byte(o.Metadata.Annotations[AnnotationRuleSources]), &out) != nil {
		return nil
	}
	return out
}

// CompileIntents compiles Intents into one ALLOW AuthorizationPolicy per
// called service, "intents-<service>" in the service's namespace. Each call
// of each Intent becomes one rule: from the client service in the Intent's
// namespace, to the call's methods and paths. The result is a pure function
// of the Intents, in a stable order; Intents whose spec does not decode are
// skipped (stored ones were validated). Metadata: the generated label, the
// rule sources, the newest resourceVersion and update time and the oldest
// creation time of the contributing Intents.
func CompileIntents(intents []Object) []Object {
	type server struct{ ns, name string }
	type contrib struct {
		intent *Object
		spec   *IntentSpec
		call   IntentCall
	}
	by := map[server][]contrib{}
	sorted := make([]*Object, 0, len(intents))
	for i := range intents {
		if intents[i].Kind == KindIntent {
			sorted = append(sorted, &intents[i])
		}
	}
	slices.SortFunc(sorted, func(a, b *Object) int {
		return cmp.Or(cmp.Compare(a.Metadata.Namespace, b.Metadata.Namespace), cmp.Compare(a.Metadata.Name, b.Metadata.Name))
	})
	for _, o := range sorted {
		spec, err := IntentSpecOf(o)
		if err != nil {
			continue
		}
		for _, c := range spec.Calls {
			name, ns := IntentTarget(c.Service, o.Metadata.Namespace)
			by[server{ns, name}] = append(by[server{ns, name}], contrib{o, &spec, c})
		}
	}
	servers := make([]server, 0, len(by))
	for s := range by {
		servers = append(servers, s)
	}
	slices.SortFunc(servers, func(a, b server) int { return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name)) })

	out := make([]Object, 0, len(servers))
	for _, s := range servers {
		cs := by[s]
		spec := AuthorizationPolicySpec{
			Selector:    Selector{Service: s.name},
			Action:      ActionAllow,
			Enforcement: EnforcementAudit,
		}
		sources := make([]string, 0, len(cs))
		var rv int64
		var created, updated *time.Time
		for _, c := range cs {
			if c.spec.Enforcement == EnforcementEnforce {
				spec.Enforcement = EnforcementEnforce
			}
			r := Rule{From: []Source{{Namespaces: []string{c.intent.Metadata.Namespace}, Services: []string{c.spec.Client.Service}}}}
			if len(c.call.Methods) > 0 || len(c.call.Paths) > 0 {
				r.To = []Operation{{Methods: c.call.Methods, Paths: c.call.Paths}}
			}
			spec.Rules = append(spec.Rules, r)
			sources = append(sources, c.intent.Metadata.Namespace+"/"+c.intent.Metadata.Name)
			m := c.intent.Metadata
			if v, err := strconv.ParseInt(m.ResourceVersion, 10, 64); err == nil && v > rv {
				rv = v
			}
			if m.CreationTimestamp != nil && (created == nil || m.CreationTimestamp.Before(*created)) {
				created = m.CreationTimestamp
			}
			if m.UpdateTimestamp != nil && (updated == nil || m.UpdateTimestamp.After(*updated)) {
				updated = m.UpdateTimestamp
			}
		}
		raw, _ := json.Marshal(spec) // plain strings and slices: cannot fail
		src, _ := json.Marshal(sources)
		o := Object{
			APIVersion: APIVersion,
			Kind:       KindAuthorizationPolicy,
			Metadata: Metadata{
				Name:              GeneratedPolicyPrefix + s.name,
				Namespace:         s.ns,
				Labels:            map[string]string{LabelGeneratedBy: GeneratedByIntent},
				Annotations:       map[string]string{AnnotationRuleSources: string(src)},
				Generation:        1,
				CreationTimestamp: created,
				UpdateTimestamp:   updated,
			},
			Spec: raw,
		}
		if rv > 0 {
			o.Metadata.ResourceVersion = strconv.FormatInt(rv, 10)
		}
		out = append(out, o)
	}
	return out
}
