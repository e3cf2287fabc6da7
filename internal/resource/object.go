package resource

import (
	"encoding/json"
	"time"
)

// APIVersion is the API version of every Trellis resource.
const APIVersion = "trellis.dev/v1alpha1"

// DefaultNamespace is the namespace Validate gives a namespaced object that
// names none.
const DefaultNamespace = "default"

// Metadata identifies an object and carries its labels and annotations. Name,
// Namespace, Labels and Annotations are written by users; the other fields are
// set by the control plane's store.
type Metadata struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	UID               string            `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp *time.Time        `json:"creationTimestamp,omitempty"`
	UpdateTimestamp   *time.Time        `json:"updateTimestamp,omitempty"`
}

// Object is one resource as written in a file or kept in the store. The
// envelope is typed; the spec stays JSON until a kind's accessor (MeshSpecOf,
// AuthorizationPolicySpecOf) decodes it. After Validate succeeds, Spec holds
// the canonical, defaulted form of the spec.
type Object struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   Metadata        `json:"metadata"`
	Spec       json.RawMessage `json:"spec,omitempty"`
	// Source says where the object came from, such as "policies.yaml#2"
	// (the second document of policies.yaml), for error messages.
	Source string `json:"-"`
}

// Ref names the object for people: "AuthorizationPolicy shop/name", or
// "Mesh default" for cluster-scoped kinds. A namespaced object without a
// namespace shows the namespace Validate will give it.
func (o *Object) Ref() string {
	name := o.Metadata.Name
	if name == "" {
		name = "<unnamed>"
	}
	ns := o.Metadata.Namespace
	if k, ok := kindNamed(o.Kind); ok {
		switch {
		case !k.Namespaced:
			ns = ""
		case ns == "":
			ns = DefaultNamespace
		}
	}
	ref := name
	if ns != "" {
		ref = ns + "/" + name
	}
	if o.Kind == "" {
		return ref
	}
	return o.Kind + " " + ref
}
