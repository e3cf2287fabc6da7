// Package resource is the Kubernetes-style resource model shared by the
// control plane, the CLI and the policy engine: the envelope every resource is
// written in (Object), decoding of YAML and JSON files into objects (Decode),
// the kinds Trellis knows (Kinds, LookupKind), their typed specs, defaults,
// and validation (Validate).
//
// Validation is the single gate: it checks the envelope, decodes the spec
// strictly (unknown fields and type mismatches are errors naming the field),
// applies defaults and rewrites the spec in its canonical JSON form, so that
// stored objects compare and hash byte for byte. Every problem in an object is
// reported at once, each naming the source, the resource and the field.
//
// The package depends only on the standard library, sigs.k8s.io/yaml and
// go-spiffe's spiffeid, so any role (proxy included) may import it.
package resource
