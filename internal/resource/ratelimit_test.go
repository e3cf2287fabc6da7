package resource

import (
	"strings"
	"testing"
)

func TestRateLimitValidation(t *testing.T) {
	mk := func(spec string) Object {
		objs, err := Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: RateLimit\nmetadata: {name: rl, namespace: shop}\nspec: "+spec+"\n"), "rl.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return objs[0]
	}
	ok := mk(`{selector: {service: catalog}, requestsPerSecond: 100}`)
	if err := Validate(&ok); err != nil {
		t.Fatal(err)
	}
	spec, _ := RateLimitSpecOf(&ok)
	if spec.Burst != 100 || spec.Per != RateLimitPerCaller {
		t.Errorf("defaults: %+v, want burst 100 and per caller", spec)
	}
	for _, tc := range []struct{ spec, field, msg string }{
		{`{}`, "spec.requestsPerSecond", "required"},
		{`{requestsPerSecond: 0}`, "spec.requestsPerSecond", "from 1"},
		{`{requestsPerSecond: 5, burst: -1}`, "spec.burst", "from 1"},
		{`{requestsPerSecond: 5, per: user}`, "spec.per", "caller, workload"},
		{`{requestsPerSecond: "5"}`, "spec.requestsPerSecond", ""},
	} {
		o := mk(tc.spec)
		if err := Validate(&o); err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want an error at %s mentioning %q", tc.spec, err, tc.field, tc.msg)
		}
	}
}
