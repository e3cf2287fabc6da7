package resource

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/names"
)

// External authorization defaults and bounds (Mesh
// spec.extensionProviders[].envoyExtAuthzGrpc.timeout).
const (
	DefaultExtAuthzTimeout = 200 * time.Millisecond
	MinExtAuthzTimeout     = time.Millisecond
	MaxExtAuthzTimeout     = time.Minute
)

// ExtensionProvider is a named service the mesh calls out to, as in
// Istio's MeshConfig.extensionProviders. AuthorizationPolicies with
// action CUSTOM name one in spec.provider.name.
type ExtensionProvider struct {
	Name string `json:"name"`
	// EnvoyExtAuthzGrpc is an external authorization service speaking
	// Envoy's ext_authz gRPC API (envoy.service.auth.v3.Authorization).
	EnvoyExtAuthzGrpc *EnvoyExtAuthzGrpc `json:"envoyExtAuthzGrpc,omitempty"`
	// Opentelemetry is an OpenTelemetry collector receiving spans over
	// OTLP/gRPC (Mesh spec.tracing.provider names it; docs/tracing.md).
	Opentelemetry *OpenTelemetryProvider `json:"opentelemetry,omitempty"`
}

// OpenTelemetryProvider says where proxies export their spans: an OTLP
// gRPC receiver (such as a Jaeger's or an OpenTelemetry Collector's),
// dialed in plaintext.
type OpenTelemetryProvider struct {
	// Service is the host (a DNS name or an IP address); Port its OTLP
	// gRPC port (commonly 4317).
	Service string `json:"service"`
	Port    int    `json:"port"`
}

// EnvoyExtAuthzGrpc says where an ext_authz gRPC service is and which
// headers travel to and from it.
type EnvoyExtAuthzGrpc struct {
	// Service is the host (a DNS name or an IP address) proxies dial,
	// over plaintext gRPC; Port its port.
	Service string `json:"service"`
	Port    int    `json:"port"`
	// Timeout bounds each Check (DefaultExtAuthzTimeout when zero).
	Timeout Duration `json:"timeout,omitzero"`
	// FailOpen admits requests when the service cannot answer (down,
	// timeout, an error status); by default they are denied.
	FailOpen bool `json:"failOpen,omitempty"`
	// IncludeRequestHeadersInCheck are the request headers sent in the
	// CheckRequest besides method, path and host; empty sends none.
	IncludeRequestHeadersInCheck []string `json:"includeRequestHeadersInCheck,omitempty"`
	// HeadersToUpstreamOnAllow are the headers of an OK answer that are
	// set on the request the app receives; others are ignored.
	HeadersToUpstreamOnAllow []string `json:"headersToUpstreamOnAllow,omitempty"`
	// HeadersToDownstreamOnDeny are the headers of a denied answer that
	// reach the caller; others are ignored.
	HeadersToDownstreamOnDeny []string `json:"headersToDownstreamOnDeny,omitempty"`
}

// checkExtensionProviders checks Mesh spec.extensionProviders: unique
// names, one provider kind each, a dialable host and port, a timeout in
// range, header names that are HTTP tokens (lowered, as sent).
func checkExtensionProviders(errs *errorList, ps []ExtensionProvider) {
	seen := map[string]bool{}
	for i := range ps {
		p := &ps[i]
		f := fmt.Sprintf("spec.extensionProviders[%d]", i)
		switch {
		case p.Name == "":
			errs.add(f+".name", "required: name the provider; policies refer to it in spec.provider.name")
		case !names.IsDNSSubdomain(p.Name):
			errs.add(f+".name", "%s %s", quote(p.Name), names.DNSSubdomainRule)
		case seen[p.Name]:
			errs.add(f+".name", "%s is the name of an earlier provider; names must be unique", quote(p.Name))
		}
		seen[p.Name] = true
		if p.EnvoyExtAuthzGrpc != nil && p.Opentelemetry != nil {
			errs.add(f, "a provider is of one kind: write envoyExtAuthzGrpc or opentelemetry, not both")
			continue
		}
		if o := p.Opentelemetry; o != nil {
			checkHostPort(errs, f+".opentelemetry", o.Service, o.Port)
			continue
		}
		g := p.EnvoyExtAuthzGrpc
		if g == nil {
			errs.add(f+".envoyExtAuthzGrpc", "required: a provider is envoyExtAuthzGrpc (an Envoy ext_authz gRPC service) or opentelemetry (an OTLP/gRPC span collector)")
			continue
		}
		f += ".envoyExtAuthzGrpc"
		checkHostPort(errs, f, g.Service, g.Port)
		if g.Timeout.Duration == 0 {
			g.Timeout.Duration = DefaultExtAuthzTimeout
		}
		if t := g.Timeout.Duration; t < MinExtAuthzTimeout || t > MaxExtAuthzTimeout {
			errs.add(f+".timeout", "must be from 1ms to 1m, got %s", formatDuration(t))
		}
		checkHeaderNames(errs, f+".includeRequestHeadersInCheck", g.IncludeRequestHeadersInCheck)
		checkHeaderNames(errs, f+".headersToUpstreamOnAllow", g.HeadersToUpstreamOnAllow)
		checkHeaderNames(errs, f+".headersToDownstreamOnDeny", g.HeadersToDownstreamOnDeny)
	}
}

// checkHostPort checks a provider's service (host) and port.
func checkHostPort(errs *errorList, f, host string, port int) {
	if _, err := netip.ParseAddr(host); err != nil && !names.IsDNSSubdomain(strings.ToLower(host)) {
		errs.add(f+".service", "%s is not a host name or IP address (write the host alone; the port goes in port)", quote(host))
	}
	if port < 1 || port > 65535 {
		errs.add(f+".port", "must be from 1 to 65535, got %d", port)
	}
}

// checkHeaderNames checks a list of header names and lowers them.
func checkHeaderNames(errs *errorList, field string, hs []string) {
	for i, h := range hs {
		if !names.IsHTTPToken(h) {
			errs.add(fmt.Sprintf("%s[%d]", field, i), "%s is not a header name (letters, digits and !#$%%&'*+-.^_`|~)", quote(h))
			continue
		}
		hs[i] = strings.ToLower(h)
	}
}
