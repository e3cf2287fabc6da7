package resource

// securitySettings are the fields of each kind whose value decides what the
// mesh lets through, with what each value means. Tools warn when an apply
// changes one, as a change that comes from a field left out of a file (its
// default applies) is easy to miss.
var securitySettings = map[string]map[string]map[string]string{
	KindMesh: {
		"spec.mtls.mode": {
			MTLSStrict:     "proxies accept only mutual TLS",
			MTLSPermissive: "proxies also accept plain text, with no caller identity",
		},
		"spec.authorization.default": {
			AuthorizationDeny:  "a call no ALLOW policy covers is denied",
			AuthorizationAllow: "a workload no ALLOW policy selects accepts every call",
		},
		"spec.outbound.mode": {
			OutboundPassthrough: "transparent proxies let captured non-mesh traffic out to its destination",
			OutboundBlock:       "transparent proxies refuse captured non-mesh traffic",
		},
	},
}

// SecuritySetting reports whether field (a path such as "spec.mtls.mode")
// of kind is a security setting and, if so, what value means, in a few words
// ("" for a value it does not know).
func SecuritySetting(kind, field, value string) (meaning string, ok bool) {
	values, ok := securitySettings[kind][field]
	return values[value], ok
}
