package resource

import (
	"strings"
	"testing"
)

func TestRouteValidation(t *testing.T) {
	mk := func(spec string) Object {
		objs, err := Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: Route\nmetadata: {name: catalog-canary, namespace: shop}\nspec: "+spec+"\n"), "route.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return objs[0]
	}
	// The example.
	ok := mk(`{service: catalog, rules: [
  {matches: [{path: {prefix: /items}, headers: {x-canary: "1"}}], backends: [{service: catalog-v2, weight: 100}]},
  {backends: [{service: catalog, weight: 90}, {service: catalog-v2, weight: 10}],
   mirror: {service: catalog-shadow, percent: 100},
   fault: {delay: {fixed: 100ms, percent: 5}, abort: {status: 503, percent: 1}},
   headers: {request: {set: {x-route: canary}}, response: {remove: [server]}}},
  {matches: [{grpc: {service: shop.Catalog, method: List}, method: post}]}]}`)
	if err := Validate(&ok); err != nil {
		t.Fatal(err)
	}
	withUnmatched := mk(`{service: catalog, rules: [{backends: [{service: a}]}], unmatched: {status: 404, grpcStatus: 12}}`)
	if err := Validate(&withUnmatched); err != nil {
		t.Fatal(err)
	}
	spec, _ := RouteSpecOf(&ok)
	if spec.Rules[2].Matches[0].Method != "POST" || spec.Rules[1].Mirror.PercentOf() != 100 || spec.Rules[0].Backends[0].WeightOf() != 100 {
		t.Errorf("canonical values and defaults: %+v", spec)
	}
	for _, tc := range []struct{ spec, field, msg string }{
		{`{rules: [{}]}`, "spec.service", "DNS label"},
		{`{service: catalog}`, "spec.rules", "required"},
		{`{service: catalog, rules: [{backends: [{service: a, weight: 1001}]}]}`, "spec.rules[0].backends[0].weight", "0 to 1000"},
		{`{service: catalog, rules: [{backends: [{service: a, weight: 0}]}]}`, "spec.rules[0].backends", "every weight is 0"},
		{`{service: catalog, rules: [{backends: [{service: A.b}]}]}`, "spec.rules[0].backends[0].service", "DNS label"},
		{`{service: catalog, rules: [{matches: [{path: {prefix: /a, exact: /b}}]}]}`, "spec.rules[0].matches[0].path", "exactly one"},
		{`{service: catalog, rules: [{matches: [{path: {regex: "("}}]}]}`, "spec.rules[0].matches[0].path.regex", "RE2"},
		{`{service: catalog, rules: [{matches: [{path: {prefix: items}}]}]}`, "spec.rules[0].matches[0].path.prefix", "absolute"},
		{`{service: catalog, rules: [{matches: [{grpc: {}}]}]}`, "spec.rules[0].matches[0].grpc", "service and/or method"},
		{`{service: catalog, rules: [{mirror: {service: s, percent: 101}}]}`, "spec.rules[0].mirror.percent", "0 to 100"},
		{`{service: catalog, rules: [{fault: {}}]}`, "spec.rules[0].fault", "delay or abort"},
		{`{service: catalog, rules: [{fault: {abort: {percent: 1}}}]}`, "spec.rules[0].fault.abort", "grpcStatus"},
		{`{service: catalog, rules: [{fault: {abort: {grpcStatus: 17, percent: 1}}}]}`, "spec.rules[0].fault.abort.grpcStatus", "1 to 16"},
		{`{service: catalog, rules: [{fault: {delay: {fixed: 2m, percent: 1}}}]}`, "spec.rules[0].fault.delay.fixed", "1ms to 1m"},
		{`{service: catalog, rules: [{headers: {request: {set: {host: x}}}}]}`, "spec.rules[0].headers.request", "may write"},
		{`{service: catalog, rules: [{}], unmatched: {status: 200}}`, "spec.unmatched.status", "400 to 599"},
		{`{service: catalog, rules: [{}], unmatched: {status: 404, grpcStatus: 0}}`, "spec.unmatched.grpcStatus", "1 to 16"},
	} {
		o := mk(tc.spec)
		if err := Validate(&o); err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want an error at %s mentioning %q", tc.spec, err, tc.field, tc.msg)
		}
	}
}
