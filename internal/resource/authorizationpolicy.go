package resource

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/trellismesh/trellis/internal/names"
)

// AuthorizationPolicy actions and enforcement modes.
const (
	ActionAllow = "ALLOW"
	ActionDeny  = "DENY"
	// ActionCustom hands a matching request to the external authorization
	// provider named in spec.provider (docs/policy.md, "External
	// authorization").
	ActionCustom = "CUSTOM"

	EnforcementEnforce = "enforce" // decisions are applied
	EnforcementAudit   = "audit"   // decisions are evaluated and reported, not applied
)

// AuthorizationPolicySpec is the spec of an AuthorizationPolicy: which calls
// to the selected workloads of its namespace it allows (action ALLOW) or
// denies (action DENY). A policy's rules match a call if any rule matches; an
// ALLOW policy without rules allows nothing.
type AuthorizationPolicySpec struct {
	Selector    Selector `json:"selector"`
	Action      string   `json:"action,omitempty"`      // ActionAllow (default), ActionDeny or ActionCustom
	Enforcement string   `json:"enforcement,omitempty"` // EnforcementEnforce (default) or EnforcementAudit
	// Provider names the Mesh's extension provider that decides requests
	// matching the rules of a CUSTOM policy; it is required with
	// ActionCustom and refused with the other actions.
	Provider *ProviderRef `json:"provider,omitempty"`
	Rules    []Rule       `json:"rules,omitempty"`
}

// ProviderRef names an extension provider (Mesh
// spec.extensionProviders[].name), as Istio's ExtensionProvider does.
type ProviderRef struct {
	Name string `json:"name"`
}

// Selector picks the workloads a policy protects, in the policy's namespace.
// Every field set must match; an empty selector picks every workload.
type Selector struct {
	Service     string            `json:"service,omitempty"`
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// Rule matches a call when every non-empty list matches: any of From, any of
// To and all of When. An empty rule matches every call.
type Rule struct {
	From []Source    `json:"from,omitempty"`
	To   []Operation `json:"to,omitempty"`
	When []Condition `json:"when,omitempty"`
}

// Source matches the caller. Within a Source every non-empty list must match;
// a list matches if any entry does, a Not list if none does. Entries are
// exact values or the patterns "*", "prefix*" and "*suffix".
type Source struct {
	Principals    []string `json:"principals,omitempty"` // SPIFFE IDs
	NotPrincipals []string `json:"notPrincipals,omitempty"`
	Namespaces    []string `json:"namespaces,omitempty"`
	NotNamespaces []string `json:"notNamespaces,omitempty"`
	Services      []string `json:"services,omitempty"`
	NotServices   []string `json:"notServices,omitempty"`
	// RequestPrincipals match the end user's verified token,
	// "ISSUER/SUBJECT" (JWTAuthentication; docs/end-user-auth.md): a
	// request without one matches no entry, not even "*".
	RequestPrincipals    []string `json:"requestPrincipals,omitempty"`
	NotRequestPrincipals []string `json:"notRequestPrincipals,omitempty"`
}

// Operation matches what is called, with the list semantics of Source.
// Methods are exact; paths and hosts may be patterns.
type Operation struct {
	Ports      []Port   `json:"ports,omitempty"`
	NotPorts   []Port   `json:"notPorts,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	NotMethods []string `json:"notMethods,omitempty"`
	Paths      []string `json:"paths,omitempty"`
	NotPaths   []string `json:"notPaths,omitempty"`
	Hosts      []string `json:"hosts,omitempty"`
	NotHosts   []string `json:"notHosts,omitempty"`
	// PathsIgnoreCase makes Paths and NotPaths match without regard to
	// ASCII case, for apps that route paths case-insensitively (so
	// /ADMIN cannot dodge a rule on /admin).
	PathsIgnoreCase bool `json:"pathsIgnoreCase,omitempty"`
}

// Condition matches a request attribute named by Key against Values (any
// matches) and NotValues (none matches). Keys are "request.headers[NAME]"
// and "request.auth.claims[NAME]", a claim of the end user's verified
// token (a list claim matches when any element does).
type Condition struct {
	Key       string   `json:"key"`
	Values    []string `json:"values,omitempty"`
	NotValues []string `json:"notValues,omitempty"`
}

// AuthorizationPolicySpecOf decodes, defaults and checks the spec of an
// AuthorizationPolicy. It does not check the envelope (see Validate) and does
// not change o.
func AuthorizationPolicySpecOf(o *Object) (AuthorizationPolicySpec, error) {
	if o.Kind != KindAuthorizationPolicy {
		return AuthorizationPolicySpec{}, fmt.Errorf("resource.AuthorizationPolicySpecOf: %s is not an %s", o.Ref(), KindAuthorizationPolicy)
	}
	var errs errorList
	spec := authorizationPolicySpec(&errs, o.Spec)
	if err := errs.err(o.Source, o.Ref()); err != nil {
		return AuthorizationPolicySpec{}, err
	}
	return spec, nil
}

func authorizationPolicySpec(errs *errorList, raw json.RawMessage) AuthorizationPolicySpec {
	var s AuthorizationPolicySpec
	decodeSpec(errs, raw, &s)
	if s.Action == "" {
		s.Action = ActionAllow
	}
	if s.Enforcement == "" {
		s.Enforcement = EnforcementEnforce
	}

	if sv := s.Selector.Service; sv != "" && !names.IsDNSLabel(sv) {
		errs.add("spec.selector.service", "%s %s", quote(sv), names.DNSLabelRule)
	}
	checkLabels(errs, "spec.selector.matchLabels", s.Selector.MatchLabels)
	canonicalEnum(errs, "spec.action", &s.Action, ActionAllow, ActionDeny, ActionCustom)
	canonicalEnum(errs, "spec.enforcement", &s.Enforcement, EnforcementEnforce, EnforcementAudit)
	checkProvider(errs, &s)
	for i, r := range s.Rules {
		rule := fmt.Sprintf("spec.rules[%d]", i)
		for j, src := range r.From {
			f := fmt.Sprintf("%s.from[%d]", rule, j)
			checkStrings(errs, f+".principals", src.Principals, checkPrincipal)
			checkStrings(errs, f+".notPrincipals", src.NotPrincipals, checkPrincipal)
			checkStrings(errs, f+".namespaces", src.Namespaces, checkDNSLabelPattern)
			checkStrings(errs, f+".notNamespaces", src.NotNamespaces, checkDNSLabelPattern)
			checkStrings(errs, f+".services", src.Services, checkDNSLabelPattern)
			checkStrings(errs, f+".notServices", src.NotServices, checkDNSLabelPattern)
			checkStrings(errs, f+".requestPrincipals", src.RequestPrincipals, checkRequestPrincipal)
			checkStrings(errs, f+".notRequestPrincipals", src.NotRequestPrincipals, checkRequestPrincipal)
		}
		for j, op := range r.To {
			f := fmt.Sprintf("%s.to[%d]", rule, j)
			checkStrings(errs, f+".methods", op.Methods, checkMethod)
			checkStrings(errs, f+".notMethods", op.NotMethods, checkMethod)
			checkStrings(errs, f+".paths", op.Paths, checkPath)
			checkStrings(errs, f+".notPaths", op.NotPaths, checkPath)
			checkStrings(errs, f+".hosts", op.Hosts, checkHost)
			checkStrings(errs, f+".notHosts", op.NotHosts, checkHost)
		}
		for j, c := range r.When {
			f := fmt.Sprintf("%s.when[%d]", rule, j)
			checkConditionKey(errs, f+".key", c.Key)
			if len(c.Values) == 0 && len(c.NotValues) == 0 && !errs.failedAt(f+".notValues") {
				errs.add(f+".values", "required unless notValues is set: list the header values to match")
			}
			checkStrings(errs, f+".values", c.Values, checkHeaderValue)
			checkStrings(errs, f+".notValues", c.NotValues, checkHeaderValue)
		}
	}
	return s
}

// checkProvider: CUSTOM needs a provider, the other actions refuse one;
// a CUSTOM policy is enforced (its provider's answer cannot be audited
// offline).
func checkProvider(errs *errorList, s *AuthorizationPolicySpec) {
	switch {
	case s.Action == ActionCustom && s.Provider == nil:
		errs.add("spec.provider", "required with action CUSTOM: name the Mesh's extension provider, as in provider: {name: my-ext-authz}")
	case s.Action == ActionCustom && !names.IsDNSSubdomain(s.Provider.Name):
		errs.add("spec.provider.name", "%s is not a provider name (a DNS subdomain, as in Mesh spec.extensionProviders[].name)", quote(s.Provider.Name))
	case s.Action != ActionCustom && s.Provider != nil && !errs.failedAt("spec.action"):
		errs.add("spec.provider", "only with action CUSTOM; remove it, or set action: CUSTOM")
	}
	if s.Action == ActionCustom && s.Enforcement == EnforcementAudit {
		errs.add("spec.enforcement", "a CUSTOM policy cannot be in audit mode: what its provider would answer is not known until it is asked; use enforce")
	}
}

// Condition key forms.
const (
	headerKeyPrefix = "request.headers["
	ClaimKeyPrefix  = "request.auth.claims["
)

func checkConditionKey(errs *errorList, field, key string) {
	if claim, ok := strings.CutPrefix(key, ClaimKeyPrefix); ok {
		claim, ok = strings.CutSuffix(claim, "]")
		if !ok || claim == "" || strings.ContainsAny(claim, "[] \t\r\n") {
			errs.add(field, "claim key %s: write request.auth.claims[NAME] with one claim name, such as request.auth.claims[groups]", quote(key))
		}
		return
	}
	name, ok := strings.CutPrefix(key, headerKeyPrefix)
	if ok {
		name, ok = strings.CutSuffix(name, "]")
	}
	switch {
	case key == "":
		errs.add(field, "required; write request.headers[NAME] or request.auth.claims[NAME]")
	case !ok:
		errs.add(field, "unsupported key %s: the supported forms are request.headers[NAME] and request.auth.claims[NAME]", quote(key))
	case !names.IsHTTPToken(name):
		errs.add(field, "header name %s is not a valid HTTP header name (letters, digits and !#$%%&'*+-.^_`|~)", quote(name))
	}
}

// checkRequestPrincipal accepts ISSUER/SUBJECT or a pattern over it.
func checkRequestPrincipal(s string) string {
	if hasSpaceOrControl(s) {
		return noSpace(s)
	}
	if _, _, msg := parsePattern(s); msg != "" {
		return quote(s) + ": " + msg
	}
	return ""
}
