package resource

import (
	"encoding/json"
	"errors"

	"github.com/trellismesh/trellis/internal/names"
)

// Validate checks o completely and, if it is valid, puts it in canonical
// form: the namespace of a namespaced object defaults to DefaultNamespace and
// Spec is rewritten as the defaulted spec in canonical JSON (fields in schema
// order, defaults explicit), so that equal objects are equal bytes.
//
// Validate reports every problem it finds, as a *ValidationError. It changes
// o only when o is valid.
func Validate(o *Object) error {
	if o == nil {
		return errors.New("resource.Validate: nil object")
	}
	var errs errorList
	if o.APIVersion != APIVersion {
		if o.APIVersion == "" {
			errs.add("apiVersion", "required; set it to %q", APIVersion)
		} else {
			errs.add("apiVersion", "must be %q, got %s", APIVersion, quote(o.APIVersion))
		}
	}
	k, known := kindNamed(o.Kind)
	if !known {
		checkKind(&errs, o.Kind)
	}
	meta := o.Metadata
	checkMetadata(&errs, &meta, k, known)

	var spec []byte
	if known {
		s := k.spec(&errs, o.Spec)
		if len(errs.errs) == 0 {
			var err error
			if spec, err = json.Marshal(s); err != nil {
				errs.add("spec", "%v", err)
			}
		}
	}
	if err := errs.err(o.Source, resourceRef(o)); err != nil {
		return err
	}
	o.Metadata.Namespace = meta.Namespace
	o.Spec = spec
	return nil
}

// checkKind explains why name is not a kind.
func checkKind(errs *errorList, name string) {
	if name == "" {
		errs.add("kind", "required; set it to one of %s", kindNames())
		return
	}
	if k, ok := LookupKind(name); ok {
		errs.add("kind", "unknown kind %s (did you mean %q?)", quote(name), k.Kind)
		return
	}
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.Kind
	}
	errs.add("kind", "unknown kind %s%s; known kinds: %s", quote(name), suggestion(name, names), kindNames())
}

// checkMetadata checks m, defaulting its namespace. k is o's kind if known.
func checkMetadata(errs *errorList, m *Metadata, k kind, known bool) {
	switch {
	case m.Name == "":
		errs.add("metadata.name", "required")
	case !names.IsDNSSubdomain(m.Name):
		errs.add("metadata.name", "%s %s", quote(m.Name), names.DNSSubdomainRule)
	case k.Kind == KindMesh && m.Name != "default":
		errs.add("metadata.name", "must be \"default\": a mesh has one Mesh resource, named \"default\"")
	}
	switch {
	case !known:
		if m.Namespace != "" && !names.IsDNSLabel(m.Namespace) {
			errs.add("metadata.namespace", "%s %s", quote(m.Namespace), names.DNSLabelRule)
		}
	case !k.Namespaced:
		if m.Namespace != "" {
			errs.add("metadata.namespace", "%s is cluster-scoped; remove metadata.namespace", k.Kind)
		}
	case m.Namespace == "":
		m.Namespace = DefaultNamespace
	case !names.IsDNSLabel(m.Namespace):
		errs.add("metadata.namespace", "%s %s", quote(m.Namespace), names.DNSLabelRule)
	}
	checkLabels(errs, "metadata.labels", m.Labels)
	for _, key := range sortedKeys(m.Annotations) {
		f := "metadata.annotations[" + key + "]"
		if !names.IsLabelKey(key) {
			errs.add(f, "invalid annotation key %s: %s", quote(key), names.LabelKeyRule)
		}
		if hasControl(m.Annotations[key], "\t\n\r") {
			errs.add(f, "annotation values must not contain control characters other than tab and line breaks")
		}
	}
	if hasControl(m.UID, "") {
		errs.add("metadata.uid", "must not contain control characters")
	}
	if hasControl(m.ResourceVersion, "") {
		errs.add("metadata.resourceVersion", "must not contain control characters")
	}
	if m.Generation < 0 {
		errs.add("metadata.generation", "must not be negative, got %d", m.Generation)
	}
}
