package resource

// securitySetting is a field whose value decides what the mesh lets
// through: what it is about, and what each value of an enum means.
type securitySetting struct {
	about  string
	values map[string]string
}

// securitySettings are each kind's security settings. Tools warn when an
// apply changes one, as a change that comes from a field left out of a file
// (its default applies) is easy to miss.
var securitySettings = map[string]map[string]securitySetting{
	KindMesh: {
		"spec.mtls.mode": {values: map[string]string{
			MTLSStrict:     "proxies accept only mutual TLS",
			MTLSPermissive: "proxies also accept plain text, with no caller identity",
		}},
		"spec.authorization.default": {values: map[string]string{
			AuthorizationDeny:  "a call no ALLOW policy covers is denied",
			AuthorizationAllow: "a workload no ALLOW policy selects accepts every call",
		}},
		"spec.outbound.mode": {values: map[string]string{
			OutboundPassthrough: "transparent proxies let captured non-mesh traffic out to its destination",
			OutboundBlock:       "transparent proxies refuse captured non-mesh traffic",
		}},
		"spec.http.pathNormalization": {values: map[string]string{
			PathNormalizationStrict:        "proxies refuse paths an app might route differently from the policy that matched them",
			PathNormalizationDecodeSlashes: "proxies turn slashes and backslashes, raw or encoded, into '/'",
		}},
		"spec.http.allowedUpgrades": {about: "the protocols a request may switch to; after the switch the bytes are not authorized again"},
		"spec.http.stripHeaders":    {about: "the caller-supplied headers proxies remove before an app can trust them"},
	},
}

// SecuritySetting reports whether field (a path such as "spec.mtls.mode")
// of kind is a security setting and, if so, what its new value means in a
// few words ("" when there is nothing to say).
func SecuritySetting(kind, field, value string) (meaning string, ok bool) {
	s, ok := securitySettings[kind][field]
	if m, known := s.values[value]; known {
		return m, ok
	}
	return s.about, ok
}
