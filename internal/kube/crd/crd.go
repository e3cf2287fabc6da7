// Package crd generates the CustomResourceDefinitions of Kubernetes mode
// (group trellis.dev, version v1alpha1) from the same Go types
// internal/resource decodes and validates: one CRD per resource kind, with
// an OpenAPI v3 schema walked from the spec type's fields and JSON names,
// printer columns, and a status subresource carrying observedGeneration
// and an Accepted condition.
//
// The schema is structural and deliberately loose where the validator is
// the judge: enum values are accepted in any case and canonicalized by
// validation (docs/policy.md), so the schema types them as strings, and
// the validating webhook answers with the validator's field-path messages.
//
// It must not depend on the control plane, the store, the proxy or the
// data plane; it needs only internal/resource and the apiextensions types.
package crd

import (
	"fmt"
	"reflect"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/resource"
)

// Group and Version of every Trellis resource (resource.APIVersion).
const (
	Group   = "trellis.dev"
	Version = "v1alpha1"
)

// ConditionAccepted is the condition the control plane sets on every
// object: True when the validator accepted its current generation, False
// with the validator's message when not (the proxies then keep the last
// accepted version).
const ConditionAccepted = "Accepted"

// specTypes maps each resource kind to the Go type of its spec.
var specTypes = map[string]reflect.Type{
	resource.KindMesh:                reflect.TypeFor[resource.MeshSpec](),
	resource.KindAuthorizationPolicy: reflect.TypeFor[resource.AuthorizationPolicySpec](),
	resource.KindIntent:              reflect.TypeFor[resource.IntentSpec](),
	resource.KindJWTAuthentication:   reflect.TypeFor[resource.JWTAuthenticationSpec](),
	resource.KindRateLimit:           reflect.TypeFor[resource.RateLimitSpec](),
	resource.KindGatewayRoute:        reflect.TypeFor[resource.GatewayRouteSpec](),
	resource.KindEgressPolicy:        reflect.TypeFor[resource.EgressPolicySpec](),
	resource.KindTrafficPolicy:       reflect.TypeFor[resource.TrafficPolicySpec](),
	resource.KindRoute:               reflect.TypeFor[resource.RouteSpec](),
}

// columns are each kind's printer columns (kubectl get), before the
// Accepted and Age columns every kind has.
var columns = map[string][]apiextensionsv1.CustomResourceColumnDefinition{
	resource.KindMesh: {
		{Name: "mTLS", Type: "string", JSONPath: ".spec.mtls.mode"},
		{Name: "Default", Type: "string", JSONPath: ".spec.authorization.default"},
	},
	resource.KindAuthorizationPolicy: {
		{Name: "Action", Type: "string", JSONPath: ".spec.action"},
		{Name: "Enforcement", Type: "string", JSONPath: ".spec.enforcement"},
		{Name: "Service", Type: "string", JSONPath: ".spec.selector.service"},
	},
	resource.KindIntent: {
		{Name: "Client", Type: "string", JSONPath: ".spec.client.service"},
		{Name: "Enforcement", Type: "string", JSONPath: ".spec.enforcement"},
	},
	resource.KindJWTAuthentication: {
		{Name: "Service", Type: "string", JSONPath: ".spec.selector.service"},
	},
	resource.KindRateLimit: {
		{Name: "Service", Type: "string", JSONPath: ".spec.selector.service"},
		{Name: "RPS", Type: "integer", JSONPath: ".spec.requestsPerSecond"},
		{Name: "Per", Type: "string", JSONPath: ".spec.per"},
	},
	resource.KindGatewayRoute: {
		{Name: "Hosts", Type: "string", JSONPath: ".spec.hosts"},
	},
	resource.KindEgressPolicy: {
		{Name: "Service", Type: "string", JSONPath: ".spec.selector.service"},
		{Name: "Host", Type: "string", JSONPath: ".spec.hosts[0].name"},
	},
	resource.KindTrafficPolicy: {
		{Name: "Service", Type: "string", JSONPath: ".spec.selector.service"},
		{Name: "Timeout", Type: "string", JSONPath: ".spec.timeout"},
		{Name: "LB", Type: "string", JSONPath: ".spec.loadBalancer.policy"},
	},
	resource.KindRoute: {
		{Name: "Service", Type: "string", JSONPath: ".spec.service"},
	},
}

// All returns the CRD of every resource kind, in resource.Kinds' order.
func All() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, k := range resource.Kinds() {
		c, err := For(k)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// For returns the CRD of one kind.
func For(k resource.KindInfo) (*apiextensionsv1.CustomResourceDefinition, error) {
	t, ok := specTypes[k.Kind]
	if !ok {
		return nil, fmt.Errorf("crd: kind %s has no spec type: add it to specTypes", k.Kind)
	}
	spec, err := schemaOf(t, "spec")
	if err != nil {
		return nil, err
	}
	scope := apiextensionsv1.ClusterScoped
	if k.Namespaced {
		scope = apiextensionsv1.NamespaceScoped
	}
	singular := strings.ToLower(k.Kind)
	var short []string
	for _, a := range k.Aliases {
		if a != singular && a != k.Plural {
			short = append(short, a)
		}
	}
	cols := append(columns[k.Kind],
		apiextensionsv1.CustomResourceColumnDefinition{Name: ConditionAccepted, Type: "string", JSONPath: `.status.conditions[?(@.type=="Accepted")].status`},
		apiextensionsv1.CustomResourceColumnDefinition{Name: "Age", Type: "date", JSONPath: ".metadata.creationTimestamp"})
	return &apiextensionsv1.CustomResourceDefinition{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"},
		ObjectMeta: metav1.ObjectMeta{Name: k.Plural + "." + Group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: Group,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Kind: k.Kind, ListKind: k.Kind + "List", Plural: k.Plural, Singular: singular, ShortNames: short,
				Categories: []string{"trellis"},
			},
			Scope: scope,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: Version, Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type:        "object",
					Description: k.Kind + " of the Trellis service mesh (docs/policy.md). The control plane's validating webhook checks it with the same messages as trellis apply.",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"apiVersion": {Type: "string"},
						"kind":       {Type: "string"},
						"metadata":   {Type: "object"},
						"spec":       spec,
						"status":     statusSchema(),
					},
				}},
				Subresources:             &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
				AdditionalPrinterColumns: cols,
			}},
		},
	}, nil
}

// statusSchema is the status every kind has: the generation the control
// plane last judged and its conditions (metav1.Condition).
func statusSchema() apiextensionsv1.JSONSchemaProps {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	return apiextensionsv1.JSONSchemaProps{
		Type: "object",
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"observedGeneration": {Type: "integer", Format: "int64"},
			"conditions": {
				Type:         "array",
				XListType:    ptr("map"),
				XListMapKeys: []string{"type"},
				Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &apiextensionsv1.JSONSchemaProps{
					Type:     "object",
					Required: []string{"type", "status"},
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"type":               str,
						"status":             {Type: "string", Enum: []apiextensionsv1.JSON{{Raw: []byte(`"True"`)}, {Raw: []byte(`"False"`)}, {Raw: []byte(`"Unknown"`)}}},
						"reason":             str,
						"message":            str,
						"observedGeneration": {Type: "integer", Format: "int64"},
						"lastTransitionTime": {Type: "string", Format: "date-time"},
					},
				}},
			},
		},
	}
}

var (
	portType     = reflect.TypeFor[resource.Port]()
	durationType = reflect.TypeFor[resource.Duration]()
)

// schemaOf walks a Go type as encoding/json sees it.
func schemaOf(t reflect.Type, path string) (apiextensionsv1.JSONSchemaProps, error) {
	switch t {
	case portType:
		// A number, or a numeric string (resource.Port).
		return apiextensionsv1.JSONSchemaProps{XIntOrString: true, AnyOf: []apiextensionsv1.JSONSchemaProps{{Type: "integer"}, {Type: "string"}}}, nil
	case durationType:
		return apiextensionsv1.JSONSchemaProps{Type: "string", Description: "a duration such as 24h or 90m"}, nil
	}
	switch t.Kind() {
	case reflect.String:
		return apiextensionsv1.JSONSchemaProps{Type: "string"}, nil
	case reflect.Bool:
		return apiextensionsv1.JSONSchemaProps{Type: "boolean"}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return apiextensionsv1.JSONSchemaProps{Type: "integer"}, nil
	case reflect.Float32, reflect.Float64:
		return apiextensionsv1.JSONSchemaProps{Type: "number"}, nil
	case reflect.Slice:
		items, err := schemaOf(t.Elem(), path+"[]")
		if err != nil {
			return apiextensionsv1.JSONSchemaProps{}, err
		}
		return apiextensionsv1.JSONSchemaProps{Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &items}}, nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return apiextensionsv1.JSONSchemaProps{}, fmt.Errorf("crd: %s: map keys must be strings, got %s", path, t.Key())
		}
		v, err := schemaOf(t.Elem(), path+"{}")
		if err != nil {
			return apiextensionsv1.JSONSchemaProps{}, err
		}
		return apiextensionsv1.JSONSchemaProps{Type: "object", AdditionalProperties: &apiextensionsv1.JSONSchemaPropsOrBool{Allows: true, Schema: &v}}, nil
	case reflect.Struct:
		props := map[string]apiextensionsv1.JSONSchemaProps{}
		names, index := resource.JSONFieldNames(t)
		for i, name := range names {
			p, err := schemaOf(t.Field(index[i]).Type, path+"."+name)
			if err != nil {
				return apiextensionsv1.JSONSchemaProps{}, err
			}
			props[name] = p
		}
		return apiextensionsv1.JSONSchemaProps{Type: "object", Properties: props}, nil
	case reflect.Pointer:
		return schemaOf(t.Elem(), path)
	}
	return apiextensionsv1.JSONSchemaProps{}, fmt.Errorf("crd: %s: no schema for Go type %s", path, t)
}

func ptr[T any](v T) *T { return &v }
