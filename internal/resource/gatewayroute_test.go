package resource

import (
	"strings"
	"testing"
)

func TestGatewayRouteValidation(t *testing.T) {
	mk := func(spec string) Object {
		objs, err := Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: GatewayRoute\nmetadata: {name: pub, namespace: shop}\nspec: "+spec+"\n"), "gr.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return objs[0]
	}
	ok := mk(`{hosts: [Shop.Example.com, "*.api.example.com"], rules: [{match: {pathPrefix: /api/}, service: frontend, rateLimit: {requestsPerSecond: 10}}, {service: web}]}`)
	if err := Validate(&ok); err != nil {
		t.Fatal(err)
	}
	spec, _ := GatewayRouteSpecOf(&ok)
	if spec.Hosts[0] != "shop.example.com" || spec.Rules[1].Match.PathPrefix != "/" {
		t.Errorf("defaults: %+v, want lower-case hosts and pathPrefix /", spec)
	}
	if rl := spec.Rules[0].RateLimit; rl.Burst != 10 || rl.Per != GatewayRateLimitPerRoute {
		t.Errorf("rate limit defaults: %+v", rl)
	}
	for _, tc := range []struct{ spec, field, msg string }{
		{`{rules: [{service: a}]}`, "spec.hosts", "required"},
		{`{hosts: [a.example], rules: []}`, "spec.rules", "required"},
		{`{hosts: ["bad host"], rules: [{service: a}]}`, "spec.hosts[0]", "DNS name"},
		{`{hosts: ["*"], rules: [{service: a}]}`, "spec.hosts[0]", "DNS name"},
		{`{hosts: [a.example], rules: [{service: A_b}]}`, "spec.rules[0].service", ""},
		{`{hosts: [a.example], rules: [{service: a, match: {pathPrefix: api}}]}`, "spec.rules[0].match.pathPrefix", "absolute path"},
		{`{hosts: [a.example], rules: [{service: a, match: {pathPrefix: "/a%2f"}}]}`, "spec.rules[0].match.pathPrefix", "percent"},
		{`{hosts: [a.example], rules: [{service: a, rateLimit: {requestsPerSecond: 0}}]}`, "spec.rules[0].rateLimit.requestsPerSecond", "from 1"},
		{`{hosts: [a.example], rules: [{service: a, rateLimit: {requestsPerSecond: 1, per: user}}]}`, "spec.rules[0].rateLimit.per", "route, caller"},
		{`{hosts: [a.example], gateways: [public], rules: [{service: a}]}`, "spec.gateways[0]", "SERVICE.NAMESPACE"},
		{`{hosts: [a.example], rules: [{service: a, path: /x}]}`, "spec.rules[0].path", ""},
	} {
		o := mk(tc.spec)
		if err := Validate(&o); err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want an error at %s mentioning %q", tc.spec, err, tc.field, tc.msg)
		}
	}
}
