// Package inject adds the Trellis sidecar to a pod template: the capture
// init step (trellis iptables apply, NET_ADMIN and NET_RAW only), the proxy
// as a native sidecar (an init container with restartPolicy Always and a
// startup probe on /ready, so app containers start after it is ready and
// Jobs still finish), the projected ServiceAccount token it authenticates
// with, the mesh CA bundle, and the pod's identity from the downward API.
// The mutating webhook and trellis inject -f both call Pod.
//
// Injection is idempotent: a pod injected before is injected again from
// scratch, so the result is the same. Annotations tune it per pod (see
// the Annotation* constants); a bad value is an error naming the
// annotation.
//
// It must not depend on the control plane, the store, the proxy or the
// data plane, and needs no API client.
package inject

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellismesh/trellis/internal/names"
)

// Annotations and labels that drive injection.
const (
	// LabelNamespaceInject on a namespace opts its pods in ("enabled").
	LabelNamespaceInject = "trellis.dev/inject"
	// AnnotationInject on a pod: "false" opts it out, "true" in.
	AnnotationInject = "trellis.dev/inject"
	// AnnotationStatus marks an injected pod with the injector's version.
	AnnotationStatus = "trellis.dev/injected"
	// AnnotationService names the pod's mesh service (default: label
	// app.kubernetes.io/name, else app, else the ServiceAccount).
	AnnotationService = "trellis.dev/service"
	// AnnotationAppPort is the port the app listens on (default: the
	// first containerPort); "none" makes a client-only proxy.
	AnnotationAppPort = "trellis.dev/app-port"
	// AnnotationProtocol is the app's protocol: http, http2, grpc, tcp.
	AnnotationProtocol = "trellis.dev/protocol"
	// AnnotationExcludeInboundPorts, AnnotationExcludeOutboundPorts and
	// AnnotationExcludeOutboundCIDRs are comma lists kept out of capture.
	AnnotationExcludeInboundPorts  = "trellis.dev/exclude-inbound-ports"
	AnnotationExcludeOutboundPorts = "trellis.dev/exclude-outbound-ports"
	AnnotationExcludeOutboundCIDRs = "trellis.dev/exclude-outbound-cidrs"
	// AnnotationInboundPort is the port the pod's proxy takes mTLS on
	// (default InboundPort): the injected proxy uses the default; a proxy
	// run another way (a test, a VM's pod) may say otherwise.
	AnnotationInboundPort = "trellis.dev/inbound-port"
	// Resources of the proxy container (Kubernetes quantities).
	AnnotationProxyCPURequest    = "trellis.dev/proxy-cpu-request"
	AnnotationProxyMemoryRequest = "trellis.dev/proxy-memory-request"
	AnnotationProxyCPULimit      = "trellis.dev/proxy-cpu-limit"
	AnnotationProxyMemoryLimit   = "trellis.dev/proxy-memory-limit"
)

// Names of what injection adds.
const (
	ProxyContainer = "trellis-proxy"
	InitContainer  = "trellis-init"
	TokenVolume    = "trellis-token"
	CAVolume       = "trellis-ca"
	TokenPath      = "/var/run/secrets/trellis"
	CAPath         = "/etc/trellis/ca"
	// ProxyUID runs the proxy; the capture rules let its sockets through.
	ProxyUID = 1337
	// Ports of the proxy in the pod (15000-15099 are never captured).
	InboundPort = 15006
	HealthPort  = 15021
	// TokenExpiry of the projected token: the kubelet renews it.
	TokenExpiry = 3600
)

// Config is what every injected pod shares.
type Config struct {
	// Image of the proxy (and the capture step).
	Image string
	// ControlAddr is the control plane's gRPC address, e.g.
	// trellis-control.trellis-system.svc:15012.
	ControlAddr string
	// CAConfigMap holds the mesh CA bundle under key ca.crt.
	CAConfigMap string
	// Audience of the projected token the control plane reviews.
	Audience string
	// TrustDomain of the mesh (the proxy's --trust-domain); empty means
	// the proxy's default.
	TrustDomain string
	// Version marks injected pods (AnnotationStatus).
	Version string
}

// Pod injects the sidecar into a pod template in place. It returns false
// when the pod opts out. An error names the annotation or field at fault
// and leaves the pod unchanged.
func Pod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, cfg Config) (bool, error) {
	switch v := meta.Annotations[AnnotationInject]; v {
	case "false":
		return false, nil
	case "", "true":
	default:
		return false, fmt.Errorf("annotation %s: %q is not true or false", AnnotationInject, v)
	}
	s, err := settingsOf(meta, spec)
	if err != nil {
		return false, err
	}
	removeInjected(spec)
	spec.InitContainers = append([]corev1.Container{initContainer(cfg, s), proxyContainer(cfg, s)}, spec.InitContainers...)
	spec.Volumes = append(spec.Volumes, volumes(cfg)...)
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[AnnotationStatus] = cfg.Version
	return true, nil
}

// settings are one pod's choices, from its annotations and spec.
type settings struct {
	service, protocol, sa       string
	appPort                     int
	inPorts, outPorts, outCIDRs []string
	res                         corev1.ResourceRequirements
}

func settingsOf(meta *metav1.ObjectMeta, spec *corev1.PodSpec) (settings, error) {
	a := meta.Annotations
	s := settings{sa: spec.ServiceAccountName}
	if s.sa == "" {
		s.sa = "default"
	}
	s.service = firstOf(a[AnnotationService], meta.Labels["app.kubernetes.io/name"], meta.Labels["app"])
	if s.service == "" && s.sa != "default" {
		s.service = s.sa
	}
	if s.service == "" {
		return s, fmt.Errorf("no service name: set annotation %s (or label app.kubernetes.io/name or app, or a ServiceAccount other than default)", AnnotationService)
	}
	if !names.IsDNSLabel(s.service) {
		return s, fmt.Errorf("service name %q (annotation %s, or the pod's labels): %s", s.service, AnnotationService, names.DNSLabelRule)
	}
	s.protocol = firstOf(a[AnnotationProtocol], "http")
	if !slices.Contains([]string{"http", "http2", "grpc", "tcp"}, s.protocol) {
		return s, fmt.Errorf("annotation %s: %q is not http, http2, grpc or tcp", AnnotationProtocol, s.protocol)
	}
	switch v := a[AnnotationAppPort]; v {
	case "none":
	case "":
		for _, c := range spec.Containers {
			if len(c.Ports) > 0 {
				s.appPort = int(c.Ports[0].ContainerPort)
				break
			}
		}
	default:
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil || p == 0 {
			return s, fmt.Errorf("annotation %s: %q is not a port number from 1 to 65535 or none", AnnotationAppPort, v)
		}
		s.appPort = int(p)
	}
	var err error
	if s.inPorts, err = portList(a, AnnotationExcludeInboundPorts); err != nil {
		return s, err
	}
	if s.outPorts, err = portList(a, AnnotationExcludeOutboundPorts); err != nil {
		return s, err
	}
	for _, c := range splitList(a[AnnotationExcludeOutboundCIDRs]) {
		if _, err := netip.ParsePrefix(c); err != nil {
			if _, err := netip.ParseAddr(c); err != nil {
				return s, fmt.Errorf("annotation %s: %q is not a CIDR or an address", AnnotationExcludeOutboundCIDRs, c)
			}
		}
		s.outCIDRs = append(s.outCIDRs, c)
	}
	s.res = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("40Mi")},
	}
	for _, q := range []struct {
		ann  string
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		{AnnotationProxyCPURequest, &s.res.Requests, corev1.ResourceCPU},
		{AnnotationProxyMemoryRequest, &s.res.Requests, corev1.ResourceMemory},
		{AnnotationProxyCPULimit, &s.res.Limits, corev1.ResourceCPU},
		{AnnotationProxyMemoryLimit, &s.res.Limits, corev1.ResourceMemory},
	} {
		v, ok := a[q.ann]
		if !ok {
			continue
		}
		qty, err := resource.ParseQuantity(v)
		if err != nil {
			return s, fmt.Errorf("annotation %s: %q is not a Kubernetes quantity (such as 100m or 64Mi)", q.ann, v)
		}
		if *q.list == nil {
			*q.list = corev1.ResourceList{}
		}
		(*q.list)[q.name] = qty
	}
	return s, nil
}

func initContainer(cfg Config, s settings) corev1.Container {
	args := []string{"iptables", "apply", "--proxy-uid", strconv.Itoa(ProxyUID), "--inbound-port", strconv.Itoa(InboundPort)}
	if len(s.inPorts) > 0 {
		args = append(args, "--exclude-inbound-ports", strings.Join(s.inPorts, ","))
	}
	if len(s.outPorts) > 0 {
		args = append(args, "--exclude-outbound-ports", strings.Join(s.outPorts, ","))
	}
	if len(s.outCIDRs) > 0 {
		args = append(args, "--exclude-outbound-cidrs", strings.Join(s.outCIDRs, ","))
	}
	return corev1.Container{
		Name:  InitContainer,
		Image: cfg.Image,
		Args:  args,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
		},
	}
}

func proxyContainer(cfg Config, s settings) corev1.Container {
	args := []string{
		"proxy",
		"--service", s.service,
		"--namespace", "$(POD_NAMESPACE)",
		"--service-account", s.sa,
		"--protocol", s.protocol,
		"--control", cfg.ControlAddr,
		"--token-file", TokenPath + "/token",
		"--ca-file", CAPath + "/ca.crt",
		"--inbound-addr", "0.0.0.0:" + strconv.Itoa(InboundPort),
		"--advertise-addr", "$(POD_IP):" + strconv.Itoa(InboundPort),
		"--health-addr", "0.0.0.0:" + strconv.Itoa(HealthPort),
		"--transparent", "--skip-iptables",
	}
	if s.appPort != 0 {
		args = append(args, "--app-addr", "127.0.0.1:"+strconv.Itoa(s.appPort))
	}
	if cfg.TrustDomain != "" {
		args = append(args, "--trust-domain", cfg.TrustDomain)
	}
	always := corev1.ContainerRestartPolicyAlways
	probe := func(path string, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(HealthPort)}},
			PeriodSeconds:    1,
			FailureThreshold: failures,
		}
	}
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	return corev1.Container{
		Name:          ProxyContainer,
		Image:         cfg.Image,
		Args:          args,
		RestartPolicy: &always,
		Env: []corev1.EnvVar{
			field("POD_NAME", "metadata.name"),
			field("POD_NAMESPACE", "metadata.namespace"),
			field("POD_IP", "status.podIP"),
		},
		Ports: []corev1.ContainerPort{
			{Name: "trellis-mtls", ContainerPort: InboundPort, Protocol: corev1.ProtocolTCP},
			{Name: "trellis-health", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP},
		},
		StartupProbe:   probe("/ready", 120),
		ReadinessProbe: probe("/ready", 3),
		LivenessProbe:  probe("/live", 10),
		Resources:      s.res,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(int64(ProxyUID)),
			RunAsGroup:               ptr(int64(ProxyUID)),
			RunAsNonRoot:             ptr(true),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: TokenVolume, MountPath: TokenPath, ReadOnly: true},
			{Name: CAVolume, MountPath: CAPath, ReadOnly: true},
		},
	}
}

func volumes(cfg Config) []corev1.Volume {
	aud := cfg.Audience
	if aud == "" {
		aud = "trellis"
	}
	return []corev1.Volume{
		{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: aud, ExpirationSeconds: ptr(int64(TokenExpiry)), Path: "token",
			}}},
		}}},
		{Name: CAVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cfg.CAConfigMap},
		}}},
	}
}

// removeInjected takes out what an earlier injection added.
func removeInjected(spec *corev1.PodSpec) {
	spec.InitContainers = slices.DeleteFunc(spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == ProxyContainer || c.Name == InitContainer
	})
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == TokenVolume || v.Name == CAVolume
	})
}

func portList(a map[string]string, ann string) ([]string, error) {
	var out []string
	for _, p := range splitList(a[ann]) {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("annotation %s: %q is not a port number from 1 to 65535", ann, p)
		}
		out = append(out, p)
	}
	return out, nil
}

func splitList(v string) []string {
	var out []string
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }
