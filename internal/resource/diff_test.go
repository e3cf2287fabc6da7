package resource

import (
	"reflect"
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	valid := func(t *testing.T, o Object) *Object {
		t.Helper()
		if err := Validate(&o); err != nil {
			t.Fatal(err)
		}
		return &o
	}
	labeled := func(o Object, labels, annotations map[string]string) Object {
		o.Metadata.Labels, o.Metadata.Annotations = labels, annotations
		return o
	}
	rules := "rules: [{from: [{principals: ['spiffe://trellis.local/ns/shop/sa/web']}], to: [{methods: [GET], paths: ['/items/*']}]}]"
	tests := []struct {
		name       string
		prev, next Object
		want       []FieldChange
	}{
		{
			name: "same",
			prev: policy("{" + rules + "}"),
			next: policy("{action: allow, enforcement: ENFORCE, " + rules + "}"),
		},
		{
			name: "scalar list compared whole",
			prev: policy("{" + rules + "}"),
			next: policy("{" + strings.Replace(rules, "[GET]", "[GET, POST]", 1) + "}"),
			want: []FieldChange{{Field: "spec.rules[0].to[0].methods", Old: "[GET]", New: "[GET, POST]"}},
		},
		{
			name: "several fields in schema order",
			prev: policy("{" + rules + "}"),
			next: policy("{selector: {service: catalog}, action: DENY, enforcement: audit, " + strings.Replace(rules, "web", "admin", 1) + "}"),
			want: []FieldChange{
				{Field: "spec.selector.service", New: "catalog"},
				{Field: "spec.action", Old: "ALLOW", New: "DENY"},
				{Field: "spec.enforcement", Old: "enforce", New: "audit"},
				{Field: "spec.rules[0].from[0].principals", Old: "[spiffe://trellis.local/ns/shop/sa/web]", New: "[spiffe://trellis.local/ns/shop/sa/admin]"},
			},
		},
		{
			name: "rule added and removed",
			prev: policy("{rules: [{to: [{ports: [8080]}]}]}"),
			next: policy("{rules: [{to: [{ports: [8080, 9090]}]}, {when: [{key: 'request.headers[x-a]', values: ['a, b', ' x']}]}]}"),
			want: []FieldChange{
				{Field: "spec.rules[0].to[0].ports", Old: "[8080]", New: "[8080, 9090]"},
				{Field: "spec.rules[1]", New: `{when: [{key: "request.headers[x-a]", values: ["a, b", " x"]}]}`},
			},
		},
		{
			name: "rules removed",
			prev: policy("{rules: [{}, {to: [{hosts: ['*.shop']}]}]}"),
			next: policy("{}"),
			want: []FieldChange{
				{Field: "spec.rules[0]", Old: "{}"},
				{Field: "spec.rules[1]", Old: "{to: [{hosts: [*.shop]}]}"},
			},
		},
		{
			name: "labels, annotations and matchLabels by key",
			prev: labeled(policy("{selector: {matchLabels: {tier: web, app: a}}}"), map[string]string{"team": "shop", "x": ""}, nil),
			next: labeled(policy("{selector: {matchLabels: {tier: backend, app: a}}}"), map[string]string{"team": "shop", "env": "prod"}, map[string]string{"note": "hi: there"}),
			want: []FieldChange{
				{Field: "metadata.labels[env]", New: "prod"},
				{Field: "metadata.labels[x]", Old: `""`},
				{Field: "metadata.annotations[note]", New: `"hi: there"`},
				{Field: "spec.selector.matchLabels[tier]", Old: "web", New: "backend"},
			},
		},
		{
			name: "mesh fields left out take their defaults",
			prev: mesh("{mtls: {mode: PERMISSIVE}, authorization: {default: allow, hidePolicy: true}, outbound: {mode: block}, certificates: {workloadTTL: 12h}}"),
			next: mesh("{certificates: {workloadTTL: 90m}}"),
			want: []FieldChange{
				{Field: "spec.mtls.mode", Old: "PERMISSIVE", New: "STRICT"},
				{Field: "spec.authorization.default", Old: "allow", New: "deny"},
				{Field: "spec.authorization.hidePolicy", Old: "true", New: "false"},
				{Field: "spec.certificates.workloadTTL", Old: "12h", New: "1h30m"},
				{Field: "spec.outbound.mode", Old: "block", New: "passthrough"},
			},
		},
		{
			name: "mesh written in another case",
			prev: mesh("{}"),
			next: mesh("{mtls: {mode: strict}, authorization: {default: DENY}}"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Diff(valid(t, tt.prev), valid(t, tt.next))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestDiffErrors(t *testing.T) {
	p, m := policy("{}"), mesh("{}")
	bad := mesh("{mtls: {mode: DISABLE}}")
	for _, tt := range []struct {
		name       string
		prev, next *Object
		want       string
	}{
		{"kinds differ", &p, &m, "resource.Diff: AuthorizationPolicy shop/p and Mesh default are of different kinds"},
		{"invalid spec", &m, &bad, `resource.Diff: Mesh default: spec.mtls.mode: must be one of STRICT, PERMISSIVE (in any case), got "DISABLE"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Diff(tt.prev, tt.next); errString(err) != tt.want {
				t.Errorf("got %v, want %s", err, tt.want)
			}
		})
	}
}

func TestSets(t *testing.T) {
	o := mesh("{mtls: {mode: permissive}, authorization: {default: null}, outbound: {mode: ''}, certificates: {}}")
	for _, tt := range []struct {
		field string
		want  bool
	}{
		{"spec.mtls.mode", true},
		{"spec.mtls", true},
		{"spec.authorization.default", false},
		{"spec.outbound.mode", false},
		{"spec.certificates.workloadTTL", false},
		{"spec.mtls.mode.x", false},
		{"metadata.name", false},
	} {
		if got := o.Sets(tt.field); got != tt.want {
			t.Errorf("Sets(%q): got %v, want %v", tt.field, got, tt.want)
		}
	}
	if empty := mesh("null"); empty.Sets("spec.mtls.mode") {
		t.Errorf("Sets on a null spec: got true, want false")
	}
}
