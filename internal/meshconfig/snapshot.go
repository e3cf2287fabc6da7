// Package meshconfig is a proxy's compiled configuration: the Snapshot a
// pushed config compiles into (services, endpoints, virtual IPs, policies
// compiled for the policy engine, the mesh's HTTP screen settings), the
// same for every part of the proxy that reads it (the data plane, mesh
// DNS, the admin endpoint). It must not depend on the proxy, the control
// plane or the CA.
package meshconfig

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/egress"
	"github.com/trellismesh/trellis/internal/jwtauthn"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// Application protocols.
const (
	ProtocolHTTP  = "http"
	ProtocolHTTP2 = "http2"
	ProtocolGRPC  = "grpc"
	ProtocolTCP   = "tcp"
)

// Outbound modes (MeshConfig.outbound_mode, the Mesh's spec.outbound.mode).
const (
	OutboundPassthrough = "passthrough"
	OutboundBlock       = "block"
)

// outboundModeOf checks MeshConfig.outbound_mode; empty means passthrough.
func outboundModeOf(mode string) (string, error) {
	switch mode {
	case "":
		return OutboundPassthrough, nil
	case OutboundPassthrough, OutboundBlock:
		return mode, nil
	}
	return "", fmt.Errorf("mesh outbound mode %q is not passthrough or block", mode)
}

// IsHTTP reports whether the protocol is carried as HTTP between proxies.
func IsHTTP(protocol string) bool { return protocol != ProtocolTCP }

// Snapshot is one compiled configuration version. It is immutable once
// built: the data path reads it concurrently without locks.
type Snapshot struct {
	Version string
	Hash    string
	// MTLSMode is STRICT or PERMISSIVE.
	MTLSMode string
	// AuthzDefault is deny or allow.
	AuthzDefault string
	// HidePolicy keeps the denying policy's name out of 403 answers.
	HidePolicy bool
	// CollectorAddr is where telemetry goes (MeshConfig.collector_address),
	// an external collector; empty means the control plane.
	CollectorAddr string

	// OutboundMode is what a transparent proxy does with captured
	// connections to no mesh service: OutboundPassthrough or
	// OutboundBlock.
	OutboundMode string

	// PathMode is how the inbound treats ambiguous request paths
	// (Mesh spec.http.pathNormalization; the zero value is strict).
	PathMode policy.PathMode
	// AllowedUpgrades are the protocols an HTTP/1.1 Upgrade may switch
	// to, lower case; nil means DefaultAllowedUpgrades.
	AllowedUpgrades []string
	// StripHeaders are the caller-supplied headers the inbound removes
	// (Mesh spec.http.stripHeaders); nil means DefaultStripHeaders.
	StripHeaders []string
	strip        *HeaderStrip

	// TrustBundle holds the roots peers are verified with.
	TrustBundle *x509.CertPool
	// Roots are the same roots, for reporting.
	Roots []*x509.Certificate
	// Issuer is the hex SHA-256 of the CA certificate that issues
	// workload certificates now ("" when the control plane does not say);
	// a certificate from another one is renewed at once.
	Issuer string
	// Services by "name.namespace".
	Services map[string]*Service
	// Policies select this proxy's workload (input for the policy engine).
	Policies []resource.Object
	// Engine decides inbound requests: Policies compiled with the mesh
	// default.
	Engine *policy.Engine
	// Authn verifies end users' tokens (the JWTAuthentications that
	// select the workload); nil when none do.
	Authn *jwtauthn.Authenticator
	// RateLimits are the RateLimits that select the workload; a request
	// passes when every one has a token for it.
	RateLimits []RateLimit
	// Gateway routes an ingress gateway's requests (GatewayRoutes); nil
	// for sidecars.
	Gateway *GatewayTable
	// ExtAuthz are the Mesh's external authorization providers by name
	// (nil without any); CUSTOM policies name them.
	ExtAuthz map[string]*ExtAuthzProvider
	// Tracing is where spans go and the root sampling rate; nil: no
	// spans (docs/tracing.md).
	Tracing *Tracing
	// Egress are the EgressPolicies that select the workload: when not
	// empty, a captured connection to no mesh service passes only to a
	// host they allow (docs/egress.md); nil when none do, and OutboundMode
	// decides.
	Egress *egress.Rules
	// ServiceOf maps a caller's SPIFFE ID to its service when the ID
	// serves exactly one service (for policies' `services` condition).
	ServiceOf map[string]string
	// VIPs are the services' virtual IPs by "name.namespace" (mesh DNS);
	// a service without one is absent.
	VIPs map[string]netip.Addr
	// ServiceByVIP is the reverse of VIPs: the "name.namespace" a
	// connection captured to a virtual IP is for.
	ServiceByVIP map[netip.Addr]string
	// VIPRanges are where virtual IPs come from: a captured connection to
	// an address in them that ServiceByVIP lacks is for a service to ask
	// the control plane for, not passthrough.
	VIPRanges []netip.Prefix
	// Routes are the Routes of the services this proxy calls, by the
	// addressed service's key; nil without any.
	Routes map[string]*Route
}

// InVIPRange reports whether ip lies in a virtual IP range.
func (s *Snapshot) InVIPRange(ip netip.Addr) bool {
	for _, p := range s.VIPRanges {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Service is a mesh service this proxy may call.
type Service struct {
	Name      string
	Namespace string
	Protocol  string
	Endpoints []Endpoint
	// IDs are the SPIFFE IDs allowed to serve the service (secure naming).
	IDs map[spiffeid.ID]bool
	// Traffic is how this proxy calls the service (its TrafficPolicy, or
	// its namespace's default); nil: the defaults.
	Traffic *TrafficPolicy
}

// Key is "name.namespace".
func (s *Service) Key() string { return s.Name + "." + s.Namespace }

// Endpoint is one instance of a service: the address of its proxy's inbound
// listener and the identity it must present.
type Endpoint struct {
	Addr   string
	ID     spiffeid.ID
	Labels map[string]string
}

// ServiceKey builds the map key of Snapshot.Services.
func ServiceKey(name, namespace string) string { return name + "." + namespace }

// Compile turns a pushed snapshot into an immutable Snapshot, or explains
// why it cannot be applied (the proxy then NACKs and keeps its last good
// one).
func Compile(s *pb.Snapshot) (*Snapshot, error) {
	if s.GetVersion() == "" {
		return nil, fmt.Errorf("compile snapshot: empty version")
	}
	out := &Snapshot{
		Version:       s.GetVersion(),
		Hash:          s.GetHash(),
		MTLSMode:      s.GetMesh().GetMtlsMode(),
		AuthzDefault:  s.GetMesh().GetAuthorizationDefault(),
		HidePolicy:    s.GetMesh().GetHidePolicy(),
		CollectorAddr: s.GetMesh().GetCollectorAddress(),
		TrustBundle:   x509.NewCertPool(),
		Issuer:        s.GetIssuer(),
		Services:      make(map[string]*Service, len(s.GetServices())),
	}
	switch out.MTLSMode {
	case "STRICT", "PERMISSIVE":
	default:
		return nil, fmt.Errorf("compile snapshot %s: mesh mtls mode %q is not STRICT or PERMISSIVE", s.GetVersion(), out.MTLSMode)
	}
	switch out.AuthzDefault {
	case "deny", "allow":
	default:
		return nil, fmt.Errorf("compile snapshot %s: mesh authorization default %q is not deny or allow", s.GetVersion(), out.AuthzDefault)
	}
	// Transparent mode's outbound policy (transparent.go).
	mode, err := outboundModeOf(s.GetMesh().GetOutboundMode())
	if err != nil {
		return nil, fmt.Errorf("compile snapshot %s: %w", s.GetVersion(), err)
	}
	out.OutboundMode = mode
	pm, ok := policy.ParsePathMode(s.GetMesh().GetPathNormalization())
	if !ok {
		return nil, fmt.Errorf("compile snapshot %s: mesh path normalization %q is not strict or decodeSlashes", s.GetVersion(), s.GetMesh().GetPathNormalization())
	}
	out.PathMode = pm
	if ups := s.GetMesh().GetAllowedUpgrades(); len(ups) > 0 {
		out.AllowedUpgrades = ups
	}
	if hs := s.GetMesh().GetStripHeaders(); len(hs) > 0 {
		out.StripHeaders = hs
		out.strip = NewHeaderStrip(hs)
	}

	if b, err := hex.DecodeString(out.Issuer); err != nil || (out.Issuer != "" && len(b) != sha256.Size) {
		return nil, fmt.Errorf("compile snapshot %s: issuer %q is not a hex SHA-256", s.GetVersion(), out.Issuer)
	}
	if len(s.GetTrustBundle()) == 0 {
		return nil, fmt.Errorf("compile snapshot %s: empty trust bundle", s.GetVersion())
	}
	for i, der := range s.GetTrustBundle() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("compile snapshot %s: trust_bundle[%d]: %w", s.GetVersion(), i, err)
		}
		out.TrustBundle.AddCert(c)
		out.Roots = append(out.Roots, c)
	}
	for i, svc := range s.GetServices() {
		if svc.GetName() == "" || svc.GetNamespace() == "" {
			return nil, fmt.Errorf("compile snapshot %s: services[%d]: empty name or namespace", s.GetVersion(), i)
		}
		cs := &Service{Name: svc.GetName(), Namespace: svc.GetNamespace(), Protocol: svc.GetProtocol(), IDs: map[spiffeid.ID]bool{}}
		if cs.Protocol == "" {
			cs.Protocol = ProtocolHTTP
		}
		for j, ep := range svc.GetEndpoints() {
			id, err := spiffeid.FromString(ep.GetSpiffeId())
			if err != nil {
				return nil, fmt.Errorf("compile snapshot %s: services[%d].endpoints[%d]: %w", s.GetVersion(), i, j, err)
			}
			cs.Endpoints = append(cs.Endpoints, Endpoint{Addr: ep.GetAddress(), ID: id, Labels: ep.GetLabels()})
			cs.IDs[id] = true
		}
		sort.Slice(cs.Endpoints, func(a, b int) bool { return cs.Endpoints[a].Addr < cs.Endpoints[b].Addr })
		out.Services[cs.Key()] = cs
	}
	if err := compileVIPs(out, s); err != nil {
		return nil, err
	}
	if err := compileTraffic(out, s.GetTrafficPolicies()); err != nil {
		return nil, fmt.Errorf("compile snapshot %s: %w", s.GetVersion(), err)
	}
	if err := compileRoutes(out, s.GetRoutes()); err != nil {
		return nil, fmt.Errorf("compile snapshot %s: %w", s.GetVersion(), err)
	}
	for i, r := range s.GetMesh().GetVirtualIpRanges() {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			return nil, fmt.Errorf("compile snapshot %s: mesh.virtual_ip_ranges[%d] %q: not a CIDR prefix", s.GetVersion(), i, r)
		}
		out.VIPRanges = append(out.VIPRanges, p.Masked())
	}
	for i, raw := range s.GetPolicies() {
		var o resource.Object
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("compile snapshot %s: policies[%d]: %w", s.GetVersion(), i, err)
		}
		if err := resource.Validate(&o); err != nil {
			return nil, fmt.Errorf("compile snapshot %s: policies[%d]: %w", s.GetVersion(), i, err)
		}
		out.Policies = append(out.Policies, o)
	}
	engine, err := policy.Compile(out.Policies, policy.Options{DefaultAllow: out.AuthzDefault == "allow"})
	if err != nil {
		return nil, fmt.Errorf("compile snapshot %s: %w", s.GetVersion(), err)
	}
	out.Engine = engine
	if out.Authn, err = compileJWT(s.GetJwtAuthentications()); err != nil {
		return nil, fmt.Errorf("compile snapshot %s: %w", s.GetVersion(), err)
	}
	if out.RateLimits, err = compileRateLimits(s.GetRateLimits()); err != nil {
		return nil, fmt.Errorf("compile snapshot %s: %w", s.GetVersion(), err)
	}
	if out.Gateway, err = compileGatewayRoutes(s.GetGatewayRoutes()); err != nil {
		return nil, fmt.Errorf("compile snapshot %s: %w", s.GetVersion(), err)
	}
	if out.Egress, err = compileEgress(s.GetEgressPolicies()); err != nil {
		return nil, fmt.Errorf("compile snapshot %s: %w", s.GetVersion(), err)
	}
	if out.ExtAuthz, err = compileExtAuthz(s.GetMesh().GetExtAuthzProviders()); err != nil {
		return nil, fmt.Errorf("compile snapshot %s: %w", s.GetVersion(), err)
	}
	if out.Tracing, err = compileTracing(s.GetMesh().GetTracing()); err != nil {
		return nil, fmt.Errorf("compile snapshot %s: %w", s.GetVersion(), err)
	}
	// Headers only the proxy may set: forwarded claims, and what
	// external authorization providers set on allowed requests (the app
	// must not take a caller's value for the provider's).
	if set := append(out.Authn.ClaimHeaders(), extAuthzUpstreamHeaders(out.ExtAuthz)...); len(set) > 0 {
		out.StripHeaders = withClaimHeaders(out.StripHeaders, set)
		out.strip = NewHeaderStrip(out.StripHeaders)
	}
	out.ServiceOf = map[string]string{}
	ambiguous := map[string]bool{}
	claim := func(k, svc string) {
		if prev, seen := out.ServiceOf[k]; seen && prev != svc {
			ambiguous[k] = true
		}
		out.ServiceOf[k] = svc
	}
	for _, svc := range out.Services {
		for id := range svc.IDs {
			claim(id.String(), svc.Name)
		}
	}
	// Client-only proxies are no endpoints, but their callers still
	// belong to their service.
	for _, svc := range s.GetServices() {
		for _, id := range svc.GetClientIds() {
			claim(id, svc.GetName())
		}
	}
	// Callers outside the scope that the policies name.
	for _, p := range s.GetPeers() {
		claim(p.GetSpiffeId(), p.GetService())
	}
	for k := range ambiguous {
		delete(out.ServiceOf, k)
	}
	return out, nil
}

// HeaderStrip is the compiled StripHeaders (built here for snapshots not
// made by Compile, such as tests'); nil means the default list.
func (s *Snapshot) HeaderStrip() *HeaderStrip {
	if s.strip == nil && len(s.StripHeaders) > 0 {
		return NewHeaderStrip(s.StripHeaders)
	}
	return s.strip
}

// compileVIPs fills out.VIPs and out.ServiceByVIP. A malformed address, or
// one claimed by two services, rejects the snapshot: routing by it would
// send connections to the wrong service.
func compileVIPs(out *Snapshot, s *pb.Snapshot) error {
	out.VIPs, out.ServiceByVIP = map[string]netip.Addr{}, map[netip.Addr]string{}
	for i, svc := range s.GetServices() {
		if svc.GetVirtualIp() == "" {
			continue
		}
		ip, err := netip.ParseAddr(svc.GetVirtualIp())
		if err != nil || ip.Zone() != "" {
			return fmt.Errorf("compile snapshot %s: services[%d].virtual_ip %q: not an IP address", s.GetVersion(), i, svc.GetVirtualIp())
		}
		ip = ip.Unmap()
		key := ServiceKey(svc.GetName(), svc.GetNamespace())
		if other, dup := out.ServiceByVIP[ip]; dup && other != key {
			return fmt.Errorf("compile snapshot %s: virtual IP %s belongs to both %s and %s", s.GetVersion(), ip, other, key)
		}
		out.VIPs[key], out.ServiceByVIP[ip] = ip, key
	}
	return nil
}
