package resource

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/trellismesh/trellis/internal/names"
)

// KindIntent is a client's declaration of what it calls (docs/learning.md).
const KindIntent = "Intent"

// IntentSpec is the spec of an Intent: the client, a service of the
// Intent's namespace, and the calls it makes. The control plane compiles
// every Intent that names a server into one generated AuthorizationPolicy
// for that server (CompileIntents).
type IntentSpec struct {
	Client IntentClient `json:"client"`
	// Enforcement of the policies this Intent contributes to: enforce
	// (default) or audit. A generated policy is in audit only while every
	// Intent that contributes to it is.
	Enforcement string       `json:"enforcement,omitempty"`
	Calls       []IntentCall `json:"calls"`
}

// IntentClient names the calling service, in the Intent's namespace.
type IntentClient struct {
	Service string `json:"service"`
}

// IntentCall is one service the client calls: "name" (the Intent's
// namespace) or "name.namespace". Without methods and paths, any request
// to it is declared.
type IntentCall struct {
	Service string   `json:"service"`
	Methods []string `json:"methods,omitempty"`
	Paths   []string `json:"paths,omitempty"`
}

// IntentSpecOf decodes, defaults and checks the spec of an Intent.
func IntentSpecOf(o *Object) (IntentSpec, error) {
	if o.Kind != KindIntent {
		return IntentSpec{}, fmt.Errorf("resource.IntentSpecOf: %s is not an %s", o.Ref(), KindIntent)
	}
	var errs errorList
	spec := intentSpec(&errs, o.Spec)
	if err := errs.err(o.Source, o.Ref()); err != nil {
		return IntentSpec{}, err
	}
	return spec, nil
}

func intentSpec(errs *errorList, raw json.RawMessage) IntentSpec {
	var s IntentSpec
	decodeSpec(errs, raw, &s)
	if s.Enforcement == "" {
		s.Enforcement = EnforcementEnforce
	}
	switch c := s.Client.Service; {
	case c == "" && !errs.failedAt("spec.client"):
		errs.add("spec.client.service", "required: the service of this namespace that makes the calls")
	case c != "" && !names.IsDNSLabel(c):
		errs.add("spec.client.service", "%s %s", quote(c), names.DNSLabelRule)
	}
	canonicalEnum(errs, "spec.enforcement", &s.Enforcement, EnforcementEnforce, EnforcementAudit)
	if len(s.Calls) == 0 && !errs.failedAt("spec.calls") {
		errs.add("spec.calls", "required: list the services the client calls, as in calls: [{service: catalog.shop}]")
	}
	for i, c := range s.Calls {
		f := fmt.Sprintf("spec.calls[%d]", i)
		if msg := checkIntentTarget(c.Service); msg != "" {
			errs.add(f+".service", "%s", msg)
		}
		checkStrings(errs, f+".methods", c.Methods, checkMethod)
		checkStrings(errs, f+".paths", c.Paths, checkPath)
	}
	return s
}

// checkIntentTarget accepts "name" or "name.namespace".
func checkIntentTarget(s string) string {
	if s == "" {
		return `required: the called service, "name" (this namespace) or "name.namespace"`
	}
	name, ns, dotted := strings.Cut(s, ".")
	switch {
	case !names.IsDNSLabel(name):
		return fmt.Sprintf("%s: service name %s %s", quote(s), quote(name), names.DNSLabelRule)
	case dotted && !names.IsDNSLabel(ns):
		return fmt.Sprintf("%s: namespace %s %s (write \"name\" or \"name.namespace\")", quote(s), quote(ns), names.DNSLabelRule)
	}
	return ""
}

// IntentTarget splits a call's service into its name and namespace;
// namespace is the Intent's own when the call names none.
func IntentTarget(service, namespace string) (name, ns string) {
	name, ns, dotted := strings.Cut(service, ".")
	if !dotted {
		ns = namespace
	}
	return name, ns
}
