package resource

import "testing"

func TestSecuritySetting(t *testing.T) {
	for _, tt := range []struct {
		kind, field, value string
		want               string
		wantOK             bool
	}{
		{KindMesh, "spec.mtls.mode", MTLSPermissive, "proxies also accept plain text, with no caller identity", true},
		{KindMesh, "spec.authorization.default", AuthorizationAllow, "a workload no ALLOW policy selects accepts every call", true},
		{KindMesh, "spec.outbound.mode", OutboundBlock, "transparent proxies refuse captured non-mesh traffic", true},
		{KindMesh, "spec.http.pathNormalization", PathNormalizationDecodeSlashes, "proxies turn slashes and backslashes, raw or encoded, into '/'", true},
		{KindMesh, "spec.http.allowedUpgrades", "[websocket, foo]", "the protocols a request may switch to; after the switch the bytes are not authorized again", true},
		{KindMesh, "spec.mtls.mode", "", "", true},
		{KindMesh, "spec.certificates.workloadTTL", "1h", "", false},
		{KindMesh, "spec.authorization.hidePolicy", "true", "", false},
		{KindAuthorizationPolicy, "spec.action", ActionDeny, "", false},
	} {
		got, ok := SecuritySetting(tt.kind, tt.field, tt.value)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("SecuritySetting(%s, %s, %q): got %q, %v; want %q, %v", tt.kind, tt.field, tt.value, got, ok, tt.want, tt.wantOK)
		}
	}
}
