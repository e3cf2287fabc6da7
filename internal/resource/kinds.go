package resource

import (
	"encoding/json"
	"slices"
	"strings"
)

// Kind names.
const (
	KindMesh                = "Mesh"
	KindAuthorizationPolicy = "AuthorizationPolicy"
)

// KindInfo describes a kind of resource.
type KindInfo struct {
	Kind       string   // as written in an object's kind field, e.g. "AuthorizationPolicy"
	Plural     string   // lower-case plural, e.g. "authorizationpolicies"
	Aliases    []string // other names the CLI accepts, lower case
	Namespaced bool     // false for cluster-scoped kinds such as Mesh
}

// kind is a KindInfo plus what Validate needs to check its spec.
type kind struct {
	KindInfo
	// spec decodes raw strictly, applies defaults and checks the result,
	// adding problems to errs. It returns the spec to store.
	spec func(errs *errorList, raw json.RawMessage) any
}

var kinds = []kind{
	{
		KindInfo: KindInfo{Kind: KindMesh, Plural: "meshes", Aliases: []string{"mesh"}},
		spec:     func(errs *errorList, raw json.RawMessage) any { return meshSpec(errs, raw) },
	},
	{
		KindInfo: KindInfo{
			Kind:       KindAuthorizationPolicy,
			Plural:     "authorizationpolicies",
			Aliases:    []string{"authorizationpolicy", "authz", "authzpolicy", "ap"},
			Namespaced: true,
		},
		spec: func(errs *errorList, raw json.RawMessage) any { return authorizationPolicySpec(errs, raw) },
	},
	{
		KindInfo: KindInfo{
			Kind:       KindIntent,
			Plural:     "intents",
			Aliases:    []string{"intent"},
			Namespaced: true,
		},
		spec: func(errs *errorList, raw json.RawMessage) any { return intentSpec(errs, raw) },
	},
	{
		KindInfo: KindInfo{
			Kind:       KindJWTAuthentication,
			Plural:     "jwtauthentications",
			Aliases:    []string{"jwtauthentication", "jwtauthn", "jwt"},
			Namespaced: true,
		},
		spec: func(errs *errorList, raw json.RawMessage) any { return jwtAuthenticationSpec(errs, raw) },
	},
	{
		KindInfo: KindInfo{
			Kind:       KindRateLimit,
			Plural:     "ratelimits",
			Aliases:    []string{"ratelimit", "rl"},
			Namespaced: true,
		},
		spec: func(errs *errorList, raw json.RawMessage) any { return rateLimitSpec(errs, raw) },
	},
	{
		KindInfo: KindInfo{
			Kind:       KindGatewayRoute,
			Plural:     "gatewayroutes",
			Aliases:    []string{"gatewayroute", "gwroute", "gr"},
			Namespaced: true,
		},
		spec: func(errs *errorList, raw json.RawMessage) any { return gatewayRouteSpec(errs, raw) },
	},
	{
		KindInfo: KindInfo{
			Kind:       KindEgressPolicy,
			Plural:     "egresspolicies",
			Aliases:    []string{"egresspolicy", "egress"},
			Namespaced: true,
		},
		spec: func(errs *errorList, raw json.RawMessage) any { return egressPolicySpec(errs, raw) },
	},
	{
		KindInfo: KindInfo{
			Kind:       KindTrafficPolicy,
			Plural:     "trafficpolicies",
			Aliases:    []string{"trafficpolicy", "tp"},
			Namespaced: true,
		},
		spec: func(errs *errorList, raw json.RawMessage) any { return trafficPolicySpec(errs, raw) },
	},
	{
		KindInfo: KindInfo{
			Kind:       KindRoute,
			Plural:     "routes",
			Aliases:    []string{"route", "rt"},
			Namespaced: true,
		},
		spec: func(errs *errorList, raw json.RawMessage) any { return routeSpec(errs, raw) },
	},
}

// Kinds returns every kind Trellis knows, in a stable order. The caller owns
// the returned slice.
func Kinds() []KindInfo {
	out := make([]KindInfo, len(kinds))
	for i, k := range kinds {
		out[i] = k.info()
	}
	return out
}

// LookupKind finds a kind by its name, plural or an alias, ignoring case, as
// typed on a command line ("authz", "meshes", "AuthorizationPolicy").
func LookupKind(name string) (KindInfo, bool) {
	for _, k := range kinds {
		if strings.EqualFold(name, k.Kind) || strings.EqualFold(name, k.Plural) ||
			slices.ContainsFunc(k.Aliases, func(a string) bool { return strings.EqualFold(name, a) }) {
			return k.info(), true
		}
	}
	return KindInfo{}, false
}

// info returns a copy of k's KindInfo that shares nothing with k.
func (k kind) info() KindInfo {
	i := k.KindInfo
	i.Aliases = slices.Clone(i.Aliases)
	return i
}

// kindNamed finds a kind by its exact name, as an object's kind field must
// spell it.
func kindNamed(name string) (kind, bool) {
	for _, k := range kinds {
		if k.Kind == name {
			return k, true
		}
	}
	return kind{}, false
}

// kindNames lists the known kinds for error messages.
func kindNames() string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.Kind
	}
	return strings.Join(names, ", ")
}
