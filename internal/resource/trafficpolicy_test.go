package resource

import (
	"strings"
	"testing"
	"time"
)

func TestTrafficPolicyValidation(t *testing.T) {
	mk := func(spec string) Object {
		objs, err := Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: catalog, namespace: shop}\nspec: "+spec+"\n"), "tp.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return objs[0]
	}
	ok := mk(`{selector: {service: catalog}, timeout: 2s, retries: {attempts: 3, perTryTimeout: 500ms, on: [5xx, Reset, connect-failure], budget: {ratio: 0.2, minPerSecond: 10}},
  circuitBreaker: {maxConnections: 1024, maxPendingRequests: 1024}, outlierDetection: {consecutive5xx: 5, baseEjectionTime: 30s, maxEjectedPercent: 50},
  loadBalancer: {policy: peak-ewma}}`)
	if err := Validate(&ok); err != nil {
		t.Fatal(err)
	}
	spec, _ := TrafficPolicySpecOf(&ok)
	if spec.Retries.On[1] != RetryOnReset || spec.OutlierDetection.MaxEjectionTime.Duration != 5*time.Minute {
		t.Errorf("canonical values and defaults: %+v %+v", spec.Retries, spec.OutlierDetection)
	}
	def := mk(`{retries: {attempts: 2}}`)
	spec, err := TrafficPolicySpecOf(&def)
	if err != nil || len(spec.Retries.On) != 4 || spec.Retries.Budget.Ratio != 0.2 || spec.Retries.Budget.MinPerSecond != 10 {
		t.Errorf("retry defaults: %+v %v", spec.Retries, err)
	}
	for _, tc := range []struct{ spec, field, msg string }{
		{`{selector: {matchLabels: {a: b}}}`, "spec.selector.matchLabels", "destination service"},
		{`{timeout: 2h}`, "spec.timeout", "from 0s to 1h"},
		{`{retries: {attempts: 11}}`, "spec.retries.attempts", "0 to 10"},
		{`{retries: {attempts: 1, on: [teapot]}}`, "spec.retries.on[0]", "5xx"},
		{`{retries: {attempts: 1, budget: {ratio: -1, minPerSecond: 1}}}`, "spec.retries.budget", "ratio"},
		{`{circuitBreaker: {maxConnections: -1}}`, "spec.circuitBreaker.maxConnections", "from 0"},
		{`{outlierDetection: {}}`, "spec.outlierDetection", "consecutive5xx"},
		{`{outlierDetection: {consecutive5xx: 5, maxEjectedPercent: 101}}`, "spec.outlierDetection.maxEjectedPercent", "1 to 100"},
		{`{loadBalancer: {policy: random}}`, "spec.loadBalancer.policy", "peak-ewma"},
		{`{loadBalancer: {policy: consistent-hash}}`, "spec.loadBalancer.hashOn", "exactly one"},
		{`{loadBalancer: {hashOn: {header: x}}}`, "spec.loadBalancer.hashOn", "only with"},
		{`{connectionPool: {maxIdlePerEndpoint: -2}}`, "spec.connectionPool.maxIdlePerEndpoint", "from 0"},
	} {
		o := mk(tc.spec)
		if err := Validate(&o); err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want an error at %s mentioning %q", tc.spec, err, tc.field, tc.msg)
		}
	}
}
