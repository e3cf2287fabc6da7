package resource

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func intentObject(ns, name, spec string) Object {
	objs, err := Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: Intent\nmetadata: {name: "+name+", namespace: "+ns+"}\nspec: "+spec+"\n"), "intent.yaml")
	if err != nil {
		panic(err)
	}
	return objs[0]
}

func TestIntentValidation(t *testing.T) {
	ok := intentObject("shop", "frontend", `{client: {service: frontend}, calls: [{service: catalog.shop, methods: [GET], paths: ["/items", "/items/*"]}, {service: payments}]}`)
	if err := Validate(&ok); err != nil {
		t.Fatalf("valid intent refused: %v", err)
	}
	spec, err := IntentSpecOf(&ok)
	if err != nil || spec.Enforcement != EnforcementEnforce {
		t.Fatalf("spec %+v, err %v: want enforcement defaulted to enforce", spec, err)
	}
	for _, tc := range []struct{ spec, field, msg string }{
		{`{calls: [{service: a}]}`, "spec.client.service", "required"},
		{`{client: {service: Front}, calls: [{service: a}]}`, "spec.client.service", "DNS"},
		{`{client: {service: f}}`, "spec.calls", "required"},
		{`{client: {service: f}, calls: [{service: ""}]}`, "spec.calls[0].service", "required"},
		{`{client: {service: f}, calls: [{service: "a.B_c"}]}`, "spec.calls[0].service", "namespace"},
		{`{client: {service: f}, calls: [{service: a, methods: [get]}]}`, "spec.calls[0].methods", "upper case"},
		{`{client: {service: f}, calls: [{service: a, paths: [items]}]}`, "spec.calls[0].paths", "start with"},
		{`{client: {service: f}, enforcement: shadow, calls: [{service: a}]}`, "spec.enforcement", "enforce"},
		{`{client: {service: f}, calls: [{service: a, port: 80}]}`, "spec.calls[0].port", "unknown field"},
	} {
		o := intentObject("shop", "x", tc.spec)
		err := Validate(&o)
		if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("spec %s: got %v, want an error at %s mentioning %q", tc.spec, err, tc.field, tc.msg)
		}
	}
}

func TestCompileIntents(t *testing.T) {
	t1 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	in := []Object{
		intentObject("shop", "frontend", `{client: {service: frontend}, calls: [{service: catalog, methods: [GET], paths: ["/items", "/items/*"]}, {service: payments.pay}]}`),
		intentObject("shop", "checkout", `{client: {service: checkout}, enforcement: audit, calls: [{service: payments.pay, methods: [POST]}]}`),
		intentObject("ops", "batch", `{client: {service: batch}, enforcement: audit, calls: [{service: catalog.shop}]}`),
	}
	for i := range in {
		if err := Validate(&in[i]); err != nil {
			t.Fatal(err)
		}
	}
	in[0].Metadata.ResourceVersion, in[0].Metadata.CreationTimestamp, in[0].Metadata.UpdateTimestamp = "7", &t2, &t2
	in[1].Metadata.ResourceVersion, in[1].Metadata.CreationTimestamp, in[1].Metadata.UpdateTimestamp = "9", &t1, &t1
	in[2].Metadata.ResourceVersion = "3"

	out := CompileIntents(in)
	if len(out) != 2 {
		t.Fatalf("got %d policies, want 2 (catalog.shop and payments.pay)", len(out))
	}
	// Sorted by namespace then service: pay/payments, shop/catalog.
	pay, cat := out[0], out[1]
	if pay.Metadata.Namespace != "pay" || pay.Metadata.Name != "intents-payments" || cat.Metadata.Namespace != "shop" || cat.Metadata.Name != "intents-catalog" {
		t.Fatalf("got %s and %s", pay.Ref(), cat.Ref())
	}
	for _, o := range out {
		if err := Validate(&o); err != nil {
			t.Errorf("%s does not validate: %v", o.Ref(), err)
		}
		if !IsGenerated(&o) || !IsGeneratedPolicyName(o.Metadata.Name) {
			t.Errorf("%s not marked generated: %+v", o.Ref(), o.Metadata)
		}
	}
	cs, _ := AuthorizationPolicySpecOf(&cat)
	if cs.Selector.Service != "catalog" || cs.Action != ActionAllow || cs.Enforcement != EnforcementEnforce || len(cs.Rules) != 2 {
		t.Fatalf("catalog policy %+v", cs)
	}
	// Rules follow the Intents' order: ops/batch, then shop/frontend.
	if got := RuleSources(&cat); !slices.Equal(got, []string{"ops/batch", "shop/frontend"}) {
		t.Errorf("catalog rule sources %v", got)
	}
	r := cs.Rules[1]
	if !slices.Equal(r.From[0].Services, []string{"frontend"}) || !slices.Equal(r.From[0].Namespaces, []string{"shop"}) ||
		!slices.Equal(r.To[0].Methods, []string{"GET"}) || !slices.Equal(r.To[0].Paths, []string{"/items", "/items/*"}) {
		t.Errorf("frontend's rule %+v", r)
	}
	if len(cs.Rules[0].To) != 0 {
		t.Errorf("a call without methods or paths must allow any request: %+v", cs.Rules[0])
	}
	ps, _ := AuthorizationPolicySpecOf(&pay)
	if ps.Enforcement != EnforcementEnforce {
		t.Errorf("payments: one enforcing intent (frontend) must make the policy enforce, got %s", ps.Enforcement)
	}
	if pay.Metadata.ResourceVersion != "9" || !pay.Metadata.CreationTimestamp.Equal(t1) || !pay.Metadata.UpdateTimestamp.Equal(t2) {
		t.Errorf("payments metadata %+v: want the newest resourceVersion and update, the oldest creation", pay.Metadata)
	}
	// Audit only when every contributor is.
	audit := CompileIntents(in[1:2])
	if s, _ := AuthorizationPolicySpecOf(&audit[0]); s.Enforcement != EnforcementAudit {
		t.Errorf("only audit intents: got %s", s.Enforcement)
	}
	// Deterministic: the same input gives the same bytes.
	again := CompileIntents([]Object{in[2], in[1], in[0]})
	for i := range out {
		if string(out[i].Spec) != string(again[i].Spec) || out[i].Metadata.Annotations[AnnotationRuleSources] != again[i].Metadata.Annotations[AnnotationRuleSources] {
			t.Errorf("order of input changed %s", out[i].Ref())
		}
	}
	if CompileIntents(nil) == nil || len(CompileIntents(nil)) != 0 {
		t.Error("no intents: want an empty list")
	}
}
