package resource

import (
	"slices"
	"testing"
)

func TestRef(t *testing.T) {
	tests := []struct {
		o    Object
		want string
	}{
		{Object{Kind: KindAuthorizationPolicy, Metadata: Metadata{Name: "a", Namespace: "shop"}}, "AuthorizationPolicy shop/a"},
		{Object{Kind: KindAuthorizationPolicy, Metadata: Metadata{Name: "a"}}, "AuthorizationPolicy default/a"},
		{Object{Kind: KindMesh, Metadata: Metadata{Name: "default"}}, "Mesh default"},
		{Object{Kind: KindMesh, Metadata: Metadata{Name: "default", Namespace: "shop"}}, "Mesh default"},
		{Object{Kind: "VirtualService", Metadata: Metadata{Name: "r", Namespace: "shop"}}, "VirtualService shop/r"},
		{Object{Kind: KindRoute, Metadata: Metadata{Name: "r"}}, "Route default/r"},
		{Object{Kind: "VirtualService", Metadata: Metadata{Name: "r"}}, "VirtualService r"},
		{Object{Kind: KindAuthorizationPolicy, Metadata: Metadata{Namespace: "shop"}}, "AuthorizationPolicy shop/<unnamed>"},
		{Object{Metadata: Metadata{Name: "x"}}, "x"},
	}
	for _, tt := range tests {
		if got := tt.o.Ref(); got != tt.want {
			t.Errorf("Ref(%+v): got %q, want %q", tt.o, got, tt.want)
		}
	}
}

func TestLookupKind(t *testing.T) {
	tests := []struct {
		name string
		want string // "" for not found
	}{
		{"Mesh", KindMesh},
		{"mesh", KindMesh},
		{"MESH", KindMesh},
		{"meshes", KindMesh},
		{"AuthorizationPolicy", KindAuthorizationPolicy},
		{"authorizationpolicy", KindAuthorizationPolicy},
		{"authorizationpolicies", KindAuthorizationPolicy},
		{"authz", KindAuthorizationPolicy},
		{"Authz", KindAuthorizationPolicy},
		{"authzpolicy", KindAuthorizationPolicy},
		{"ap", KindAuthorizationPolicy},
		{"AP", KindAuthorizationPolicy},
		{"", ""},
		{"policy", ""},
		{"List", ""},
	}
	for _, tt := range tests {
		k, ok := LookupKind(tt.name)
		if got := k.Kind; got != tt.want || ok != (tt.want != "") {
			t.Errorf("LookupKind(%q): got %q, %v, want %q", tt.name, got, ok, tt.want)
		}
	}
}

func TestKinds(t *testing.T) {
	got := Kinds()
	want := []KindInfo{
		{Kind: "Mesh", Plural: "meshes", Aliases: []string{"mesh"}, Namespaced: false},
		{Kind: "AuthorizationPolicy", Plural: "authorizationpolicies", Aliases: []string{"authorizationpolicy", "authz", "authzpolicy", "ap"}, Namespaced: true},
		{Kind: "Intent", Plural: "intents", Aliases: []string{"intent"}, Namespaced: true},
		{Kind: "JWTAuthentication", Plural: "jwtauthentications", Aliases: []string{"jwtauthentication", "jwtauthn", "jwt"}, Namespaced: true},
		{Kind: "RateLimit", Plural: "ratelimits", Aliases: []string{"ratelimit", "rl"}, Namespaced: true},
		{Kind: "GatewayRoute", Plural: "gatewayroutes", Aliases: []string{"gatewayroute", "gwroute", "gr"}, Namespaced: true},
		{Kind: "EgressPolicy", Plural: "egresspolicies", Aliases: []string{"egresspolicy", "egress"}, Namespaced: true},
		{Kind: "TrafficPolicy", Plural: "trafficpolicies", Aliases: []string{"trafficpolicy", "tp"}, Namespaced: true},
		{Kind: "Route", Plural: "routes", Aliases: []string{"route", "rt"}, Namespaced: true},
	}
	if !slices.EqualFunc(got, want, func(a, b KindInfo) bool {
		return a.Kind == b.Kind && a.Plural == b.Plural && a.Namespaced == b.Namespaced && slices.Equal(a.Aliases, b.Aliases)
	}) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// Callers own what they get.
	got[1].Aliases[0] = "changed"
	if k, _ := LookupKind("authorizationpolicy"); k.Kind != KindAuthorizationPolicy {
		t.Errorf("changing Kinds() changed the registry")
	}
}
