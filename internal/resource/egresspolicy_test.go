package resource

import (
	"strings"
	"testing"
)

func TestEgressPolicyValidation(t *testing.T) {
	mk := func(spec string) Object {
		objs, err := Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: payments-psp, namespace: shop}\nspec: "+spec+"\n"), "egress.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return objs[0]
	}
	ok := mk(`{selector: {service: payments}, principals: ["spiffe://trellis.local/ns/shop/*"], hosts: [{name: API.psp.example, ports: [443]}, {name: "*.s3.example"}, {name: "*"}, {name: 203.0.113.7}, {name: "2001:db8::1"}]}`)
	if err := Validate(&ok); err != nil {
		t.Fatal(err)
	}
	spec, _ := EgressPolicySpecOf(&ok)
	if got, want := spec.Hosts[0].Name, "api.psp.example"; got != want {
		t.Errorf("name stored as %q, want %q (lower case)", got, want)
	}
	for _, tc := range []struct{ spec, field, msg string }{
		{`{}`, "spec.hosts", "required"},
		{`{hosts: []}`, "spec.hosts", "required"},
		{`{hosts: [{ports: [443]}]}`, "spec.hosts[0].name", "required"},
		{`{hosts: [{name: "a.*.example"}]}`, "spec.hosts[0].name", "'*' may only start"},
		{`{hosts: [{name: "*example.com"}]}`, "spec.hosts[0].name", "as a whole label"},
		{`{hosts: [{name: "api.example."}]}`, "spec.hosts[0].name", "trailing dot"},
		{`{hosts: [{name: "a_b.example"}]}`, "spec.hosts[0].name", "not a DNS name"},
		{`{hosts: [{name: "fe80::1%eth0"}]}`, "spec.hosts[0].name", "zone"},
		{`{hosts: [{name: ok.example, ports: [0]}]}`, "spec.hosts[0].ports[0]", "from 1 to 65535"},
		{`{hosts: [{name: ok.example, ports: [70000]}]}`, "spec.hosts[0].ports[0]", "from 1 to 65535"},
		{`{hosts: [{name: ok.example, ports: ["443"]}]}`, "spec.hosts[0].ports[0]", ""},
		{`{principals: ["frontend"], hosts: [{name: ok.example}]}`, "spec.principals[0]", "SPIFFE ID"},
		{`{selector: {service: Pay}, hosts: [{name: ok.example}]}`, "spec.selector.service", ""},
		{`{hosts: [{name: ok.example, port: 443}]}`, "spec.hosts[0].port", ""},
	} {
		o := mk(tc.spec)
		if err := Validate(&o); err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want an error at %s mentioning %q", tc.spec, err, tc.field, tc.msg)
		}
	}
}
