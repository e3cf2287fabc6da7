package resource

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/names"
)

// Mesh settings. The defaults are the zero-trust ones: mutual TLS required
// and every call denied unless a policy allows it.
const (
	MTLSStrict     = "STRICT"     // proxies accept only mutual TLS
	MTLSPermissive = "PERMISSIVE" // proxies also accept plain text, for onboarding

	AuthorizationDeny  = "deny"  // a call no ALLOW policy covers is denied
	AuthorizationAllow = "allow" // a workload no ALLOW policy selects accepts every call

	OutboundPassthrough = "passthrough" // transparent proxies connect captured non-mesh traffic to its destination
	OutboundBlock       = "block"       // transparent proxies refuse captured non-mesh traffic

	DefaultWorkloadTTL = 24 * time.Hour
	MinWorkloadTTL     = 5 * time.Minute
	MaxWorkloadTTL     = 30 * 24 * time.Hour
)

// MeshSpec is the spec of the Mesh resource, of which there is one, named
// "default".
type MeshSpec struct {
	MTLS          MeshMTLS          `json:"mtls"`
	Authorization MeshAuthorization `json:"authorization"`
	Certificates  MeshCertificates  `json:"certificates"`
	Outbound      MeshOutbound      `json:"outbound"`
	HTTP          MeshHTTP          `json:"http"`
	// ExtensionProviders are the external services policies with action
	// CUSTOM call (docs/policy.md, "External authorization").
	ExtensionProviders []ExtensionProvider `json:"extensionProviders,omitempty"`
	// Tracing turns on spans at every proxy, exported to an opentelemetry
	// extension provider (docs/tracing.md); nil: no spans.
	Tracing *MeshTracing `json:"tracing,omitempty"`
	// Anomaly holds the thresholds of the collector's anomaly detectors
	// (docs/learning.md); a zero field means its default.
	Anomaly MeshAnomaly `json:"anomaly,omitzero"`
}

// DefaultSamplingPercentage is the share of root requests traced when
// spec.tracing leaves randomSamplingPercentage out (Istio's default).
const DefaultSamplingPercentage = 1.0

// MeshTracing says where spans go and how many requests are traced, with
// the names of Istio's Telemetry API.
type MeshTracing struct {
	// Provider names an opentelemetry provider of spec.extensionProviders.
	Provider string `json:"provider"`
	// RandomSamplingPercentage is the percentage (0 to 100) of requests
	// without a sampling decision (no trace context from the caller) that
	// are traced; a caller's decision is always followed. Nil means
	// DefaultSamplingPercentage.
	RandomSamplingPercentage *float64 `json:"randomSamplingPercentage,omitempty"`
}

// MeshAnomaly holds the anomaly detectors' thresholds. Zero means the
// default given with each field.
type MeshAnomaly struct {
	// LearningWindow: new edges and paths are baseline until this long
	// after the first traffic (default 24h).
	LearningWindow Duration `json:"learningWindow,omitzero"`
	// Cooldown ends an alert's episode once its condition is absent this
	// long (default 30m).
	Cooldown Duration `json:"cooldown,omitzero"`
	// RolloutGrace: paths first seen this soon after a rollout of either
	// side are the rollout's (default 30m).
	RolloutGrace Duration `json:"rolloutGrace,omitzero"`
	// DenyBurstZ and DenyBurstMin: a caller's denials in one interval
	// alert at this robust z-score and count (defaults 6 and 10).
	DenyBurstZ   int `json:"denyBurstZ,omitempty"`
	DenyBurstMin int `json:"denyBurstMin,omitempty"`
	// ErrorRatioPercent: an edge's 5xx share alerts above this (default
	// 20), and above 4 times its usual share.
	ErrorRatioPercent int `json:"errorRatioPercent,omitempty"`
	// LatencyFactor: an edge's p99 alerts at this multiple of its usual
	// (default 4).
	LatencyFactor int `json:"latencyFactor,omitempty"`
	// VolumeZ and VolumeFactor: an edge's requests in one interval alert
	// at this robust z-score and multiple of its usual (defaults 8 and
	// 4).
	VolumeZ      int `json:"volumeZ,omitempty"`
	VolumeFactor int `json:"volumeFactor,omitempty"`
	// RisePercent: an edge's last hour alerts at this percentage of the
	// same time of day on previous days (default 180).
	RisePercent int `json:"risePercent,omitempty"`
	// FanOut and FanOutPaths: one caller reaching this many services, or
	// path shapes, it never called before within FanOutWindow is a scan
	// (defaults 3, 8 and 10m).
	FanOut       int      `json:"fanOut,omitempty"`
	FanOutPaths  int      `json:"fanOutPaths,omitempty"`
	FanOutWindow Duration `json:"fanOutWindow,omitzero"`
}

// Path modes of MeshHTTP.PathNormalization (see policy.PathMode).
const (
	PathNormalizationStrict        = "strict"
	PathNormalizationDecodeSlashes = "decodeSlashes"
)

// MeshHTTP holds how inbound proxies screen HTTP requests before
// authorization.
type MeshHTTP struct {
	// PathNormalization: PathNormalizationStrict (default) refuses paths
	// an app might route differently from the policy that matched them
	// (backslashes, encoded slashes, double encoding, ';' on dot
	// segments); PathNormalizationDecodeSlashes turns slashes and
	// backslashes, raw or encoded, into '/' instead.
	PathNormalization string `json:"pathNormalization,omitempty"`
	// AllowedUpgrades are the protocols an HTTP/1.1 Upgrade may switch
	// to; empty means [websocket]. h2c is never allowed.
	AllowedUpgrades []string `json:"allowedUpgrades,omitempty"`
	// StripHeaders are caller-supplied header names inbound proxies
	// remove before authorization ("prefix*" patterns, any case, '_' read
	// as '-'); empty means the default list (x-spiffe-id, x-trellis-*,
	// x-envoy-peer-metadata, x-envoy-peer-metadata-id, x-client-cert,
	// x-ssl-client-cert). X-Forwarded-Client-Cert is always replaced.
	StripHeaders []string `json:"stripHeaders,omitempty"`
}

// MeshMTLS says whether proxies require mutual TLS.
type MeshMTLS struct {
	Mode string `json:"mode,omitempty"` // MTLSStrict (default) or MTLSPermissive
}

// MeshAuthorization holds the mesh-wide authorization default.
type MeshAuthorization struct {
	// Default decides calls to a workload that no ALLOW policy selects:
	// AuthorizationDeny (default) or AuthorizationAllow.
	Default string `json:"default,omitempty"`
	// HidePolicy keeps the name of the denying policy out of 403 answers
	// (the x-trellis-denied-by header); it is always in metrics and logs.
	HidePolicy bool `json:"hidePolicy,omitempty"`
}

// MeshCertificates holds workload certificate settings.
type MeshCertificates struct {
	// WorkloadTTL is the lifetime of workload certificates,
	// DefaultWorkloadTTL by default, from MinWorkloadTTL to MaxWorkloadTTL.
	WorkloadTTL Duration `json:"workloadTTL,omitempty"`
}

// MeshOutbound says what transparent proxies do with captured outbound
// connections to a destination that is no mesh service.
type MeshOutbound struct {
	Mode string `json:"mode,omitempty"` // OutboundPassthrough (default) or OutboundBlock
}

// DefaultMesh returns the Mesh a mesh has when nobody wrote one: named
// "default", every setting at its default.
func DefaultMesh() Object {
	var errs errorList
	spec, err := json.Marshal(meshSpec(&errs, nil))
	if err != nil {
		panic("resource: marshaling the default mesh: " + err.Error())
	}
	return Object{
		APIVersion: APIVersion,
		Kind:       KindMesh,
		Metadata:   Metadata{Name: "default"},
		Spec:       spec,
	}
}

// MeshSpecOf decodes, defaults and checks the spec of a Mesh. It does not
// check the envelope (see Validate) and does not change o.
func MeshSpecOf(o *Object) (MeshSpec, error) {
	if o.Kind != KindMesh {
		return MeshSpec{}, fmt.Errorf("resource.MeshSpecOf: %s is not a %s", o.Ref(), KindMesh)
	}
	var errs errorList
	spec := meshSpec(&errs, o.Spec)
	if err := errs.err(o.Source, o.Ref()); err != nil {
		return MeshSpec{}, err
	}
	return spec, nil
}

func meshSpec(errs *errorList, raw json.RawMessage) MeshSpec {
	var s MeshSpec
	decodeSpec(errs, raw, &s)
	if s.MTLS.Mode == "" {
		s.MTLS.Mode = MTLSStrict
	}
	if s.Authorization.Default == "" {
		s.Authorization.Default = AuthorizationDeny
	}
	if s.Outbound.Mode == "" {
		s.Outbound.Mode = OutboundPassthrough
	}
	if s.Certificates.WorkloadTTL.Duration == 0 {
		s.Certificates.WorkloadTTL.Duration = DefaultWorkloadTTL
	}
	if s.HTTP.PathNormalization == "" {
		s.HTTP.PathNormalization = PathNormalizationStrict
	}

	canonicalEnum(errs, "spec.mtls.mode", &s.MTLS.Mode, MTLSStrict, MTLSPermissive)
	canonicalEnum(errs, "spec.authorization.default", &s.Authorization.Default, AuthorizationDeny, AuthorizationAllow)
	canonicalEnum(errs, "spec.outbound.mode", &s.Outbound.Mode, OutboundPassthrough, OutboundBlock)
	canonicalEnum(errs, "spec.http.pathNormalization", &s.HTTP.PathNormalization, PathNormalizationStrict, PathNormalizationDecodeSlashes)
	for i, u := range s.HTTP.AllowedUpgrades {
		f := fmt.Sprintf("spec.http.allowedUpgrades[%d]", i)
		switch {
		case !names.IsHTTPToken(u):
			errs.add(f, "%s is not a protocol name (an HTTP token such as websocket)", quote(u))
		case strings.EqualFold(u, "h2c"):
			errs.add(f, "h2c cannot be allowed: the mesh speaks HTTP/2 to apps by prior knowledge (service protocol http2 or grpc)")
		default:
			s.HTTP.AllowedUpgrades[i] = strings.ToLower(u)
		}
	}
	for i, h := range s.HTTP.StripHeaders {
		f := fmt.Sprintf("spec.http.stripHeaders[%d]", i)
		name := strings.TrimSuffix(h, "*")
		switch {
		case name == "" || !names.IsHTTPToken(name):
			errs.add(f, "%s is not a header name or a \"prefix*\" pattern", quote(h))
		case strings.EqualFold(name, "host") || strings.EqualFold(name, "content-length") || strings.EqualFold(name, "transfer-encoding"):
			errs.add(f, "%s cannot be stripped: it frames the request", quote(h))
		default:
			s.HTTP.StripHeaders[i] = strings.ToLower(h)
		}
	}
	checkExtensionProviders(errs, s.ExtensionProviders)
	checkTracing(errs, s.Tracing, s.ExtensionProviders)
	checkAnomaly(errs, &s.Anomaly)
	if ttl := s.Certificates.WorkloadTTL.Duration; ttl < MinWorkloadTTL || ttl > MaxWorkloadTTL {
		errs.add("spec.certificates.workloadTTL", "must be from %s to %s (30 days), got %s",
			formatDuration(MinWorkloadTTL), formatDuration(MaxWorkloadTTL), formatDuration(ttl))
	}
	return s
}

// checkTracing checks spec.tracing: a provider that is an opentelemetry
// one, a percentage from 0 to 100 (defaulted).
func checkTracing(errs *errorList, t *MeshTracing, ps []ExtensionProvider) {
	if t == nil {
		return
	}
	if t.RandomSamplingPercentage == nil {
		p := DefaultSamplingPercentage
		t.RandomSamplingPercentage = &p
	}
	if p := *t.RandomSamplingPercentage; !(p >= 0 && p <= 100) {
		errs.add("spec.tracing.randomSamplingPercentage", "must be from 0 to 100, got %v", p)
	}
	i := slices.IndexFunc(ps, func(p ExtensionProvider) bool { return p.Name == t.Provider })
	switch {
	case t.Provider == "":
		errs.add("spec.tracing.provider", "required: name an opentelemetry provider of spec.extensionProviders")
	case i < 0:
		errs.add("spec.tracing.provider", "%s is not in spec.extensionProviders: add it there with opentelemetry: {service, port}", quote(t.Provider))
	case ps[i].Opentelemetry == nil:
		errs.add("spec.tracing.provider", "%s is not an opentelemetry provider (spec.extensionProviders[%d])", quote(t.Provider), i)
	}
}

// canonicalEnum accepts *v if it is one of allowed in any case and rewrites
// it to the allowed spelling, the one stored and printed. Each enum keeps the
// case it has always been printed in (ALLOW, STRICT, enforce, deny), so files
// and scripts written for that spelling keep working; consumers compare with
// the constants and never see another case.
func canonicalEnum(errs *errorList, field string, v *string, allowed ...string) {
	for _, a := range allowed {
		if strings.EqualFold(*v, a) {
			*v = a
			return
		}
	}
	errs.add(field, "must be one of %s (in any case), got %s", strings.Join(allowed, ", "), quote(*v))
}

// checkAnomaly checks the detectors' thresholds: durations from 1s to
// 30 days, counts and factors from 1 (percentages from 1 to 100 for the
// error ratio, above 100 for the rise).
func checkAnomaly(errs *errorList, a *MeshAnomaly) {
	for _, d := range []struct {
		field string
		v     Duration
	}{{"learningWindow", a.LearningWindow}, {"cooldown", a.Cooldown}, {"rolloutGrace", a.RolloutGrace}, {"fanOutWindow", a.FanOutWindow}} {
		if d.v.Duration != 0 && (d.v.Duration < time.Second || d.v.Duration > 30*24*time.Hour) {
			errs.add("spec.anomaly."+d.field, "must be from 1s to 720h (30 days), got %s", formatDuration(d.v.Duration))
		}
	}
	for _, n := range []struct {
		field    string
		v        int
		min, max int
		what     string
	}{
		{"denyBurstZ", a.DenyBurstZ, 1, 1000, "a robust z-score such as 6"},
		{"denyBurstMin", a.DenyBurstMin, 1, 1 << 30, "a count of denials such as 10"},
		{"errorRatioPercent", a.ErrorRatioPercent, 1, 100, "a percentage such as 20"},
		{"latencyFactor", a.LatencyFactor, 2, 1000, "a factor such as 4"},
		{"volumeZ", a.VolumeZ, 1, 1000, "a robust z-score such as 8"},
		{"volumeFactor", a.VolumeFactor, 2, 1000, "a factor such as 4"},
		{"risePercent", a.RisePercent, 101, 100000, "a percentage above 100 such as 180"},
		{"fanOut", a.FanOut, 1, 1 << 20, "a count of services such as 3"},
		{"fanOutPaths", a.FanOutPaths, 1, 1 << 20, "a count of path shapes such as 8"},
	} {
		if n.v != 0 && (n.v < n.min || n.v > n.max) {
			errs.add("spec.anomaly."+n.field, "must be %s, from %d to %d; got %d (0 or absent for the default)", n.what, n.min, n.max, n.v)
		}
	}
}
