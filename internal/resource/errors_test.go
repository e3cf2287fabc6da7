package resource

import "testing"

func TestValidationErrorString(t *testing.T) {
	fes := []FieldError{
		{Field: "spec.rules[0].to[0].methods[1]", Message: `"GTE" is not an HTTP method`},
		{Message: "whole document"},
	}
	tests := []struct {
		err  ValidationError
		want string
	}{
		{
			ValidationError{Source: "policies.yaml#2", Resource: "AuthorizationPolicy shop/x", Errors: fes},
			"policies.yaml#2: AuthorizationPolicy shop/x: spec.rules[0].to[0].methods[1]: \"GTE\" is not an HTTP method\n" +
				"policies.yaml#2: AuthorizationPolicy shop/x: whole document",
		},
		{
			ValidationError{Resource: "AuthorizationPolicy shop/x", Errors: fes[:1]},
			`AuthorizationPolicy shop/x: spec.rules[0].to[0].methods[1]: "GTE" is not an HTTP method`,
		},
		{ValidationError{Source: "a.yaml#1", Errors: fes[1:]}, "a.yaml#1: whole document"},
		{ValidationError{Resource: "Mesh default"}, "Mesh default: invalid"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestSuggestion(t *testing.T) {
	fields := []string{"principals", "notPrincipals", "namespaces", "notNamespaces"}
	tests := []struct {
		name, want string
	}{
		{"princpals", ` (did you mean "principals"?)`},
		{"Principals", ` (did you mean "principals"?)`},
		{"notprincipal", ` (did you mean "notPrincipals"?)`},
		{"namespace", ` (did you mean "namespaces"?)`},
		{"hosts", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := suggestion(tt.name, fields); got != tt.want {
			t.Errorf("suggestion(%q): got %q, want %q", tt.name, got, tt.want)
		}
	}
}
